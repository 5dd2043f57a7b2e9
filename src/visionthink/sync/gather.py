"""The policy's full weights in Hugging Face naming, whatever shards or wraps it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch.distributed.fsdp import FullyShardedDataParallel

from visionthink.models.lora import peft_model


def full_parameters(policy: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) pairs: FSDP (full state dict), DeepSpeed ZeRO-3 (gathered
    parameters), PEFT LoRA (merged into the base weights), or a plain module."""
    lora = peft_model(policy)
    if lora is not None:
        with whole_weights(policy):
            yield from merged_lora_parameters(lora)
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


def full_state_dict(policy: Any) -> dict[str, torch.Tensor]:
    """The full weights as CPU copies that outlive the gather (FSDP frees the weights it summoned
    when the gather ends, and every view of them with it)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in full_parameters(policy)}


def whole_weights(policy: Any):
    """Under FSDP, a context in which every rank holds the full weights, dropped after
    (``writeback=False``: what is done to them never reaches the shards); elsewhere nothing."""
    if isinstance(policy, FullyShardedDataParallel):
        return FullyShardedDataParallel.summon_full_params(policy, writeback=False)
    return nullcontext()


def merged_lora_parameters(lora: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The base weights of a PEFT model (whole, see ``whole_weights``) with its adapters merged in."""
    lora.merge_adapter()
    try:
        # Parameters, not state_dict(): FSDP's state-dict hooks gather again inside summon_full_params
        # (remove_duplicate=False keeps tied weights under each of their names, as a state dict does)
        for name, tensor in lora.get_base_model().named_parameters(remove_duplicate=False):
            if "lora_" not in name:
                # A merged weight is copied: the unmerge below restores it in place
                merged = ".base_layer" in name
                yield (
                    unwrapped_name(name).replace(".base_layer", ""),
                    tensor.detach().clone() if merged else tensor.detach(),
                )
    finally:
        lora.unmerge_adapter()


def adapter_parameters(policy: Any) -> dict[str, torch.Tensor]:
    """The adapters of a LoRA policy, whole, in PEFT's naming (every rank calls this under FSDP)."""
    lora = peft_model(policy)
    with whole_weights(policy):
        return {unwrapped_name(n): p.detach().clone() for n, p in lora.named_parameters() if "lora_" in n}


def unwrapped_name(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "")
