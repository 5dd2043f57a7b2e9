"""What an lmms-eval run of the VisionThink model spent, per sample and per task, and its MLflow run.

lmms-eval scores after the model has answered and writes its results file at the very end, so the
MLflow run is logged when the process exits: the visual-token figures of every task, and the
tasks' metrics read from that results file (found under ``--output_path``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from lmms_eval.api.instance import TokenCounts
from omegaconf import OmegaConf

from visionthink.rollout.trajectory import Trajectory

EXPERIMENT = "visionthink-lmms-eval"


@dataclass
class VisualTokenCounts(TokenCounts):
    """lmms-eval's per-request counters plus VisionThink's: the visual tokens of the first view and
    of what the tool calls brought back (the full-resolution view or regions of it; 0 when it did
    not ask), their sum, and whether it asked."""

    visual_tokens_first_view: int | None = None
    visual_tokens_high_res: int | None = None
    visual_tokens: int | None = None
    used_high_res: bool | None = None

    @classmethod
    def of(cls, trajectory: Trajectory) -> VisualTokenCounts:
        return cls(
            input_tokens=len(trajectory.token_ids) - trajectory.generated_tokens,
            output_tokens=trajectory.generated_tokens,
            visual_tokens_first_view=trajectory.images[0].visual_tokens,
            visual_tokens_high_res=trajectory.tool_visual_tokens,
            visual_tokens=trajectory.visual_tokens,
            used_high_res=trajectory.used_high_res,
        )

    def to_dict(self) -> dict[str, Any]:
        counts = super().to_dict()
        for name in ("visual_tokens_first_view", "visual_tokens_high_res", "visual_tokens", "used_high_res"):
            counts[name] = getattr(self, name)
        return counts


class RunFigures:
    """Per task: resize decisions and visual tokens, as ``evaluation.scoring.accounting`` names them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, int, int, bool, int]]] = defaultdict(list)
        self.skipped: dict[str, int] = defaultdict(int)

    def skip(self, task: str) -> None:
        self.skipped[task] += 1

    def add(self, task: str, counts: VisualTokenCounts, always_high_res: int) -> None:
        """One answered sample; ``always_high_res``: the visual tokens of its full-resolution view."""
        self.rows[task].append(
            (
                counts.visual_tokens_first_view,
                counts.visual_tokens_high_res,
                counts.visual_tokens,
                counts.used_high_res,
                always_high_res,
            )
        )

    def summary(self) -> dict[str, dict[str, float]]:
        """Task -> figures, and ``all`` over every task."""
        tasks = {task: self._figures(rows) for task, rows in self.rows.items()}
        if len(tasks) > 1:
            tasks["all"] = self._figures([row for rows in self.rows.values() for row in rows])
        for task, count in self.skipped.items():
            tasks.setdefault(task, {})["skipped_samples"] = float(count)
        return tasks

    @staticmethod
    def _figures(rows: list[tuple[int, int, int, bool, int]]) -> dict[str, float]:
        first, high, total, asked, always_high = zip(*rows, strict=True)
        return {
            "samples": float(len(rows)),
            "resize_ratio": fmean(asked),
            "visual_tokens": fmean(total),
            "visual_tokens_first_view": fmean(first),
            "visual_tokens_high_res": fmean(high),
            "visual_token_ratio": sum(total) / max(1, sum(always_high)),
        }


def results_file(started: float, argv: list[str]) -> Path | None:
    """The results file lmms-eval wrote for this run: the newest ``*_results.json`` under its
    ``--output_path`` written after ``started`` (None without one)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--output_path")
    output = parser.parse_known_args(argv)[0].output_path
    if not output or not Path(output).exists():
        return None
    written = [p for p in Path(output).rglob("*_results.json") if p.stat().st_mtime >= started]
    return max(written, key=lambda p: p.stat().st_mtime, default=None)


def task_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``<task>/<metric>`` for every number lmms-eval reports (its keys are ``metric,filter``)."""
    metrics = {}
    for task, figures in results.get("results", {}).items():
        for key, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                name = key.split(",")[0]
                metrics[f"{task}/{name}"] = float(value)
    return metrics


def log_run(figures: RunFigures, settings: dict[str, Any], started: float, argv: list[str]) -> None:
    from visionthink.tracking import mlflow_run

    summary = figures.summary()
    if not summary:
        return  # nothing was evaluated
    tracking = OmegaConf.create(
        {"tracking_uri": os.environ["MLFLOW_TRACKING_URI"], "experiment_name": EXPERIMENT, "artifact_location": None}
    )
    found = results_file(started, argv)
    with mlflow_run(tracking, run_name=f"lmms-eval-{settings['mode']}") as (client, run_id):
        for name, value in settings.items():
            client.log_param(run_id, name, str(value))
        for task, task_figures in summary.items():
            for name, value in task_figures.items():
                client.log_metric(run_id, f"{task}/{name}", value)
        if found is None:
            client.set_tag(run_id, "lmms_eval.results", "not found: pass --output_path to log the tasks' metrics")
            return
        for name, value in task_metrics(json.loads(found.read_text())).items():
            client.log_metric(run_id, name, value)
        client.log_artifact(run_id, str(found))


def log_to_mlflow_at_exit(
    figures: RunFigures, settings: dict[str, Any], started: float, register: Callable[..., Any]
) -> None:
    """With ``MLFLOW_TRACKING_URI`` set, log the run when the process exits (after lmms-eval has
    written its results)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        register(log_run, figures, settings, started, list(sys.argv))
