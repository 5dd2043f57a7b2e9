"""Qwen2.5-VL's special tokens as the rollout engines use them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Tokens a policy must never generate: a generated placeholder would desynchronise image
# features and image tokens.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# Either ends a turn.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
IMAGE_PAD = "<|image_pad|>"


def token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """Ids of the tokens the tokenizer knows (a checkpoint may lack some)."""
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def is_vision_parameter(name: str) -> bool:
    """Parameters of the vision tower and its patch merger (``model.visual.*``, also under wrappers)."""
    return ".visual." in f".{name}"
