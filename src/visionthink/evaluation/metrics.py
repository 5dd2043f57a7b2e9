"""Official benchmark metrics, re-implemented from their definitions (and lmms-eval's code paths).

Every function works on plain strings and numbers; scores are in percent unless noted.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence


# ------------------------------------------------------------------ ChartQA
def _to_float(text: str) -> float | None:
    """ChartQA's conversion: a trailing % divides by 100 (the paper's Listing 1)."""
    text = text.strip()
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> bool:
    """ChartQA's relaxed accuracy: numbers within 5% of the target, otherwise exact (case-insensitive).

    It reproduces the official metric, including the flaws the paper points out (47 vs 47% fails,
    46 vs 47 passes); ``judge`` accuracy (ChartQA-dagger) is reported next to it for that reason.
    """
    predicted, expected = _to_float(prediction), _to_float(target)
    # A target of 0 is compared as text, as the official code (and lmms-eval) does
    if predicted is not None and expected:
        return abs(predicted - expected) / abs(expected) <= max_relative_change
    return prediction.strip().lower() == target.strip().lower()


# ------------------------------------------------------------------ DocVQA
def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalised Levenshtein Similarity of one prediction (in [0, 1]): the best over the
    accepted answers of 1 - NL, where NL = distance / max length, and 0 when NL >= ``threshold``."""
    prediction = " ".join(prediction.strip().lower().split())
    best = 0.0
    for answer in answers:
        answer = " ".join(answer.strip().lower().split())
        length = max(len(answer), len(prediction))
        distance = _levenshtein(prediction, answer) / length if length else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


# ------------------------------------------------------------------ OCRBench
def ocrbench_match(prediction: str, answers: Sequence[str], category: str = "") -> bool:
    """OCRBench: correct when an accepted answer is contained in the prediction; handwritten
    mathematical expressions compare with all whitespace removed, other tasks case-insensitively."""
    if category == "Handwritten Mathematical Expression Recognition":
        squeeze = lambda text: re.sub(r"\s+", "", text)  # noqa: E731
        return any(squeeze(answer) in squeeze(prediction) for answer in answers)
    prediction = prediction.lower().strip().replace("\n", " ")
    return any(answer.lower().strip().replace("\n", " ") in prediction for answer in answers)


# ------------------------------------------------------------------ POPE
def pope_label(prediction: str) -> str | None:
    """lmms-eval's (0.7) reading of a POPE answer: "yes" or "no" only when the answer is that word
    (any case, surrounding spaces ignored); anything else is neither, so it is wrong."""
    word = prediction.strip().lower()
    return word if word in ("yes", "no") else None


def pope_scores(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of "yes" (percent) as lmms-eval computes them (an answer
    that is neither word is a miss, and neither a false positive nor a false negative), and the
    share of "yes" answers (lmms-eval's ``pope_yes_ratio`` is the share of "yes" labels instead)."""
    guesses = [pope_label(p) for p in predictions]
    truth = [label.strip().lower() for label in labels]
    tp = sum(g == "yes" and t == "yes" for g, t in zip(guesses, truth, strict=True))
    fp = sum(g == "yes" and t == "no" for g, t in zip(guesses, truth, strict=True))
    fn = sum(g == "no" and t == "yes" for g, t in zip(guesses, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(truth)
    return {
        "accuracy": 100 * sum(g == t for g, t in zip(guesses, truth, strict=True)) / n if n else 0.0,
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * guesses.count("yes") / n if n else 0.0,
    }


# ------------------------------------------------------------------ MME
MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_answer(prediction: str) -> str | None:
    """MME expects yes/no; the first yes or no in the reply counts, anything else is wrong."""
    match = re.search(r"\b(yes|no)\b", prediction.lower())
    return match.group(1) if match else None


def mme_scores(records: Sequence[tuple[str, str, bool]]) -> dict[str, float]:
    """``records`` are (category, image id, correct). Per category: acc (per question, %) +
    acc+ (images with both questions right, %); perception and cognition sum their categories."""
    by_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for category, image, correct in records:
        by_category[category][image].append(correct)
    scores: dict[str, float] = {}
    for category, images in by_category.items():
        answers = [c for image in images.values() for c in image]
        acc = 100 * sum(answers) / len(answers)
        acc_plus = 100 * sum(all(image) for image in images.values()) / len(images)
        scores[f"mme/{category}"] = acc + acc_plus
    scores["perception"] = sum(v for k, v in scores.items() if k.removeprefix("mme/") in MME_PERCEPTION)
    scores["cognition"] = sum(v for k, v in scores.items() if k.removeprefix("mme/") in MME_COGNITION)
    scores["total"] = scores["perception"] + scores["cognition"]
    return scores
