"""The GRPO policy update: from scored rollouts to optimizer steps.

Group-relative advantages (paper Eq. 2), then PPO epochs x mini-batches of optimizer steps with
the clipped surrogate loss (Eq. 1), an optional KL to a frozen reference and, for rollouts from
another engine (vLLM), truncated importance sampling. No Lightning here: the trainer hands in
``Hooks`` for the backward pass and gradient clipping, which under Lightning go through the
precision plugin and the strategy.

Under DDP every backward pass is a collective, so all ranks run the same number of optimizer
steps and of backward passes per step (a rank with fewer groups pads with zero-loss passes), and
each step's loss is normalised by the tokens (or trajectories) of all ranks together, so the
gradient DDP averages equals the single-process one. A sharded model (FSDP, ZeRO-3) makes every
forward pass a collective too: its log-prob passes are padded the same way, and every padding
pass runs forward on a real trajectory (``padding``), through every block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from visionthink.collectives import max_across_ranks, sum_across_ranks, world_size
from visionthink.grpo.advantages import group_advantages
from visionthink.grpo.config import GRPOConfig
from visionthink.grpo.correction import rollout_correction
from visionthink.grpo.logprobs import pad_rows, token_logprobs, trajectory_logprobs
from visionthink.grpo.loss import aggregate_tokens, grpo_loss
from visionthink.metrics.distributed import Summed
from visionthink.models.lora import reference_model
from visionthink.models.sharding import is_sharded
from visionthink.rollout.trajectory import Trajectory, group_blocks


def clip_grad_norm(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def rows_like(values: list[torch.Tensor] | None, rows: list[int], like: torch.Tensor) -> torch.Tensor | None:
    """Per-token values of some trajectories, padded to the shape, dtype and device of ``like``."""
    return None if values is None else pad_rows([values[i] for i in rows], like.shape[1]).to(like)


@dataclass(frozen=True)
class Hooks:
    """How the trainer runs a backward pass and clips gradients."""

    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward
    clip_gradients: Callable[[torch.optim.Optimizer, float], None] = clip_grad_norm
    # Called before each pass's forward with whether it is the optimizer step's last pass
    # (DeepSpeed must be told, or it takes each pass for a whole step)
    start_pass: Callable[[bool], None] = lambda last_of_step: None


@dataclass(frozen=True)
class OptimizerStep:
    """One optimizer step, as every rank agrees on it."""

    # The trajectories this rank learns from in this step (indices into the batch)
    rows: list[int]
    # Micro-batch backward passes every rank makes in this step
    backward_passes: int
    # Tokens (token-mean) or trajectories (seq-mean) of this step on all ranks together
    normaliser: float


@dataclass(frozen=True)
class LossInputs:
    """The rollouts of one update and what the loss compares them against (advantages and log-probs)."""

    trajectories: list[Trajectory]
    advantages: torch.Tensor
    # Per trajectory, per generated token: the policy before this update (None: the current
    # policy, detached, for a single step), the reference, the vLLM importance weights.
    old_logprobs: list[torch.Tensor] | None
    reference_logprobs: list[torch.Tensor] | None
    importance_weights: list[torch.Tensor] | None
    # How far the rollout engine's log-probs are from the trainer's (vLLM rollouts only)
    mismatch: dict[str, float]


class GRPOUpdate:
    def __init__(
        self,
        config: GRPOConfig,
        group_size: int,
        temperature: float,
        pad_id: int,
        image_token_id: int,
        hooks: Hooks = Hooks(),
    ) -> None:
        self.config, self.group_size, self.temperature = config, group_size, temperature
        self.pad_id, self.image_token_id, self.hooks = pad_id, image_token_id, hooks

    def __call__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module | None,
        trajectories: list[Trajectory],
        rewards: torch.Tensor,
        optimizer: Any,
        scheduler: Any | None = None,
        padding: Trajectory | None = None,
    ) -> dict[str, float]:
        """Update ``policy`` from whole groups of trajectories (group after group) and their rewards.

        With nothing to learn from on any rank, one step without gradients keeps the step count
        (torch optimizers skip parameters without a gradient, weight decay included). ``padding``
        (default: the first trajectory) is what this rank's padding passes run forward on when it
        has fewer micro-batches than another rank."""
        padding = trajectories[0] if trajectories else padding
        num_groups = len(group_blocks(trajectories, self.group_size))
        steps = self.plan(trajectories, num_groups)
        if not steps:
            self._step(optimizer, scheduler, zero_grad=True)
            return {"train/updated_groups": Summed(0), "train/optimizer_steps": 0.0}
        batch = self.loss_inputs(policy, reference, trajectories, rewards, len(steps) > 1, padding)
        totals: dict[str, list[float]] = {}
        for step in steps:
            for name, value in self.optimizer_step(policy, batch, step, optimizer, scheduler, padding).items():
                totals.setdefault(name, []).append(value)
        # Each rank holds its part of the loss terms (a rank without rows holds none): they add up.
        metrics = {f"train/{name}": Summed(sum(values) / len(steps)) for name, values in totals.items()}
        metrics.update(batch.mismatch)
        if num_groups:
            metrics["train/advantage_abs"] = float(batch.advantages.abs().mean())
        metrics["train/updated_groups"] = Summed(num_groups)
        # Steps with gradients (the same on every rank); 0: the weights did not change
        metrics["train/optimizer_steps"] = float(len(steps))
        return metrics

    def plan(self, trajectories: list[Trajectory], num_groups: int) -> list[OptimizerStep]:
        """PPO epochs x mini-batches of groups, padded to the step and pass counts of every rank."""
        size, micro = self.group_size, self.config.micro_batch_size
        mini = self.config.mini_batch_size or max(num_groups, 1)
        rows = [
            list(range(start * size, min(start + mini, num_groups) * size))
            for _ in range(self.config.ppo_epochs)
            for start in range(0, num_groups, mini)
        ]
        counts = max_across_ranks([len(rows)] + [math.ceil(len(r) / micro) for r in rows])
        rows += [[] for _ in range(counts[0] - len(rows))]
        if self.config.aggregate == "token-mean":
            local = [float(sum(trajectories[i].generated_tokens for i in r)) for r in rows]
        else:
            local = [float(len(r)) for r in rows]
        normalisers = sum_across_ranks(local)
        return [OptimizerStep(r, passes, n) for r, passes, n in zip(rows, counts[1:], normalisers, strict=True)]

    def loss_inputs(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module | None,
        trajectories: list[Trajectory],
        rewards: torch.Tensor,
        multiple_steps: bool,
        padding: Trajectory | None = None,
    ) -> LossInputs:
        advantages = (
            group_advantages(rewards, self.group_size, scale=self.config.scale_advantages) if trajectories else rewards
        )
        old = reference_logprobs = weights = None
        mismatch: dict[str, float] = {}
        from_engine = bool(trajectories) and all(t.rollout_logprobs for t in trajectories)
        # Several steps move the policy away from the one that rolled out; a rollout engine's
        # log-probs are compared against the trainer's own.
        needs_old = multiple_steps or from_engine
        if is_sharded(policy):  # a rank without trajectories still joins the other ranks' passes
            needs_old = max_across_ranks([int(needs_old)])[0] > 0
        if needs_old:
            old = self._logprobs(policy, trajectories, padding)
        if from_engine:
            weights, mismatch = rollout_correction(trajectories, old, self.config.tis_cap)
        if reference is not None:
            with reference_model(policy, reference) as model:
                reference_logprobs = self._logprobs(model, trajectories, padding)
        return LossInputs(trajectories, advantages, old, reference_logprobs, weights, mismatch)

    def _logprobs(
        self, model: torch.nn.Module, trajectories: list[Trajectory], padding: Trajectory | None
    ) -> list[torch.Tensor]:
        micro = self.config.micro_batch_size
        passes = math.ceil(len(trajectories) / micro)
        # Agreed before any pass: the counts are exchanged by a collective too
        padding_passes = max_across_ranks([passes])[0] - passes if is_sharded(model) else 0
        logprobs = trajectory_logprobs(model, trajectories, self.pad_id, self.image_token_id, micro, self.temperature)
        for _ in range(padding_passes):
            trajectory_logprobs(model, [required(padding)], self.pad_id, self.image_token_id, 1, self.temperature)
        return logprobs

    def _padding_pass(self, policy: torch.nn.Module, padding: Trajectory | None) -> None:
        """A zero-loss backward pass, to join another rank's collectives: DDP's gradient
        all-reduce needs no forward pass, a sharded model's weight gathers do."""
        if padding is None and not is_sharded(policy):
            self.hooks.backward(sum(p.sum() for p in policy.parameters() if p.requires_grad) * 0.0)
            return
        logprobs, _ = token_logprobs(policy, [required(padding)], self.pad_id, self.image_token_id, self.temperature)
        self.hooks.backward(logprobs.sum() * 0.0)

    def optimizer_step(
        self,
        policy: torch.nn.Module,
        batch: LossInputs,
        step: OptimizerStep,
        optimizer: Any,
        scheduler: Any,
        padding: Trajectory | None = None,
    ) -> dict[str, float]:
        config, micro = self.config, self.config.micro_batch_size
        optimizer.zero_grad()
        chunks = [step.rows[start : start + micro] for start in range(0, len(step.rows), micro)]
        summed: dict[str, float] = {}
        for index, chunk in enumerate(chunks):
            self.hooks.start_pass(index == step.backward_passes - 1)
            logprobs, mask, entropy = token_logprobs(
                policy,
                [batch.trajectories[i] for i in chunk],
                self.pad_id,
                self.image_token_id,
                self.temperature,
                with_entropy=True,
                entropy_grad=config.entropy_coef > 0,
            )
            old = rows_like(batch.old_logprobs, chunk, logprobs)
            loss, parts = grpo_loss(
                logprobs,
                old if old is not None else logprobs.detach(),
                batch.advantages[chunk].to(logprobs.device),
                mask,
                ref_logprobs=rows_like(batch.reference_logprobs, chunk, logprobs),
                clip_low=config.clip_low,
                clip_high=config.clip_high,
                beta=config.beta,
                kl=config.kl_estimator,
                aggregate=config.aggregate,
                importance_weights=rows_like(batch.importance_weights, chunk, logprobs),
            )
            mean_entropy = aggregate_tokens(entropy, mask, config.aggregate)
            parts["entropy"] = mean_entropy.detach()
            if config.entropy_coef > 0:
                loss = loss - config.entropy_coef * mean_entropy
            # Each micro-batch's share of the step over all ranks (DDP and FSDP divide the summed
            # gradients by the number of ranks).
            share = float(mask.sum()) if config.aggregate == "token-mean" else float(len(chunk))
            weight = share / max(step.normaliser, 1.0)
            self.hooks.backward(loss * weight * world_size())
            for name, value in parts.items():  # this rank's part of the mean over all ranks
                summed[name] = summed.get(name, 0.0) + float(value) * weight
        for index in range(len(chunks), step.backward_passes):  # another rank has more micro-batches
            self.hooks.start_pass(index == step.backward_passes - 1)
            self._padding_pass(policy, padding)
        self.hooks.clip_gradients(optimizer, config.max_grad_norm)
        self._step(optimizer, scheduler)
        return summed

    @staticmethod
    def _step(optimizer: Any, scheduler: Any | None, zero_grad: bool = False) -> None:
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def required(padding: Trajectory | None) -> Trajectory:
    if padding is None:
        raise RuntimeError(
            "this rank has no trajectory to run the padding forward passes that a sharded model (FSDP, ZeRO-3) "
            "needs: every sample of its batch was skipped; check the data (system/data/skipped_samples)"
        )
    return padding
