"""What Lightning's strategies need from the GRPO update, and the sharded ones from the model."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel

from visionthink.grpo.update import Hooks


class TransformerBlocks:
    """FSDP's units of sharding: one per block the model's transformers class keeps whole on one
    device (its ``_no_split_modules``: the decoder layers and the vision blocks), so the FSDP
    config names no model class. FSDP visits modules parents first, so a model announces its block
    names before its blocks are met."""

    def __init__(self) -> None:
        self.block_names: set[str] = set()

    def __call__(self, module: nn.Module) -> bool:
        self.block_names.update(getattr(module, "_no_split_modules", None) or ())
        return type(module).__name__ in self.block_names


def strategy_hooks(module: L.LightningModule) -> Hooks:
    """How the GRPO update runs backward passes, clips gradients and starts passes under the
    module's strategy: Lightning's backward and clipping know the precision plugin and the
    strategy; FSDP and DeepSpeed need what follows."""

    def clip_gradients(optimizer: Any, max_norm: float) -> None:
        if isinstance(module.policy, FullyShardedDataParallel):
            # Lightning's FSDP precision plugin refuses norm clipping; FSDP's own takes the norm over all shards.
            module.policy.clip_grad_norm_(max_norm)
            return
        module.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")

    def start_pass(last_of_step: bool) -> None:
        strategy = module.trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy):
            # At its gradient accumulation of 1, DeepSpeed takes every pass for a whole step (its
            # update then differs from the sum of the passes, measured): they are one accumulation.
            engine = strategy.deepspeed_engine
            engine.set_gradient_accumulation_boundary(last_of_step)
            # What the engine's forward does first (ZeRO counts the passes there); the passes
            # run the policy, not the engine wrapping the whole LightningModule
            if hasattr(engine.optimizer, "clear_backward_seen_flag"):
                engine.optimizer.clear_backward_seen_flag()

    return Hooks(backward=module.manual_backward, clip_gradients=clip_gradients, start_pass=start_pass)


def prepare_lora_strategy(strategy: Any) -> None:
    """LoRA under the run's strategy: FSDP shards frozen weights and trainable adapters in one
    unit only with its original parameters kept (``use_orig_params``); DeepSpeed's checkpoints
    leave the frozen base weights out. (ZeRO-3 is refused before: config_checks.py.)"""
    from lightning.pytorch.strategies import FSDPStrategy

    if isinstance(strategy, DeepSpeedStrategy):
        strategy.exclude_frozen_parameters = True
    if isinstance(strategy, FSDPStrategy):
        strategy.kwargs["use_orig_params"] = True
