"""Policy models: the loader of every model family (models/family.py) and the locally built tiny models."""

from visionthink.models.loading import ModelConfig, load_policy, load_policy_and_processor, load_processor
from visionthink.models.processor import ImageOnlyQwen2_5_VLProcessor, ImageOnlyQwen3VLProcessor
from visionthink.models.tiny import TinyModelSpec, ensure_tiny_checkpoint

__all__ = [
    "ImageOnlyQwen2_5_VLProcessor",
    "ImageOnlyQwen3VLProcessor",
    "ModelConfig",
    "TinyModelSpec",
    "ensure_tiny_checkpoint",
    "load_policy",
    "load_policy_and_processor",
    "load_processor",
]
