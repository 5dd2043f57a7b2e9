"""Start-up checks of the numeric settings of a training run, before any model or data loads.

Each rule names a config key and its allowed range; a value outside it (or not a number) stops
the run with one line naming the key, the value and the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from visionthink.errors import InputError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    integer: bool = False
    # Whether the low bound itself is allowed (lr > 0 vs steps >= 1)
    low_inclusive: bool = True
    optional: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"{kind} {'>=' if self.low_inclusive else '>'} {self.low}"
        return kind

    def admits(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        return self.high is None or value <= self.high


POSITIVE_INT = Range(low=1, integer=True)
FRACTION = Range(low=0.0, high=1.0)
NON_NEGATIVE = Range(low=0.0)
POSITIVE = Range(low=0.0, low_inclusive=False)

TRAINING_RULES: dict[str, Range] = {
    "data.batch_size": POSITIVE_INT,
    "data.val_batch_size": POSITIVE_INT,
    "data.num_workers": Range(low=0, integer=True, optional=True),
    # GRPO normalises rewards within a group: one rollout per prompt has no advantage.
    "rollout.group_size": Range(low=2, integer=True),
    "rollout.max_images": POSITIVE_INT,
    "rollout.max_turns": POSITIVE_INT,
    "rollout.sampling.temperature": POSITIVE,
    "rollout.sampling.top_p": Range(low=0.0, high=1.0, low_inclusive=False),
    "rollout.sampling.top_k": Range(low=0, integer=True),
    "rollout.sampling.max_new_tokens": POSITIVE_INT,
    "rollout.val_sampling.max_new_tokens": POSITIVE_INT,
    "reward.penalty_theta": FRACTION,
    "reward.accuracy_weight": NON_NEGATIVE,
    "reward.format_weight": NON_NEGATIVE,
    "reward.direct_penalty": NON_NEGATIVE,
    "reward.high_res_penalty": NON_NEGATIVE,
    "grpo.clip_low": FRACTION,
    "grpo.clip_high": NON_NEGATIVE,
    "grpo.beta": NON_NEGATIVE,
    "grpo.entropy_coef": NON_NEGATIVE,
    "grpo.ppo_epochs": POSITIVE_INT,
    "grpo.mini_batch_size": Range(low=1, integer=True, optional=True),
    "grpo.micro_batch_size": POSITIVE_INT,
    "grpo.max_grad_norm": POSITIVE,
    "grpo.max_generation_batches": POSITIVE_INT,
    "grpo.tis_cap": Range(low=1.0, optional=True),
    "optim.optimizer.lr": POSITIVE,
    "optim.vision_lr_scale": NON_NEGATIVE,
    "trainer.max_steps": Range(low=-1, integer=True),
    "seed": Range(low=0, integer=True),
}


def check_ranges(cfg: DictConfig, rules: dict[str, Range] = TRAINING_RULES) -> None:
    """Raise ``InputError`` for the first value outside its range (keys absent from ``cfg`` are skipped)."""
    for key, allowed in rules.items():
        node = OmegaConf.select(cfg, key, default=KeyError)
        if node is KeyError or (node is None and allowed.optional):
            continue
        if not allowed.admits(node):
            raise InputError(
                f"{key}={node!r} is not allowed", f"Use {allowed.describe()}" + (" or null" if allowed.optional else "")
            )


LOW_PRECISION = ("bfloat16", "float16")


def check_master_weights(cfg: DictConfig) -> None:
    """Refuse an optimizer that would update bf16/fp16 weights directly: at the paper's lr of
    1e-6 most of AdamW's updates round away in bf16 (measured on the tiny model: 2% of the
    weights change in one step). DeepSpeed keeps fp32 master weights of bf16 models itself."""
    strategy = OmegaConf.select(cfg, "trainer.strategy._target_", default="") or ""
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    dtype = OmegaConf.select(cfg, "model.dtype", default="float32")
    if "DeepSpeed" in strategy:
        return
    # LoRA trains fp32 adapters (PEFT upcasts them) beside the frozen low-precision base
    if dtype in LOW_PRECISION and not OmegaConf.select(cfg, "model.lora.rank", default=0):
        raise InputError(
            f"model.dtype={dtype} would make the optimizer update {dtype} weights directly (no fp32 master copy)",
            "Load the policy in float32 (model.dtype=float32) and compute in bf16 with trainer.precision=bf16-mixed, "
            "use a DeepSpeed trainer, which keeps fp32 master weights, or train LoRA adapters (model.lora.rank)",
        )
    if precision.endswith("-true") and not precision.startswith("32") and not precision.startswith("64"):
        raise InputError(
            f"trainer.precision={precision} casts the weights themselves to low precision (no fp32 master copy)",
            "Use trainer.precision=bf16-mixed (fp32 weights, bf16 compute)",
        )


def check_sharded_rollouts(cfg: DictConfig) -> None:
    """Refuse transformers rollouts on a sharded policy: over several ranks (FSDP, ZeRO-3) every
    decoded token is a forward pass that gathers weights from all ranks, and ranks decode different
    numbers of tokens and turns, so they would wait for each other forever; and FSDP's wrapper is
    only entered through its forward, which generation bypasses."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None)
    if strategy is None or OmegaConf.select(cfg, "rollout.backend", default=None) != "transformers":
        return
    target = str(strategy.get("_target_", ""))
    devices = cfg.trainer.get("devices", 1)  # "auto" or a list of ids: possibly several
    single = isinstance(devices, int) and devices * int(cfg.trainer.get("num_nodes", 1)) == 1
    if "FSDP" in target or ("DeepSpeed" in target and strategy.get("stage") == 3 and not single):
        raise InputError(
            f"rollout.backend=transformers cannot generate with a sharded policy ({target})",
            "Use rollout=vllm (the vLLM engine holds its own copy of the weights), or trainer=ddp / deepspeed_zero2",
        )


def check_lora_strategy(cfg: DictConfig) -> None:
    """Refuse LoRA under ZeRO-3: it partitions the frozen base weights that every weight push
    merges the adapters into; the frozen weights need no optimizer state to shard anyway."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None)
    if not OmegaConf.select(cfg, "model.lora.rank", default=0) or strategy is None:
        return
    if "DeepSpeed" in str(strategy.get("_target_", "")) and strategy.get("stage") == 3:
        raise InputError(
            "model.lora: LoRA does not run under DeepSpeed ZeRO-3 (trainer=deepspeed_zero3)",
            "Use trainer=deepspeed_zero2, trainer=fsdp or trainer=ddp: the frozen base weights need no optimizer state",
        )
