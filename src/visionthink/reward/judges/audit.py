"""Judge audit: how often a judge agrees with human labels, and how it fails.

Rows are ``{question, ground_truth, prediction, label}`` (label 1 = a careful grader accepts the
prediction), optionally with ``id`` and ``category``. An invalid verdict counts as a
disagreement and is reported separately.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visionthink.errors import InputError
from visionthink.reward.judges.base import Judge, JudgeItem

REQUIRED = ("question", "ground_truth", "prediction", "label")


@dataclass(frozen=True)
class AuditRow:
    id: str
    category: str
    question: str
    ground_truth: str
    prediction: str
    label: bool


def load_audit_rows(path: str | Path) -> list[AuditRow]:
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"audit data {path} does not exist",
            "Pass audit.data=<jsonl with question, ground_truth, prediction, label>",
        )
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"line is not JSON ({error})", "Fix or remove the line", where) from None
        missing = [key for key in REQUIRED if key not in raw]
        if missing or raw["label"] not in (0, 1, True, False):
            raise InputError(f"row needs {list(REQUIRED)} with label 0 or 1; missing {missing}", "Fix the row", where)
        rows.append(
            AuditRow(
                id=str(raw.get("id", f"line-{number}")),
                category=str(raw.get("category", "all")),
                question=str(raw["question"]),
                ground_truth=str(raw["ground_truth"]),
                prediction=str(raw["prediction"]),
                label=bool(raw["label"]),
            )
        )
    if not rows:
        raise InputError(f"audit data {path} has no rows", "Add labelled rows")
    return rows


def run_audit(judge: Judge, rows: Sequence[AuditRow], batch_size: int = 32) -> dict[str, Any]:
    """Judge every row (in batches, with a progress bar) and summarise agreement with the labels."""
    started = time.perf_counter()
    verdicts = []
    for start in tqdm(range(0, len(rows), batch_size), desc="judging", unit="batch"):
        chunk = rows[start : start + batch_size]
        verdicts += judge.judge([JudgeItem(r.question, r.ground_truth, r.prediction) for r in chunk])
    seconds = time.perf_counter() - started
    confusion = Counter()
    by_category: dict[str, Counter] = defaultdict(Counter)
    disagreements = []
    for row, verdict in zip(rows, verdicts, strict=True):
        outcome = "invalid" if verdict.correct is None else ("judged_1" if verdict.correct else "judged_0")
        confusion[(f"label_{int(row.label)}", outcome)] += 1
        agrees = verdict.correct is not None and verdict.correct == row.label
        by_category[row.category]["n"] += 1
        by_category[row.category]["agree"] += agrees
        if not agrees:
            disagreements.append(
                {**row.__dict__, "label": int(row.label), "verdict": outcome, "reason": verdict.reason}
            )
    positives = sum(r.label for r in rows)
    negatives = len(rows) - positives
    return {
        "n": len(rows),
        "agreement": sum(by_category[c]["agree"] for c in by_category) / len(rows),
        "false_positive_rate": confusion[("label_0", "judged_1")] / negatives if negatives else 0.0,
        "false_negative_rate": confusion[("label_1", "judged_0")] / positives if positives else 0.0,
        "invalid_rate": sum(v for (_, outcome), v in confusion.items() if outcome == "invalid") / len(rows),
        "seconds": seconds,
        "confusion": {
            label: {outcome: confusion[(label, outcome)] for outcome in ("judged_1", "judged_0", "invalid")}
            for label in ("label_1", "label_0")
        },
        "by_category": {c: {"n": v["n"], "agreement": v["agree"] / v["n"]} for c, v in sorted(by_category.items())},
        "disagreements": disagreements,
    }
