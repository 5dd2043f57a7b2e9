"""Rollout/trainer mismatch: the rollout engine (vLLM) and the trainer disagree slightly on
log-probs (kernels, precision, sampling truncation). This measures the gap and, optionally,
corrects for it with truncated importance sampling (as TRL and veRL offer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from visionthink.rollout.trajectory import Trajectory


def rollout_logprob_rows(trajectory: Trajectory) -> torch.Tensor:
    """The engine's log-probs placed on the trajectory's next-token positions (length L - 1)."""
    row = torch.zeros(len(trajectory.token_ids) - 1)
    positions = [i - 1 for i, m in enumerate(trajectory.loss_mask) if m]
    row[positions] = torch.tensor(trajectory.rollout_logprobs, dtype=row.dtype)
    return row


def rollout_correction(
    trajectories: Sequence[Trajectory], trainer_logprobs: Sequence[torch.Tensor], cap: float | None
) -> tuple[list[torch.Tensor] | None, dict[str, float]]:
    """Per-trajectory token weights ``min(exp(trainer - rollout), cap)`` (None without a cap) and
    the mismatch metrics over generated tokens."""
    weights, gaps, ratios = [], [], []
    for trajectory, trainer in zip(trajectories, trainer_logprobs, strict=True):
        rollout = rollout_logprob_rows(trajectory).to(trainer)
        mask = torch.tensor(trajectory.loss_mask[1:], dtype=torch.bool, device=trainer.device)
        ratio = torch.exp(trainer - rollout)
        gaps.append((trainer - rollout)[mask].abs())
        ratios.append(ratio[mask])
        if cap is not None:
            weights.append(torch.where(mask, ratio.clamp(max=cap), torch.ones_like(ratio)))
    gap, ratio = torch.cat(gaps), torch.cat(ratios)
    metrics = {
        "rollout/logprob_abs_diff": float(gap.mean()) if gap.numel() else 0.0,
        "rollout/importance_ratio": float(ratio.mean()) if ratio.numel() else 1.0,
    }
    if cap is not None:
        metrics["rollout/tis_clipped_fraction"] = float((ratio > cap).float().mean()) if ratio.numel() else 0.0
    return (weights if cap is not None else None), metrics
