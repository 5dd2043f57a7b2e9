"""The Qwen3-VL family (``visionthink.models.family.ModelFamily``). What differs from Qwen2.5-VL
(``qwen.py``, whose token handling and M-RoPE call it shares): 16 px patches (32 px per visual
token after the 2x2 merge, the resolution policy's unit), a learned position grid in the vision
tower, DeepStack (features of early vision layers added to the first language layers at the image
tokens, so a shared image carries them too), interleaved M-RoPE whose image positions advance by
the image's longer side only, and a processor whose video half needs timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from visionthink.models.qwen import (  # the same tokens, padding, vision tower prefix and rope call
    RECURRENT_LAYERS,
    encoded_image_inputs,
    is_vision_parameter,
    load_image_only_processor,
    pack_requests,
    rope_positions,
    special_token_config,
    special_token_ids,
    tiny_text_config,
    tiny_vision_config,
)

if TYPE_CHECKING:
    from visionthink.episode.builder import EncodedImage
    from visionthink.models.tiny import TinyModelSpec

__all__ = [
    "RECURRENT_LAYERS",
    "image_inputs",
    "is_vision_parameter",
    "load_processor",
    "pack_requests",
    "rope_positions",
    "special_token_ids",
    "tiny_model",
    "tiny_processor",
]

# Qwen3-VL's released image processor settings (preprocessor_config.json of Qwen/Qwen3-VL-8B-Instruct)
IMAGE_PROCESSOR_SETTINGS = {
    "patch_size": 16,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


def load_processor(path: str, pixel_bounds: dict[str, int] | None = None) -> Any:
    """The image-only processor of a checkpoint folder or hub id, as ``qwen.load_processor``."""
    from visionthink.models.processor import ImageOnlyQwen3VLProcessor

    return load_image_only_processor(ImageOnlyQwen3VLProcessor, path, pixel_bounds)


def image_inputs(model: Any, images: Sequence[EncodedImage], share: bool = True) -> dict[str, Any]:
    """As ``qwen.image_inputs``; a shared image's DeepStack features are shared with it."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    def repeat(features: Any, order: list[int]) -> BaseModelOutputWithDeepstackFeatures:
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(features.pooler_output[i] for i in order),
            deepstack_features=[tuple(layer[i] for i in order) for layer in features.deepstack_features],
        )

    return encoded_image_inputs(model, images, share, repeat)


def tiny_processor(tokenizer: Any, chat_template: str) -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from visionthink.models.processor import ImageOnlyQwen3VLProcessor

    return ImageOnlyQwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(**IMAGE_PROCESSOR_SETTINGS),
        tokenizer=tokenizer,
        chat_template=chat_template,
    )


def tiny_vision_tower(spec: TinyModelSpec, **family_settings: Any) -> dict[str, Any]:
    """The vision settings of a tiny model with Qwen3-VL's patch geometry."""
    return tiny_vision_config(
        spec,
        patch_size=IMAGE_PROCESSOR_SETTINGS["patch_size"],
        spatial_merge_size=IMAGE_PROCESSOR_SETTINGS["merge_size"],
        temporal_patch_size=IMAGE_PROCESSOR_SETTINGS["temporal_patch_size"],
        # A 16 x 16 learned grid, resampled to each image's (the released models: 48 x 48)
        num_position_embeddings=256,
        **family_settings,
    )


def interleaved_mrope_section(rotary_half: int) -> list[int]:
    """Split the rotated half of a head into (temporal, height, width) as Qwen3-VL's [24, 20, 20] of 64."""
    spatial = max(1, rotary_half * 20 // 64)
    return [rotary_half - 2 * spatial, spatial, spatial]


def tiny_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    """A random Qwen3-VL of ``spec``'s sizes, shaped like the released ones (DeepStack from the
    first vision layer, interleaved M-RoPE split like [24, 20, 20] of 64)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    rope = {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": interleaved_mrope_section(spec.head_dim // 2),
        "mrope_interleaved": True,
    }
    text_config = tiny_text_config(spec, tokenizer, rope)
    vision_config = tiny_vision_tower(spec, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **special_token_config(tokenizer))
    torch.manual_seed(spec.seed)
    model = Qwen3VLForConditionalGeneration(config)
    if spec.vision_position_std is not None:
        with torch.no_grad():
            model.model.visual.pos_embed.weight.normal_(0.0, spec.vision_position_std)
    return model
