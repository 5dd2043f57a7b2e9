"""Image-only processors of the Qwen VL families.

transformers 5.x type-checks the ``video_processor`` argument of the Qwen VL processors against
a class that only exists when torchvision is installed, and there is no CPU torchvision wheel.
Dropping the argument from ``__init__`` removes the video processor from the processor's
attributes, so the class builds, saves and reloads without it.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor


class _WithoutVideoProcessor:
    """Put before a Qwen VL processor class: the attributes come from this ``__init__``."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(  # type: ignore[call-arg]
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


class ImageOnlyQwen2_5_VLProcessor(_WithoutVideoProcessor, Qwen2_5_VLProcessor):
    # What vLLM and AutoProcessor build the video half from (video_preprocessor_config.json)
    video_processor_type = "Qwen2VLVideoProcessor"
    # How the family grounds boxes (the zoom tool's default): Qwen2.5-VL in absolute pixels of the
    # image as resized. Qwen2-VL, which shares this processor, used 0-1000: its zoom tool needs
    # `coordinates: relative_1000` (conf/tool/zoom.yaml)
    box_coordinates = "pixels"


class ImageOnlyQwen3VLProcessor(_WithoutVideoProcessor, Qwen3VLProcessor):
    video_processor_type = "Qwen3VLVideoProcessor"
    # Qwen3-VL and Qwen3.5 ground boxes in 0-1000 of the image's width and height
    box_coordinates = "relative_1000"


# What the Qwen video processors share with the image processor (their classes need torchvision).
_VIDEO_KEYS = (
    "do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std",
    "merge_size", "patch_size", "temporal_patch_size", "resample", "rescale_factor", "size",
)  # fmt: skip


def write_video_processor_config(directory: str | Path, processor) -> None:
    """Write ``video_preprocessor_config.json``: vLLM and transformers' ``AutoProcessor`` build
    the full processor from a folder and refuse one without a video processor."""
    settings = processor.image_processor.to_dict()
    config = {"video_processor_type": processor.video_processor_type}
    config.update({key: settings[key] for key in _VIDEO_KEYS if key in settings})
    (Path(directory) / "video_preprocessor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
