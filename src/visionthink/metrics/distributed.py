"""Combining per-rank step metrics into one figure per metric (rank 0 logs them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist


class Summed(float):
    """A metric that adds up across ranks: a count (groups, samples, requests) or a throughput."""


class Slowest(float):
    """A metric for which the slowest rank speaks: a duration."""


def combine(per_rank: Sequence[tuple[dict[str, float], float]]) -> dict[str, float]:
    """``per_rank`` holds (metrics, weight) per rank; a metric missing on a rank is left out there.
    ``Summed`` and ``Slowest`` values say how they combine; any other value is a mean over
    trajectories, weighted by each rank's count."""
    names = sorted({name for metrics, _ in per_rank for name in metrics})
    combined = {}
    for name in names:
        present = [(metrics[name], weight) for metrics, weight in per_rank if name in metrics]
        if isinstance(present[0][0], Summed):
            combined[name] = float(sum(value for value, _ in present))
        elif isinstance(present[0][0], Slowest):
            combined[name] = float(max(value for value, _ in present))
        else:
            total = sum(weight for _, weight in present)
            combined[name] = sum(value * weight for value, weight in present) / total if total else present[0][0]
    return combined


def gather_metrics(metrics: dict[str, float], weight: float) -> dict[str, float]:
    """All ranks call this together; every rank gets the combined metrics."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    per_rank: list = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, (metrics, weight))
    return combine(per_rank)
