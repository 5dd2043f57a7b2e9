"""Where the time of one GRPO step goes: timers on the policy's forward passes (split into vision
encoder, prefill and decode during rollouts), the rollout driver, scoring, the update's backward
passes and the optimizer, attached to our training loop by a Lightning callback."""

from __future__ import annotations

import time
from collections import defaultdict
from statistics import median
from typing import Any

import lightning as L

from visionthink.grpo.update import Hooks

# Stages in the order of a step; "other" is the step minus all of them (episode building, metrics, logging)
STAGES = (
    "rollout: vision encoder",
    "rollout: prefill",
    "rollout: decode",
    "rollout: other (driver, parsing)",
    "scoring",
    "log-probs: vision encoder",
    "log-probs: forward",
    "backward",
    "optimizer step",
    "update: other",
    "other",
)


class StepProfile(L.Callback):
    """Seconds per stage of each training step (``steps``: one dict per step)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self._seconds: dict[str, float] = defaultdict(float)
        self._phase = "other"

    def _add(self, stage: str, seconds: float) -> None:
        self._seconds[stage] += seconds

    def _timed(self, function: Any, phase: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            outer, self._phase = self._phase, phase
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._add(f"{phase} total", time.perf_counter() - started)
                self._phase = outer

        return run

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        policy, clock = module.policy, {"vision inside": 0.0}

        def vision_start(*_: Any) -> None:
            clock["vision"] = time.perf_counter()

        def vision_end(*_: Any) -> None:
            seconds = time.perf_counter() - clock["vision"]
            clock["vision inside"] += seconds
            self._add("rollout: vision encoder" if self._phase == "rollout" else "log-probs: vision encoder", seconds)

        def model_start(_: Any, args: Any, kwargs: dict) -> None:
            clock["model"], clock["vision inside"] = time.perf_counter(), 0.0
            ids = kwargs.get("input_ids")
            clock["decode"] = ids is not None and ids.shape[1] == 1

        def model_end(*_: Any) -> None:
            seconds = time.perf_counter() - clock["model"] - clock["vision inside"]
            if self._phase == "rollout":
                self._add("rollout: decode" if clock["decode"] else "rollout: prefill", seconds)
            else:
                self._add("log-probs: forward", seconds)

        policy.model.visual.register_forward_pre_hook(vision_start)
        policy.model.visual.register_forward_hook(vision_end)
        policy.register_forward_pre_hook(model_start, with_kwargs=True)
        policy.register_forward_hook(model_end, with_kwargs=True)
        module.driver.run = self._timed(module.driver.run, "rollout")
        module.score = self._timed(module.score, "scoring")
        module._update = self._timed(module._update, "update")
        hooks = module.update.hooks

        def backward(loss: Any) -> None:
            started = time.perf_counter()
            hooks.backward(loss)
            self._add("backward", time.perf_counter() - started)

        module.update.hooks = Hooks(backward=backward, clip_gradients=hooks.clip_gradients)
        optimizer = module.optimizers().optimizer
        optimizer.register_step_pre_hook(lambda *_: clock.__setitem__("optimizer", time.perf_counter()))
        optimizer.register_step_post_hook(
            lambda *_: self._add("optimizer step", time.perf_counter() - clock["optimizer"])
        )

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self._seconds.clear()
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        s = dict(self._seconds)
        step = time.perf_counter() - self._started
        rollout = ("rollout: vision encoder", "rollout: prefill", "rollout: decode")
        update = ("log-probs: vision encoder", "log-probs: forward", "backward", "optimizer step")
        s["rollout: other (driver, parsing)"] = s.get("rollout total", 0.0) - sum(s.get(k, 0.0) for k in rollout)
        s["update: other"] = s.get("update total", 0.0) - sum(s.get(k, 0.0) for k in update)
        s["scoring"] = s.get("scoring total", 0.0)
        s["other"] = step - s.get("rollout total", 0.0) - s["scoring"] - s.get("update total", 0.0)
        self.steps.append({**{stage: s.get(stage, 0.0) for stage in STAGES}, "step": step})

    def summary(self, warmup: int) -> dict[str, float]:
        """The median seconds of each stage over the steps after ``warmup``."""
        measured = self.steps[warmup:]
        return {stage: median(step[stage] for step in measured) for stage in (*STAGES, "step")}
