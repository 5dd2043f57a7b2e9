"""The Qwen3.5 family (``visionthink.models.family.ModelFamily``): natively multimodal, with Qwen3-VL's
processor (16 px patches, 32 px per visual token) and vision tower without DeepStack, and a language
model that mixes Gated DeltaNet layers with attention layers (three of four layers linear in the
released models). A Gated DeltaNet layer carries a recurrent state and a convolution state over the
whole sequence instead of a KV cache: its state cannot be cut back to a shorter prefix, and padding
inside a sequence (where a continuation starts after a shorter cached prompt) would pass through its
decay and convolution. So the fast paths that continue from a cache (turn-2 reuse, the group's shared
prefill, the training pass over a shared prompt) are off for this family (``RECURRENT_LAYERS``):
every rollout and every trajectory runs whole, padded at its start or end only (a padded position
enters the layer as zeros, which leave a zero state zero)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from visionthink.models import qwen, qwen3_vl
from visionthink.models.qwen import special_token_config, tiny_text_config

if TYPE_CHECKING:
    from visionthink.models.tiny import TinyModelSpec

# As Qwen3-VL: the tokens, the processor (Qwen3VLProcessor), padding, the rope call, the vision
# tower's prefix; the images as Qwen2.5-VL's (no DeepStack features)
special_token_ids = qwen3_vl.special_token_ids
load_processor = qwen3_vl.load_processor
tiny_processor = qwen3_vl.tiny_processor
pack_requests = qwen3_vl.pack_requests
rope_positions = qwen3_vl.rope_positions
is_vision_parameter = qwen3_vl.is_vision_parameter
image_inputs = qwen.image_inputs

# Gated DeltaNet layers: no forward continues from another sequence's cache (the module's docstring)
RECURRENT_LAYERS = True


def tiny_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    """A random Qwen3.5 of ``spec``'s sizes: its layers alternate Gated DeltaNet and attention
    (the last one attention), rotary embedding on a quarter of each head as released."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    rope = {
        "rope_type": "default",
        "rope_theta": 10_000_000.0,
        "partial_rotary_factor": 0.25,
        # half of the quarter of each head that is rotated
        "mrope_section": qwen3_vl.interleaved_mrope_section(spec.head_dim // 4 // 2),
        "mrope_interleaved": True,
    }
    text_config = tiny_text_config(spec, tokenizer, rope)
    text_config.update(
        layer_types=[
            "full_attention" if (spec.text_layers - i) % 2 == 1 else "linear_attention" for i in range(spec.text_layers)
        ],
        linear_conv_kernel_dim=4,
        # The released head size: vLLM's CPU kernel of the Gated DeltaNet takes no other
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_num_key_heads=spec.text_kv_heads,
        linear_num_value_heads=spec.text_heads,
    )
    vision_config = qwen3_vl.tiny_vision_tower(spec)
    config = Qwen3_5Config(text_config=text_config, vision_config=vision_config, **special_token_config(tokenizer))
    torch.manual_seed(spec.seed)
    return Qwen3_5ForConditionalGeneration(config)
