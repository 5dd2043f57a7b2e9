"""Models whose weights are sharded over the ranks (FSDP, DeepSpeed ZeRO-3).

Every forward pass of such a model gathers each block's weights from all ranks, so all ranks must
run the same forward passes through the same blocks, whatever their own data.
"""

from __future__ import annotations

from typing import Any

from torch.distributed.fsdp import FullyShardedDataParallel


def is_sharded(model: Any) -> bool:
    """FSDP (a wrapped root or DTensor parameters) or DeepSpeed ZeRO-3 (partitioned parameters)."""
    if isinstance(model, FullyShardedDataParallel):
        return True
    return any(hasattr(p, "ds_id") or type(p).__name__ == "DTensor" for p in model.parameters())
