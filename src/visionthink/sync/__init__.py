"""Weight sync: after every optimizer step the rollout engine must generate with the new weights.

The transformers engine generates with the policy module itself, so its sync only checks that
this is still true and counts versions; engines with their own copy of the model (vLLM) get the
policy's full weights pushed into it.
"""

from __future__ import annotations

from typing import Any, Protocol

from visionthink.sync.gather import full_parameters


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


class CopyToEngineSync:
    """For engines holding their own copy (``engine.load_weights``): gather the full weights and
    load them. The engine also keeps the policy as the source to reload from when it has
    discarded its copy (vLLM's level-2 sleep)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.version = 0

    def push(self, policy: Any) -> None:
        self.engine.load_weights(full_parameters(policy))
        self.engine.weight_source = lambda: full_parameters(policy)
        self.version += 1


__all__ = ["CopyToEngineSync", "SharedModuleSync", "WeightSync", "full_parameters"]
