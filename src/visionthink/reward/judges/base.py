"""The judge interface shared by every judge (rule-based, local LLM, OpenAI-compatible)."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from visionthink.errors import InputError
from visionthink.metrics.distributed import Slowest, Summed


@dataclass(frozen=True)
class JudgeItem:
    question: str
    ground_truth: str
    # The text inside <answer>...</answer> only, never the reasoning.
    prediction: str
    # Every accepted reference answer (ground_truth first).
    ground_truths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    # True/False, or None when the judgment failed (the rollout is invalid, not wrong).
    correct: bool | None
    reason: str = ""

    @property
    def valid(self) -> bool:
        return self.correct is not None


@dataclass
class JudgeStats:
    """Counters since the last ``Judge.take_stats()``; logged as judge/* metrics."""

    items: int = 0
    invalid: int = 0
    cache_hits: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        return {
            "system/judge/items": Summed(self.items),
            "judge/invalid_rate": self.invalid / self.items if self.items else 0.0,
            "system/judge/cache_hits": Summed(self.cache_hits),
            "system/judge/requests": Summed(self.requests),
            "system/judge/retries": Summed(self.retries),
            "system/judge/seconds": Slowest(self.seconds),
        }


class JudgeUnavailable(InputError):
    """Every verdict failed for several steps in a row: the run would learn nothing."""


class Judge(ABC):
    """Decides whether predictions match the ground truth. ``max_invalid_steps``: consecutive
    training steps in which every verdict failed before the run stops (``check_step``)."""

    def __init__(self, max_invalid_steps: int = 3) -> None:
        self.stats = JudgeStats()
        self._stats_lock = threading.Lock()
        self.max_invalid_steps = max_invalid_steps
        self.invalid_steps = 0

    def describe(self) -> str:
        """The judge as a message names it."""
        return type(self).__name__

    def all_invalid(self, stats: JudgeStats) -> bool:
        return stats.items > 0 and stats.invalid == stats.items

    def check_step(self, all_invalid: bool) -> None:
        """Count a step whose verdicts all failed (on every rank); raise ``JudgeUnavailable`` after
        ``max_invalid_steps`` of them in a row."""
        self.invalid_steps = self.invalid_steps + 1 if all_invalid else 0
        if self.invalid_steps >= self.max_invalid_steps:
            raise JudgeUnavailable(
                f"{self.describe()} gave no verdict for {self.invalid_steps} steps in a row (judge/invalid_rate 1.0)",
                "Check the judge (its server, key or model), then resume with ckpt_path=last; "
                "judge.max_invalid_steps sets the patience",
            )

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order; never raises for a single bad item."""
        started = time.perf_counter()
        verdicts = self._judge(items)
        with self._stats_lock:
            self.stats.items += len(items)
            self.stats.invalid += sum(not v.valid for v in verdicts)
            self.stats.seconds += time.perf_counter() - started
        return verdicts

    @abstractmethod
    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...

    def count(self, **increments: int) -> None:
        with self._stats_lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def take_stats(self) -> JudgeStats:
        with self._stats_lock:
            stats, self.stats = self.stats, JudgeStats()
        return stats

    def close(self) -> None:  # noqa: B027 (optional hook; most judges hold nothing to release)
        """Release clients, threads or models."""

    def probe(self) -> None:  # noqa: B027 (optional hook; only remote judges can be unreachable)
        """Raise ``InputError`` at start-up when the judge cannot give verdicts."""
