"""Agreement between ranks on how much work a step does.

Under DDP every backward pass is a collective (gradients are all-reduced), so all ranks must run
the same number of optimizer steps and backward passes, even when their rollouts leave them
different numbers of informative groups. These helpers find the common counts.
"""

from __future__ import annotations

import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def max_across_ranks(values: list[int]) -> list[int]:
    """Element-wise maximum of equally long integer lists from every rank."""
    if not _distributed():
        return list(values)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(values))
    width = max(len(v) for v in gathered)
    return [max((v[i] if i < len(v) else 0) for v in gathered) for i in range(width)]


def sum_across_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of equally long lists from every rank."""
    if not _distributed():
        return list(values)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(values))
    return [sum(column) for column in zip(*gathered, strict=True)]


def world_size() -> int:
    return dist.get_world_size() if _distributed() else 1


def all_ranks(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank."""
    return min(max_across_ranks([0 if flag else 1])) == 0 if _distributed() else flag
