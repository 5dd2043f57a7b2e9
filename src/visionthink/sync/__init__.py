"""Weight sync: after every optimizer step the rollout engine must generate with the new weights.

The transformers engine generates with the policy module itself, so its sync only checks that
this is still true and counts versions; the vLLM engine implements the same interface by
pushing the parameters into its own copy of the model.
"""

from __future__ import annotations

from typing import Any, Protocol


class WeightSync(Protocol):
    version: int

    def push(self, policy: Any) -> None:
        """Make the rollout engine generate with ``policy``'s current weights."""
        ...


class SharedModuleSync:
    """For engines that generate with the training module itself (no copy to update)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.version = 0

    def push(self, policy: Any) -> None:
        if self.engine.model is not policy:
            raise RuntimeError("the rollout engine no longer generates with the policy being trained")
        self.version += 1
