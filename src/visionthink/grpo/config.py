"""Typed configuration of the GRPO update. Its defaults are the framework's: ``conf/grpo/default.yaml``
repeats them with comments, and a test keeps the two equal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GRPOConfig:
    # PPO clip range: the ratio is clipped to [1 - clip_low, 1 + clip_high].
    clip_low: float = 0.2
    clip_high: float = 0.2
    # KL coefficient to the frozen reference policy (the paper: 0.001); 0 loads no reference model.
    beta: float = 0.001
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    # Entropy bonus coefficient (the released script uses 0.001).
    entropy_coef: float = 0.0
    aggregate: Literal["token-mean", "seq-mean-token-mean"] = "token-mean"
    # False gives Dr. GRPO's unscaled advantages.
    scale_advantages: bool = True
    # Passes over each rollout batch, and prompts per optimizer step (None: the whole batch).
    ppo_epochs: int = 1
    mini_batch_size: int | None = None
    # Trajectories per forward pass; bounds activation memory.
    micro_batch_size: int = 8
    max_grad_norm: float = 1.0
    # Drop groups whose rewards are all equal (std below the threshold): they carry no policy
    # gradient. Off, as in TRL, so that every step updates; grpo=paper turns it on.
    drop_zero_variance_groups: bool = False
    zero_variance_threshold: float = 1e-4
    # DAPO dynamic sampling: keep rolling out new batches until `batch_size` informative groups
    # are collected, at most this many generation batches per update (1 = off).
    max_generation_batches: int = 1
    # Truncated importance sampling for rollouts from another engine (vLLM): each token's loss is
    # weighted by min(pi_trainer / pi_rollout, cap). null: off.
    tis_cap: float | None = None

    def __post_init__(self) -> None:
        if self.ppo_epochs < 1 or self.micro_batch_size < 1 or self.max_generation_batches < 1:
            raise ValueError("grpo.ppo_epochs, grpo.micro_batch_size and grpo.max_generation_batches must be >= 1")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise ValueError("grpo.mini_batch_size must be >= 1 or null")
