"""A Qwen2.5-VL processor for images only.

transformers 5.x type-checks the ``video_processor`` argument of ``Qwen2_5_VLProcessor``
against a class that only exists when torchvision is installed, and there is no CPU
torchvision wheel. Dropping the argument from ``__init__`` removes the video processor
from the processor's attributes, so the class builds, saves and reloads without it.
"""

from __future__ import annotations

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )
