"""A rule-based judge: normalised exact match, numbers with a tolerance, multiple-choice
letters and ``\\boxed{}`` content. It never returns an invalid verdict."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from visionthink.episode.parser import extract_boxed
from visionthink.reward.judges.base import Judge, JudgeItem, Verdict

ARTICLES = re.compile(r"\b(a|an|the)\b")
NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")
CHOICE = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")
PUNCTUATION = str.maketrans("", "", string.punctuation.replace("%", "").replace(".", "").replace("-", ""))


def normalise(text: str) -> str:
    text = text.strip().lower().translate(PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split()).strip(" .")


def as_number(text: str) -> float | None:
    text = text.strip().rstrip(".").replace(" ", "")
    if text.endswith("%"):
        text = text[:-1]
    if not text or not NUMBER.match(text) or not any(ch.isdigit() for ch in text):
        return None
    return float(text.replace(",", ""))


def choice_letter(text: str) -> str | None:
    text = text.strip()
    if len(text) == 1 and text.isalpha():
        return text.upper()
    match = CHOICE.match(text)
    return match.group(1) if match else None


class RuleJudge(Judge):
    def __init__(self, numeric_tolerance: float = 0.0, max_invalid_steps: int = 3):
        super().__init__(max_invalid_steps)
        # Relative tolerance for numeric answers (0 = equal values, "3.0" matches "3").
        self.numeric_tolerance = numeric_tolerance

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        return [self._judge_one(item) for item in items]

    def _judge_one(self, item: JudgeItem) -> Verdict:
        prediction = extract_boxed(item.prediction) or item.prediction
        for truth in item.ground_truths or (item.ground_truth,):
            truth = extract_boxed(truth) or truth
            if self.matches(prediction, truth):
                return Verdict(True, f"matches {truth!r}")
        return Verdict(False, "no reference answer matches")

    def matches(self, prediction: str, truth: str) -> bool:
        if not prediction.strip():
            return False
        truth_number, predicted_number = as_number(truth), as_number(prediction)
        if truth_number is not None:
            if predicted_number is None:
                return False
            scale = max(abs(truth_number), 1e-12)
            return abs(predicted_number - truth_number) <= self.numeric_tolerance * scale + 1e-9
        truth_letter = choice_letter(truth) if len(truth.strip()) <= 3 else None
        if truth_letter is not None:
            return choice_letter(prediction) == truth_letter
        return normalise(prediction) == normalise(truth)
