"""docs/reproduction.md, written from the miniature's own outputs (no hand-typed numbers)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import mlflow
import torch

from visionthink.evaluation.report import write_atomic
from visionthink.paths import PROJECT_ROOT

MODES = ("adaptive", "full", "low")


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _histories(
    tracking_uri: str, run_names: dict[str, str], keys: list[str]
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("visionthink")
    result: dict[str, dict[str, list[tuple[int, float]]]] = {}
    if experiment is None:
        return result
    for label, run_name in run_names.items():
        runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
        if runs:
            run_id = runs[0].info.run_id
            result[label] = {
                key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys
            }
    return result


def _plot_resize(histories: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    panels = [("train/resize_ratio", "all questions"), ("train/resize_ratio/needs_high_res", "fine (needs high res)"),
              ("train/resize_ratio/low_res_enough", "coarse (low res enough)")]  # fmt: skip
    for axis, (key, title) in zip(axes, panels, strict=True):
        for index, (variant, series) in enumerate(histories.items()):
            points = series.get(key, [])
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], label=variant, color=f"C{index}")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("image resize call ratio")
    axes[0].set_ylim(-0.05, 1.05)
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_theta(points: list[tuple[float, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    thetas = [p[0] for p in points]
    axis.plot(thetas, [p[1] for p in points], "o-", color="C0", label="val accuracy")
    axis.set_xlabel("theta")
    axis.set_ylabel("validation accuracy", color="C0")
    twin = axis.twinx()
    twin.plot(thetas, [p[2] for p in points], "s--", color="C3", label="visual tokens")
    twin.set_ylabel("visual tokens per sample", color="C3")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _final(points: list[tuple[int, float]] | None) -> float | None:
    """The mean of the last fifth of a training curve: one step of a few dozen rollouts is noisy."""
    if not points:
        return None
    tail = points[-max(1, len(points) // 5) :]
    return sum(value for _, value in tail) / len(tail)


def _relative(command: str) -> str:
    return command.replace(f"{PROJECT_ROOT}/", "")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(cfg: Any, stages: list[dict[str, Any]]) -> Path:
    outputs = Path(cfg.paths.outputs_dir)
    report = Path(cfg.report)
    figures = report.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    name = cfg.name
    variants = list(cfg.variants)
    evals = {label: _load(outputs / "eval" / f"{name}-eval-{label}" / "results.json") for label in ["sft", *variants]}
    evals = {k: v["synthetic"] for k, v in evals.items() if v}
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{outputs / 'mlflow.db'}")
    keys = ["train/resize_ratio", "train/resize_ratio/needs_high_res", "train/resize_ratio/low_res_enough",
            "train/accuracy", "train/reward"]  # fmt: skip
    histories = _histories(tracking, {v: f"{name}-grpo-{v}" for v in variants}, keys)
    _plot_resize(histories, figures / "reproduction_resize_ratio.png")
    theta = []
    for value in cfg.theta_sweep.thetas:
        metrics = _load(outputs / "runs" / f"{name}-theta-{value}" / "final_metrics.json")
        if metrics and "val/accuracy" in metrics:
            theta.append(
                (
                    float(value),
                    metrics["val/accuracy"],
                    metrics["val/visual_tokens"],
                    metrics.get("val/resize_ratio", 0.0),
                )
            )
    if theta:
        _plot_theta([t[:3] for t in theta], figures / "reproduction_theta.png")

    lines = [
        "# VisionThink in miniature: reproduction report",
        "",
        "Written by `make reproduce` (`src/reproduce.py`) from the run's own outputs; rerun it to regenerate.",
        "",
        "## Setup",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- model: `{cfg.model}` (random init), prompt `{cfg.prompt}`, synthetic data {cfg.data.train}/{cfg.data.val}/{cfg.data.test} (train/val/test)",
        f"- SFT: {cfg.sft.epochs} epochs, tool traces {cfg.sft.tool_fraction:.0%} of every question type (the decision is not taught), "
        f"{cfg.sft.plain_fraction:.0%} of traces in the tool-less prompt",
        f"- GRPO: {cfg.grpo.steps} steps of {cfg.grpo.batch_size} prompts x {cfg.grpo.group_size} rollouts, lr {cfg.grpo.lr}; "
        f"variants: " + ", ".join(f"`{v}` ({' '.join(cfg.variants[v])})" for v in variants),
        f"- theta sweep: {list(cfg.theta_sweep.thetas)}, {cfg.theta_sweep.steps} steps each",
        "",
        "| stage | seconds | command |",
        "|---|---|---|",
    ]
    lines += [f"| {s['name']} | {s['seconds']:.0f} | `{_relative(s['command'])}` |" if s.get("seconds") is not None
              else f"| {s['name']} | (earlier run) | {s['command']} |" for s in stages]  # fmt: skip
    lines += ["", "## Resize-call ratio during training (paper Fig. 3 / 8 analogue)", "",
              "![resize ratio](figures/reproduction_resize_ratio.png)", ""]  # fmt: skip
    lines += [
        "Final values are means over the last fifth of the training steps.",
        "",
        "| variant | final resize ratio, fine questions | final, coarse questions | final train accuracy |",
        "|---|---|---|---|",
    ]
    for variant, series in histories.items():
        last = {k: _final(series.get(k)) for k in keys}
        lines.append(
            f"| {variant} | {_pct(last['train/resize_ratio/needs_high_res'])} | {_pct(last['train/resize_ratio/low_res_enough'])} | {_pct(last['train/accuracy'])} |"
        )
    lines += ["", "## Accuracy and visual tokens per mode (paper Table 2 analogue, synthetic test set, greedy)", "",
              "`% of full` compares with the cold-start (SFT) model at full resolution, the baseline every variant starts "
              "from (paper Table 2 compares with Qwen2.5-VL at full resolution). GRPO trains only the tool prompt, so a "
              "trained policy's own `full` and `low` rows (tool-less prompt) show what it kept of that prompt.", "",
              "| policy | mode | accuracy | accuracy fine / coarse | % of full | visual tokens | % of full tokens | resize ratio (fine / coarse) | oracle tokens | gap to oracle |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, modes in evals.items():
        full = evals.get("sft", {}).get("full", {})
        for mode in MODES:
            f = modes.get(mode)
            if not f:
                continue
            share = f"{100 * f['score'] / full['score']:.0f}%" if full.get("score") else "-"
            # The oracle is a decision policy: it only compares with the adaptive mode.
            oracle = (f"{f['oracle_visual_tokens']:.1f} | {_pct(f.get('oracle_gap'))}"
                      if mode == "adaptive" and "oracle_visual_tokens" in f else "- | -")  # fmt: skip
            lines.append(
                f"| {label} | {mode} | {f['score']:.1f} | {_score(f.get('score/needs_high_res'))} / {_score(f.get('score/low_res_enough'))} | {share} | {f['visual_tokens']:.1f} | {_pct(f['visual_token_ratio'])} | "
                f"{_pct(f.get('resize_ratio/needs_high_res'))} / {_pct(f.get('resize_ratio/low_res_enough'))} | "
                f"{oracle} |"
            )
    if theta:
        lines += ["", "## Theta sweep", "", "![theta](figures/reproduction_theta.png)", "",
                  "| theta | val accuracy | val visual tokens | val resize ratio |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {t} | {a:.3f} | {v:.1f} | {_pct(r)} |" for t, a, v, r in theta]
    samples = (
        _load(outputs / "eval" / f"{name}-eval-{variants[0]}" / "samples" / "synthetic__adaptive.json")
        if variants
        else None
    )
    if samples:
        lines += ["", f"## Sample trajectories ({variants[0]}, adaptive mode)", ""]
        for sample in samples[:4]:
            lines += [
                f"- **{sample['question']}** (answer `{sample['answer']}`, needs high resolution: {sample['needs_high_res']}; "
                f"used it: {sample['used_high_res']}, {sample['visual_tokens']} visual tokens, correct: {sample['correct']})",
                "",
            ]
            lines += [
                "  ```",
                *[f"  turn {i + 1}: {t}".replace("\n", "\\n") for i, t in enumerate(sample["turns"])],
                "  ```",
                "",
            ]
    lines += ["", "## What reproduced", ""] + verdicts(histories, evals, theta)
    write_atomic(report, "\n".join(lines) + "\n")
    return report


def verdicts(histories: dict, evals: dict, theta: list[tuple[float, float, float, float]]) -> list[str]:
    """The paper's claims checked against this run, each with the numbers and the threshold used."""

    def final(variant: str, key: str) -> float | None:
        return _final(histories.get(variant, {}).get(key))

    checks = []
    reader = evals.get("sft", {}).get("full", {}).get("score/needs_high_res")
    if reader is not None:
        ok = reader >= 80
        checks.append(f"- {'Met' if ok else 'Not met'} (precondition): the cold-start model answers fine questions from the "
                      f"full-resolution image with {reader:.1f}% accuracy (threshold: 80%). Below it, asking for the image "
                      "buys little over a guess, and no penalty setting can make the decision pay.")  # fmt: skip
    fine, coarse = (
        final("paper", "train/resize_ratio/needs_high_res"),
        final("paper", "train/resize_ratio/low_res_enough"),
    )
    if fine is not None and coarse is not None:
        ok = fine - coarse >= 0.3
        checks.append(f"- {'Reproduced' if ok else 'Not reproduced'}: with the paper's penalty the policy upscales on fine "
                      f"questions ({_pct(fine)}) far more than on coarse ones ({_pct(coarse)}) (threshold: a gap of 30 points).")  # fmt: skip
    adaptive, full = evals.get("paper", {}).get("adaptive"), evals.get("sft", {}).get("full")
    if adaptive and full and full["score"]:
        ok = adaptive["score"] >= 0.9 * full["score"] and adaptive["visual_token_ratio"] <= 0.75
        checks.append(f"- {'Reproduced' if ok else 'Not reproduced'}: adaptive accuracy {adaptive['score']:.1f} vs the cold-start model's full-resolution "
                      f"{full['score']:.1f} ({100 * adaptive['score'] / full['score']:.0f}%) at {_pct(adaptive['visual_token_ratio'])} "
                      f"of full's visual tokens (threshold: >= 90% of full accuracy at <= 75% of its tokens).")  # fmt: skip
    none_ratio, flat_ratio = final("no_penalty", "train/resize_ratio"), final("flat_penalty", "train/resize_ratio")
    paper_ratio = final("paper", "train/resize_ratio")
    if none_ratio is not None and paper_ratio is not None:
        ok = none_ratio > paper_ratio
        checks.append(f"- {'Reproduced' if ok else 'Not reproduced'}: without a penalty the policy upscales more "
                      f"({_pct(none_ratio)}) than with the paper's ({_pct(paper_ratio)}).")  # fmt: skip
    if flat_ratio is not None and paper_ratio is not None:
        ok = flat_ratio < paper_ratio
        checks.append(f"- {'Reproduced' if ok else 'Not reproduced'}: with a flat penalty on every upscale it upscales less "
                      f"({_pct(flat_ratio)}) than with the paper's ({_pct(paper_ratio)}).")  # fmt: skip
    if len(theta) >= 2:
        (low_theta, *_, low_ratio), (high_theta, *_, high_ratio) = min(theta), max(theta)
        ok = high_ratio > low_ratio
        checks.append(f"- {'Reproduced' if ok else 'Not reproduced'}: a higher theta penalises direct answers more often, so "
                      f"the policy upscales more at theta {high_theta} ({_pct(high_ratio)}) than at {low_theta} ({_pct(low_ratio)}).")  # fmt: skip
    return checks or ["- Nothing to check yet: the GRPO stages have no metrics."]
