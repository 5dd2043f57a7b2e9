"""Group-relative advantages and the group filters applied before the loss."""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """``(r - mean_group) / (std_group + eps)``; ``scale=False`` keeps ``r - mean_group`` (Dr. GRPO).

    ``rewards`` is ordered group by group (G consecutive entries per prompt). The standard
    deviation is the unbiased one, as in veRL and TRL.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, group_size).float()
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


def zero_variance_groups(rewards: torch.Tensor, group_size: int, threshold: float = 1e-4) -> torch.Tensor:
    """Boolean per group: rewards all (nearly) equal, so the group carries no gradient."""
    grouped = rewards.view(-1, group_size).float()
    if group_size == 1:
        return torch.ones(grouped.shape[0], dtype=torch.bool)
    return grouped.std(dim=1) < threshold
