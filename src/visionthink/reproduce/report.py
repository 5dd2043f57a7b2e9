"""docs/reproduction.md, written from the miniature's own outputs (no hand-typed numbers)."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import mlflow
import torch

from visionthink.evaluation.report import write_atomic
from visionthink.paths import PROJECT_ROOT
from visionthink.reproduce.claims import check_claims
from visionthink.reproduce.stages import Recipe, run_name

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
    for label, name in run_names.items():
        runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
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


def _plot_theta(sweeps: dict[int, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    for index, (seed, points) in enumerate(sweeps.items()):
        points = sorted(points)
        axis.plot([p[0] for p in points], [p[1] for p in points], "o-", color=f"C{index}", label=f"seed {seed}")
    axis.set_xlabel("theta")
    axis.set_ylabel("final validation resize ratio")
    axis.set_ylim(-0.05, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
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


def measurements(cfg: Any) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Per seed, what the claims are checked on; and the base model's evaluation."""
    outputs = Path(cfg.paths.outputs_dir)
    base = _load(outputs / "eval" / run_name(cfg, "eval-base") / "results.json")
    base_modes = base["synthetic"] if base else None
    measured: dict[int, dict[str, Any]] = {}
    for seed in cfg.seeds:
        m: dict[str, Any] = {"base_full": base_modes["full"] if base_modes else None}
        for variant in cfg.variants:
            results = _load(outputs / "eval" / run_name(cfg, f"eval-{variant}", seed) / "results.json")
            m[variant] = results["synthetic"]["adaptive"] if results else None
        m["theta"] = []
        for theta in cfg.theta_sweep.thetas:
            final = _load(outputs / "runs" / run_name(cfg, f"theta-{theta}", seed) / "final_metrics.json")
            if final and "val/resize_ratio" in final:
                m["theta"].append((float(theta), final["val/resize_ratio"]))
        measured[seed] = m
    return measured, base_modes


def render(cfg: Any, recipe: Recipe, stages: list[dict[str, Any]]) -> Path:
    outputs = Path(cfg.paths.outputs_dir)
    report = Path(cfg.report)
    figures = report.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    variants = list(cfg.variants)
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{outputs / 'mlflow.db'}")
    keys = ["train/resize_ratio", "train/resize_ratio/needs_high_res", "train/resize_ratio/low_res_enough",
            "train/accuracy", "train/reward"]  # fmt: skip
    histories = _histories(
        tracking, {f"{v} (seed {s})": run_name(cfg, f"grpo-{v}", s) for s in cfg.seeds for v in variants}, keys
    )
    _plot_resize(histories, figures / "reproduction_resize_ratio.png")
    measured, base = measurements(cfg)
    sweeps = {seed: m["theta"] for seed, m in measured.items() if m["theta"]}
    if sweeps:
        _plot_theta(sweeps, figures / "reproduction_theta.png")
    perception = _load(outputs / "pretrain" / run_name(cfg, "base") / "perception.json")
    if (outputs / "pretrain" / run_name(cfg, "base") / "perception.png").exists():
        shutil.copyfile(
            outputs / "pretrain" / run_name(cfg, "base") / "perception.png", figures / "reproduction_base.png"
        )
    claims = check_claims(cfg.claims, measured)

    lines = [
        "# VisionThink in miniature: reproduction report",
        "",
        "Written by `make reproduce` (`src/reproduce.py`) from the run's own outputs; rerun it to regenerate.",
        "",
        "## What reproduced",
        "",
        f"Seeds {list(cfg.seeds)}; a claim is reproduced when it holds for every seed. Thresholds were fixed in "
        "`conf/reproduce.yaml` before the run.",
        "",
        "| claim | threshold | " + " | ".join(f"seed {s}" for s in cfg.seeds) + " | verdict |",
        "|---|---|" + "---|" * len(cfg.seeds) + "---|",
    ]
    for claim in claims:
        cells = [f"{claim.evidence.get(s, '-')} ({'holds' if claim.holds.get(s) else 'fails'})" for s in cfg.seeds]
        verdict = "Reproduced" if claim.reproduced else "Not reproduced"
        lines.append(
            f"| ({claim.key}) {claim.statement} | {claim.threshold} | " + " | ".join(cells) + f" | {verdict} |"
        )
    lines += [
        "",
        "## Setup",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- model: `{cfg.model}` (random init), then the base stage (`src/pretrain.py {' '.join(cfg.base.overrides)}`): "
        "it learns to answer every question kind at full and 1/4 resolution with the tool-less prompt, and the agent "
        f"prompt `{recipe.prompt}`'s format with the tool called at random, whatever the question (the decision is not taught)",
        f"- data: synthetic, {cfg.data.train}/{cfg.data.val}/{cfg.data.test} (train/val/test), {recipe.fine_fraction:.0%} label "
        f"questions ({', '.join(recipe.fine_kinds)}: unreadable at 1/4 resolution), the rest {', '.join(recipe.coarse_kinds)}",
        f"- GRPO: the recipe of `make train` ({' '.join(recipe.overrides)}), {cfg.grpo.steps} steps of {recipe.batch_size} "
        f"prompts x {recipe.group_size} rollouts, lr {recipe.lr}; variants: "
        + ", ".join(f"`{v}` ({' '.join(cfg.variants[v])})" for v in variants),
        f"- theta sweep: {list(cfg.theta_sweep.thetas)}, {cfg.theta_sweep.steps} steps each, paper penalty",
        "",
        "| stage | seconds | command |",
        "|---|---|---|",
    ]  # fmt: skip
    lines += [f"| {s['name']} | {s['seconds']:.0f} | `{_relative(s['command'])}` |" if s.get("seconds") is not None
              else f"| {s['name']} | (earlier run) | {s['command']} |" for s in stages]  # fmt: skip
    total = sum(s["seconds"] for s in stages if s.get("seconds") is not None)
    lines += ["", f"Stages run by this invocation: {total / 60:.1f} minutes in all."]
    if perception:
        lines += ["", "## The base model", "", "![base](figures/reproduction_base.png)", "",
                  "Agent prompt sampled at temperature 1: how often it asks, and its accuracy when it asked and "
                  "when it answered directly (the reward gap GRPO starts from).", "",
                  "| question kind | full resolution | 1/4 resolution | resize ratio (agent prompt, sampled) "
                  "| accuracy after asking | accuracy answering directly |", "|---|---|---|---|---|---|"]  # fmt: skip
        for kind in perception["full"]:
            lines.append(f"| {kind} | {_pct(perception['full'][kind])} | {_pct(perception['low'][kind])} | "
                         f"{_pct(perception['resize_ratio'].get(kind))} | {_pct(perception.get('resized', {}).get(kind))} | "
                         f"{_pct(perception.get('direct', {}).get(kind))} |")  # fmt: skip
    lines += ["", "## Resize-call ratio during training (paper Fig. 3 / 8 analogue)", "",
              "![resize ratio](figures/reproduction_resize_ratio.png)", "",
              "Final values are means over the last fifth of the training steps.", "",
              "| run | final resize ratio, label questions | final, coarse questions | final train accuracy |",
              "|---|---|---|---|"]  # fmt: skip
    for label, series in histories.items():
        last = {k: _final(series.get(k)) for k in keys}
        lines.append(f"| {label} | {_pct(last['train/resize_ratio/needs_high_res'])} | "
                     f"{_pct(last['train/resize_ratio/low_res_enough'])} | {_pct(last['train/accuracy'])} |")  # fmt: skip
    lines += ["", "## Accuracy and visual tokens (paper Table 2 analogue, synthetic test set, greedy, adaptive mode)", "",
              "`% of full` compares with the base model at full resolution (paper Table 2 compares with Qwen2.5-VL at full resolution).", "",
              "| policy | accuracy | label / coarse accuracy | % of full | visual tokens | % of full tokens | resize ratio label / coarse | precision / recall |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = [(f"base, {mode}", base.get(mode)) for mode in MODES] if base else []
    rows += [(f"{variant} (seed {seed})", m[variant]) for seed, m in measured.items() for variant in variants]
    full = base.get("full") if base else None
    for label, f in rows:
        if not f:
            continue
        share = f"{100 * f['score'] / full['score']:.0f}%" if full and full["score"] else "-"
        tokens = f"{100 * f['visual_tokens'] / full['visual_tokens']:.0f}%" if full else "-"
        decision = f"{f['decision_precision']:.2f} / {f['decision_recall']:.2f}" if "decision_precision" in f else "-"
        lines.append(f"| {label} | {f['score']:.1f} | {_score(f.get('score/needs_high_res'))} / {_score(f.get('score/low_res_enough'))} | "
                     f"{share} | {f['visual_tokens']:.1f} | {tokens} | {_pct(f.get('resize_ratio/needs_high_res'))} / "
                     f"{_pct(f.get('resize_ratio/low_res_enough'))} | {decision} |")  # fmt: skip
    if sweeps:
        lines += ["", "## Theta sweep (final validation resize ratio)", "", "![theta](figures/reproduction_theta.png)", "",
                  "| seed | " + " | ".join(f"theta {t}" for t in cfg.theta_sweep.thetas) + " |",
                  "|---|" + "---|" * len(cfg.theta_sweep.thetas)]  # fmt: skip
        for seed, sweep in sweeps.items():
            lines.append(f"| {seed} | " + " | ".join(_pct(ratio) for _, ratio in sorted(sweep)) + " |")
    first = run_name(cfg, f"eval-{variants[0]}", cfg.seeds[0]) if variants else None
    samples = _load(outputs / "eval" / first / "samples" / "synthetic__adaptive.json") if first else None
    if samples:
        lines += ["", f"## Sample trajectories ({variants[0]}, seed {cfg.seeds[0]}, adaptive mode)", ""]
        for sample in samples[:4]:
            lines += [
                f"- **{sample['question']}** (answer `{sample['answer']}`, needs high resolution: {sample['needs_high_res']}; "
                f"used it: {sample['used_high_res']}, {sample['visual_tokens']} visual tokens, correct: {sample['correct']})",
                "",
                "  ```",
                *[f"  turn {i + 1}: {t}".replace("\n", "\\n") for i, t in enumerate(sample["turns"])],
                "  ```",
                "",
            ]
    write_atomic(report, "\n".join(lines) + "\n")
    return report
