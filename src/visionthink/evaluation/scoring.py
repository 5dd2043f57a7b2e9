"""Benchmark scores and resolution accounting for one (benchmark, mode) pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from visionthink.evaluation.metrics import (
    anls,
    mme_answer,
    mme_scores,
    ocrbench_match,
    pope_scores,
    relaxed_correctness,
)
from visionthink.metrics.rollouts import tool_metrics
from visionthink.reward.judges.base import Verdict
from visionthink.rollout.trajectory import Trajectory

METRICS = ("accuracy", "relaxed_accuracy", "anls", "ocrbench", "pope", "mme")


@dataclass(frozen=True)
class Record:
    trajectory: Trajectory
    # The answer text (None when the model gave none) and the judge's verdict on it.
    prediction: str | None
    verdict: Verdict

    @property
    def sample(self):
        return self.trajectory.episode.sample


def benchmark_scores(metric: str, records: Sequence[Record]) -> dict[str, float]:
    """``score`` is the benchmark's headline number; ``judge_accuracy`` is always added."""
    if metric not in METRICS:
        raise ValueError(f"unknown benchmark metric {metric!r}; use one of {METRICS}")
    predictions = [r.prediction or "" for r in records]
    answers = [r.sample.answers or (r.sample.answer,) for r in records]
    judged = {
        "judge_accuracy": 100 * fmean(bool(r.verdict.correct) for r in records),
        "judge_invalid_rate": fmean(not r.verdict.valid for r in records),
    }
    if metric == "accuracy":
        return {"score": judged["judge_accuracy"], **judged}
    if metric == "relaxed_accuracy":
        hits = [
            any(relaxed_correctness(p, a) for a in options) for p, options in zip(predictions, answers, strict=True)
        ]
        return {"score": 100 * fmean(hits), **judged}
    if metric == "anls":
        return {
            "score": 100 * fmean(anls(p, options) for p, options in zip(predictions, answers, strict=True)),
            **judged,
        }
    if metric == "ocrbench":
        hits = [
            ocrbench_match(p, options, str(r.sample.info.get("category", "")))
            for p, options, r in zip(predictions, answers, records, strict=True)
        ]
        return {"score": 100 * fmean(hits), **judged}
    if metric == "pope":
        scores = pope_scores(predictions, [r.sample.answer for r in records])
        return {"score": scores["f1"], **{f"pope/{k}": v for k, v in scores.items()}, **judged}
    rows = [
        (
            str(r.sample.info.get("category", "all")),
            str(r.sample.info.get("image_id", r.sample.sample_id)),
            mme_answer(p) == r.sample.answer.strip().lower(),
        )
        for p, r in zip(predictions, records, strict=True)
    ]
    scores = mme_scores(rows)
    return {"score": scores["total"], **scores, **judged}


def label_scores(metric: str, records: Sequence[Record]) -> dict[str, float]:
    """The benchmark's score on the questions that need high resolution and on the others, where
    samples carry use_tool labels: it tells a weak reader (full-res score low) from a weak decider."""
    figures = {}
    for label, name in ((True, "needs_high_res"), (False, "low_res_enough")):
        subset = [r for r in records if r.sample.use_tool is label]
        if subset:
            figures[f"score/{name}"] = benchmark_scores(metric, subset)["score"]
    return figures


def accounting(records: Sequence[Record], seconds: float) -> dict[str, float]:
    """Resize decisions and visual-token cost; against the use_tool labels when samples carry them."""
    trajectories = [r.trajectory for r in records]
    high_tokens = sum(t.episode.high_view.visual_tokens for t in trajectories)
    figures = {
        "samples": float(len(records)),
        "resize_ratio": fmean(t.used_high_res for t in trajectories),
        "visual_tokens": fmean(t.visual_tokens for t in trajectories),
        "visual_token_ratio": sum(t.visual_tokens for t in trajectories) / max(1, high_tokens),
        "generated_tokens": fmean(t.generated_tokens for t in trajectories),
        "answered_ratio": fmean(r.prediction is not None for r in records),
        "seconds": seconds,
        "samples_per_second": len(records) / seconds if seconds > 0 else 0.0,
        # By tool (resize, zoom): the share of samples it brought an image to, visual tokens by source
        **tool_metrics(trajectories),
    }
    labelled = [t for t in trajectories if t.episode.sample.use_tool is not None]
    if labelled:
        needed = [t.episode.sample.use_tool for t in labelled]
        used = [t.used_high_res for t in labelled]
        true_positive = sum(n and u for n, u in zip(needed, used, strict=True))
        oracle = fmean(
            t.episode.first_view.visual_tokens + (t.episode.high_view.visual_tokens if t.episode.sample.use_tool else 0)
            for t in labelled
        )
        spent = fmean(t.visual_tokens for t in labelled)
        kinds = [t.episode.sample.kind for t in labelled]
        for label, name in ((True, "needs_high_res"), (False, "low_res_enough")):
            chosen = [u for n, u in zip(needed, used, strict=True) if n is label]
            if chosen:
                figures[f"resize_ratio/{name}"] = fmean(chosen)
                # Which tool it called there (zoom where it needs the label, resize, ...)
                subset = [t for t in labelled if t.episode.sample.use_tool is label]
                # Every tool called anywhere, so a tool never called on this subset reads 0
                called = list(dict.fromkeys(s for t in labelled for s in t.image_sources[1:]))
                shares = tool_metrics(subset, called).items()
                figures.update({f"{k}/{name}": v for k, v in shares if k.startswith("tool_calls/")})
            # Within one question kind (one wording) that has both needs: does the decision look at the image?
            for kind in sorted(set(kinds)):
                if {True, False} <= {n for n, k in zip(needed, kinds, strict=True) if k == kind}:
                    figures[f"resize_ratio/{kind}/{name}"] = fmean(
                        u for n, u, k in zip(needed, used, kinds, strict=True) if n is label and k == kind
                    )
        figures.update(
            decision_precision=true_positive / sum(used) if sum(used) else 0.0,
            decision_recall=true_positive / sum(needed) if sum(needed) else 0.0,
            oracle_visual_tokens=oracle,
            oracle_gap=(spent - oracle) / oracle if oracle else 0.0,
        )
    return figures
