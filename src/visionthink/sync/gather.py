"""The policy's full weights in Hugging Face naming, whatever shards or wraps it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.fsdp import FullyShardedDataParallel


def full_parameters(policy: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) pairs: FSDP (full state dict), DeepSpeed ZeRO-3 (gathered
    parameters), PEFT LoRA (merged into the base weights), or a plain module."""
    if hasattr(policy, "merge_adapter"):  # PEFT: push base weights with the adapter merged in
        policy.merge_adapter()
        try:
            for name, tensor in policy.get_base_model().state_dict().items():
                if "lora_" not in name:
                    yield name.replace(".base_layer", ""), tensor
        finally:
            policy.unmerge_adapter()
        return
    parameters = list(policy.parameters())
    if any(hasattr(p, "ds_id") for p in parameters):  # DeepSpeed ZeRO-3
        import deepspeed

        with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
            yield from ((n, p.data) for n, p in policy.named_parameters())
        return
    if isinstance(policy, FullyShardedDataParallel) or any(type(p).__name__ == "DTensor" for p in parameters):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True))
        yield from state.items()
        return
    yield from policy.state_dict().items()
