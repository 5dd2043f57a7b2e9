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
from visionthink.reproduce.stages import Recipe, run_name, variants_of

MODES = ("adaptive", "full", "low")
# A section another reproduction writes into the report (conf/reproduce_zoom.yaml), between its
# markers; rewriting the report keeps it
ZOOM_SECTION = ("<!-- zoom claims: written by make reproduce-zoom -->", "<!-- end of zoom claims -->")


def kept_section(report: Path, markers: tuple[str, str]) -> list[str]:
    """The lines of ``report`` from one marker to the other (both kept), or none."""
    text, (start, end) = (report.read_text() if report.exists() else ""), markers
    if start not in text or end not in text:
        return []
    return text[text.index(start) : text.index(end) + len(end)].splitlines()


def write_section(report: Path, markers: tuple[str, str], lines: list[str]) -> None:
    """Put ``lines`` between the markers in ``report``, replacing what was there, or append them."""
    text, (start, end) = (report.read_text() if report.exists() else ""), markers
    block = "\n".join([start, *lines, end])
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block + "\n"
    write_atomic(report, text)


def load_json(path: Path) -> Any:
    """The file's JSON; None while the stage that writes it has not run."""
    return json.loads(path.read_text()) if path.exists() else None


def metric_histories(
    tracking_uri: str, run_names: dict[str, str], keys: list[str]
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Each labelled run's (step, value) history of every key, read from MLflow (the newest run of
    each name: a stage run again keeps its earlier runs); runs not found are left out."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("visionthink")
    result: dict[str, dict[str, list[tuple[int, float]]]] = {}
    if experiment is None:
        return result
    for label, name in run_names.items():
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
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
    save_step_panels(figure, axes, "image resize call ratio", path, legend_size=8)


def save_step_panels(figure: Any, axes: Any, ylabel: str, path: Path, legend_size: int) -> None:
    """Finish panels of shares (0-1) over optimizer steps, and save and close the figure."""
    import matplotlib.pyplot as plt

    for axis in axes:
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].set_ylim(-0.05, 1.05)
    axes[-1].legend(fontsize=legend_size)
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
    axis.set_ylabel("test resize ratio (adaptive, greedy)")
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


def stage_rows(stages: list[dict[str, Any]]) -> list[str]:
    """The rows of a report's stage table: each stage's seconds and command (run_stages' record)."""
    return [f"| {s['name']} | {s['seconds']:.0f} | `{_relative(s['command'])}` |" for s in stages]


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def training_runs(cfg: Any) -> dict[str, tuple[int, int, str]]:
    """Every GRPO run's label in the report, with its (initialisation, seed, variant)."""
    return {
        f"i{init} {variant} s{seed}": (init, seed, variant)
        for init in cfg.inits
        for variant in variants_of(cfg, init)
        for seed in cfg.seeds
    }


def measurements(
    cfg: Any, histories: dict[str, dict[str, list[tuple[int, float]]]]
) -> tuple[dict[tuple[int, int], dict[str, Any]], dict[int, dict[str, Any]]]:
    """Per (initialisation, seed), what the claims are checked on; and each base model's evaluation."""
    outputs = Path(cfg.paths.outputs_dir)
    bases: dict[int, dict[str, Any]] = {}
    measured: dict[tuple[int, int], dict[str, Any]] = {}
    for init in cfg.inits:
        base = load_json(outputs / "eval" / run_name(cfg, "eval-base", init=init) / "results.json")
        if base:
            bases[init] = base["synthetic"]
        for seed in cfg.seeds:
            m: dict[str, Any] = {"base_full": bases[init]["full"] if init in bases else None}
            for variant in variants_of(cfg, init):
                results = load_json(outputs / "eval" / run_name(cfg, f"eval-{variant}", seed, init) / "results.json")
                m[variant] = results["synthetic"]["adaptive"] if results else None
            curves = histories.get(f"i{init} paper s{seed}", {})
            need, rest = (_final(curves.get(f"train/resize_ratio/{n}")) for n in ("needs_high_res", "low_res_enough"))
            m["paper_train"] = {"needs_high_res": need, "low_res_enough": rest} if None not in (need, rest) else None
            m["theta"] = []
            for theta in cfg.theta_sweep.thetas if init == cfg.inits[0] else []:
                results = load_json(
                    outputs / "eval" / run_name(cfg, f"eval-theta-{theta}", seed, init) / "results.json"
                )
                if results:
                    m["theta"].append((float(theta), results["synthetic"]["adaptive"]["resize_ratio"]))
            measured[(init, seed)] = m
    return measured, bases


def render(cfg: Any, recipe: Recipe, stages: list[dict[str, Any]]) -> Path:
    outputs = Path(cfg.paths.outputs_dir)
    report = Path(cfg.report)
    figures = report.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    first = cfg.inits[0]
    wording = recipe.fine_kinds[0]
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{outputs / 'mlflow.db'}")
    keys = ["train/resize_ratio", "train/resize_ratio/needs_high_res", "train/resize_ratio/low_res_enough",
            "train/accuracy", "train/reward"]  # fmt: skip
    runs = training_runs(cfg)
    histories = metric_histories(
        tracking, {label: run_name(cfg, f"grpo-{variant}", seed, init) for label, (init, seed, variant) in runs.items()},
        keys,
    )  # fmt: skip
    _plot_resize(histories, figures / "reproduction_resize_ratio.png")
    measured, bases = measurements(cfg, histories)
    sweeps = {seed: m["theta"] for (init, seed), m in measured.items() if m["theta"]}
    if sweeps:
        _plot_theta(sweeps, figures / "reproduction_theta.png")
    perceptions = {init: load_json(outputs / "pretrain" / run_name(cfg, "base", init=init) / "perception.json")
                   for init in cfg.inits}  # fmt: skip
    base_plot = outputs / "pretrain" / run_name(cfg, "base", init=first) / "perception.png"
    if base_plot.exists():
        shutil.copyfile(base_plot, figures / "reproduction_base.png")
    claims = check_claims(cfg.claims, measured, wording)

    lines = [
        "# VisionThink in miniature: reproduction report",
        "",
        "Written by `make reproduce` (`src/reproduce.py`) from the run's own outputs; rerun it to regenerate.",
        "",
        "## What reproduced",
        "",
        f"Tiny initialisations (`model.tiny.seed`) {list(cfg.inits)}, GRPO seeds {list(cfg.seeds)}, one recipe for all. "
        f"(a), (b) and (f) are checked on every initialisation and seed; (c), (d) and (e) on the seeds of "
        f"initialisation {first}. A claim is reproduced when it holds on every run it is checked on. Thresholds "
        "were fixed in `conf/reproduce.yaml` before the run.",
        "",
        "| claim | threshold | runs where it holds | verdict |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for claim in claims:
        verdict = "Reproduced" if claim.reproduced else "Not reproduced"
        lines.append(f"| ({claim.key}) {claim.statement} | {claim.threshold} | "
                     f"{sum(claim.holds.values())} of {len(claim.holds)} | {verdict} |")  # fmt: skip
    for init in cfg.inits:
        checked = [c for c in claims if any(i == init for i, _ in c.holds)]
        lines += ["", f"### Initialisation {init}", "",
                  "| claim | " + " | ".join(f"seed {s}" for s in cfg.seeds) + " |", "|---|" + "---|" * len(cfg.seeds)]  # fmt: skip
        for claim in checked:
            cells = [f"{claim.evidence.get((init, s), '-')} ({'holds' if claim.holds.get((init, s)) else 'fails'})"
                     for s in cfg.seeds]  # fmt: skip
            lines.append(f"| ({claim.key}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Setup",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- model: `{cfg.model}` (random init, `model.tiny.seed` in {list(cfg.inits)}), then the base stage (`src/pretrain.py "
        f"{' '.join(cfg.base.overrides)}`): it learns to answer every question at full and 1/4 resolution with the tool-less "
        f"prompt, to say whether the view shows the asked detail, and the agent prompt `{recipe.prompt}`'s format with the "
        "tool called at random, whatever the image needs (the decision is not taught)",
        f"- data: synthetic, {cfg.data.train}/{cfg.data.val}/{cfg.data.test} (train/val/test), {recipe.fine_fraction:.0%} of "
        f"questions need the full resolution ({', '.join(recipe.fine_kinds)} of a 1-px label: unreadable at 1/4), the rest "
        f"{', '.join(recipe.coarse_kinds)} (wide_stripes: the same {wording} question of a label readable at 1/4)",
        f"- GRPO: the recipe of `make train` ({' '.join(recipe.overrides)}), {cfg.grpo.steps} steps of {recipe.batch_size} "
        f"prompts x {recipe.group_size} rollouts, lr {recipe.lr}; variants: "
        + ", ".join(f"`{v}` ({' '.join(cfg.variants[v])})" for v in cfg.variants)
        + f"; from every initialisation: {', '.join(cfg.every_init)}",
        f"- theta sweep (initialisation {first}): {list(cfg.theta_sweep.thetas)}, {cfg.theta_sweep.steps} steps each, paper penalty",
        "",
        "| stage | seconds | command |",
        "|---|---|---|",
    ]  # fmt: skip
    lines += stage_rows(stages)
    total = sum(s["seconds"] for s in stages if s.get("seconds") is not None)
    lines += ["", f"Stages run by this invocation: {total / 60:.1f} minutes in all."]
    lines += ["", "## The base models", "", f"![base](figures/reproduction_base.png) (initialisation {first})", "",
              "Greedy accuracy with the tool-less prompt; the agent prompt sampled at temperature 1: how often it asks, "
              "and its accuracy when it asked and when it answered directly (the reward gap GRPO starts from). Within "
              f"the {wording} question the base asks as often on images that need the full resolution as on the others.",
              "", "| init | question / need | full resolution | 1/4 resolution | resize ratio (agent prompt, sampled) "
              "| accuracy after asking | accuracy answering directly |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for init, perception in perceptions.items():
        for kind in (perception or {}).get("full", {}):
            lines.append(f"| {init} | {kind} | {_pct(perception['full'][kind])} | {_pct(perception['low'][kind])} | "
                         f"{_pct(perception['resize_ratio'].get(kind))} | {_pct(perception.get('resized', {}).get(kind))} | "
                         f"{_pct(perception.get('direct', {}).get(kind))} |")  # fmt: skip
    lines += ["", "## Resize-call ratio during training (paper Fig. 3 / 8 analogue)", "",
              "![resize ratio](figures/reproduction_resize_ratio.png)", "",
              "Sampled rollouts; final values are means over the last fifth of the training steps.", "",
              "| run | final resize ratio, images that need the full resolution | final, the others | final train accuracy |",
              "|---|---|---|---|"]  # fmt: skip
    for label, series in histories.items():
        last = {k: _final(series.get(k)) for k in keys}
        lines.append(f"| {label} | {_pct(last['train/resize_ratio/needs_high_res'])} | "
                     f"{_pct(last['train/resize_ratio/low_res_enough'])} | {_pct(last['train/accuracy'])} |")  # fmt: skip
    lines += ["", "## Accuracy and visual tokens (paper Table 2 analogue, synthetic test set, greedy, adaptive mode)", "",
              "`% of full` compares with the same initialisation's base model at full resolution (paper Table 2 compares "
              "with Qwen2.5-VL at full resolution).", "",
              f"| policy | accuracy | needs it / not accuracy | % of full | visual tokens | % of full tokens | resize ratio "
              f"needs it / not | {wording}: needs it / not | precision / recall |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = [(init, f"i{init} base, {mode}", modes.get(mode)) for init, modes in bases.items() for mode in MODES]
    rows += [(init, label, measured[(init, seed)].get(variant)) for label, (init, seed, variant) in runs.items()]
    for init, label, f in rows:
        full = bases.get(init, {}).get("full")
        if not f:
            continue
        share = f"{100 * f['score'] / full['score']:.0f}%" if full and full["score"] else "-"
        tokens = f"{100 * f['visual_tokens'] / full['visual_tokens']:.0f}%" if full else "-"
        decision = f"{f['decision_precision']:.2f} / {f['decision_recall']:.2f}" if "decision_precision" in f else "-"
        lines.append(f"| {label} | {f['score']:.1f} | {_score(f.get('score/needs_high_res'))} / {_score(f.get('score/low_res_enough'))} | "
                     f"{share} | {f['visual_tokens']:.1f} | {tokens} | {_pct(f.get('resize_ratio/needs_high_res'))} / "
                     f"{_pct(f.get('resize_ratio/low_res_enough'))} | {_pct(f.get(f'resize_ratio/{wording}/needs_high_res'))} / "
                     f"{_pct(f.get(f'resize_ratio/{wording}/low_res_enough'))} | {decision} |")  # fmt: skip
    if sweeps:
        lines += ["", f"## Theta sweep (initialisation {first}, resize ratio on the test split, adaptive mode, greedy)", "",
                  "![theta](figures/reproduction_theta.png)", "",
                  "| seed | " + " | ".join(f"theta {t}" for t in cfg.theta_sweep.thetas) + " |",
                  "|---|" + "---|" * len(cfg.theta_sweep.thetas)]  # fmt: skip
        for seed, sweep in sweeps.items():
            lines.append(f"| {seed} | " + " | ".join(_pct(ratio) for _, ratio in sorted(sweep)) + " |")
    shown = run_name(cfg, "eval-paper", cfg.seeds[0], first)
    samples = load_json(outputs / "eval" / shown / "samples" / "synthetic__adaptive.json")
    if samples:
        lines += [
            "",
            f"## Sample trajectories (paper penalty, initialisation {first}, seed {cfg.seeds[0]}, adaptive mode)",
            "",
        ]
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
    # The zoom claims' section (make reproduce-zoom) stays where it is
    zoom_section = kept_section(report, ZOOM_SECTION)
    write_atomic(report, "\n".join([*lines, *([""] + zoom_section if zoom_section else [])]) + "\n")
    return report
