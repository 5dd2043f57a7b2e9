"""Policy models: the Qwen2.5-VL loader and the locally built tiny Qwen2.5-VL."""

from visionthink.models.loading import ModelConfig, load_policy, load_policy_and_processor, load_processor
from visionthink.models.processor import ImageOnlyQwen2_5_VLProcessor
from visionthink.models.tiny import TinyModelSpec, ensure_tiny_checkpoint

__all__ = [
    "ImageOnlyQwen2_5_VLProcessor",
    "ModelConfig",
    "TinyModelSpec",
    "ensure_tiny_checkpoint",
    "load_policy",
    "load_policy_and_processor",
    "load_processor",
]
