"""The judge interface shared by every judge (rule-based, local LLM, OpenAI-compatible)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


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


class Judge(ABC):
    """Decides whether predictions match the ground truth."""

    @abstractmethod
    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order; never raises for a single bad item."""
