"""The zoom tool in miniature (`make reproduce-zoom`, conf/reproduce_zoom.yaml): with both tools
offered and each call priced by the visual tokens it brings back, GRPO learns to zoom on the
label questions that need it, and reaches the resize-only policy's accuracy for fewer visual
tokens. The claims are checked per seed with thresholds fixed in the config before the run; the
section they fill sits between two markers in docs/reproduction.md, which `make reproduce` keeps.

``measured`` per (initialisation, seed) holds the adaptive-mode evaluation figures of each GRPO
variant (``results.json``'s ``synthetic.adaptive``): ``zoom`` (both tools) and ``resize_only``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from visionthink.reproduce.claims import Claim
from visionthink.reproduce.report import (
    ZOOM_SECTION,
    load_json,
    metric_histories,
    save_step_panels,
    stage_rows,
    write_section,
)
from visionthink.reproduce.stages import Recipe, run_name


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def check_zoom_claims(thresholds: Any, measured: dict[tuple[int, int], dict[str, Any]]) -> list[Claim]:
    t = thresholds
    claims = [
        Claim("z1", "With both tools and token pricing, GRPO learns to zoom on the label questions that need it, "
              "and its zooms hold the label",
              f"zoom calls on questions that need the full resolution >= {_pct(t.zoom_share)}, and >= "
              f"{_pct(t.on_target)} of all zooms hold the label's centre", {}, {}),
        Claim("z2", "It answers them as well as the resize-only policy, which learned to resize there",
              f"accuracy on questions that need the full resolution >= the resize-only policy's minus "
              f"{t.accuracy_margin:g} points, and overall >= its minus {t.accuracy_margin:g}; the resize-only "
              f"policy resizes on >= {_pct(t.zoom_share)} of them", {}, {}),
        Claim("z3", "For fewer visual tokens",
              f"visual tokens per question <= {_pct(t.token_share)} of the resize-only policy's", {}, {}),
    ]  # fmt: skip
    by_key = {claim.key: claim for claim in claims}
    for run, m in measured.items():
        zoom, resize = m.get("zoom"), m.get("resize_only")
        if zoom:
            share, on_target = zoom.get("tool_calls/zoom/needs_high_res", 0.0), zoom.get("zoom_on_target", 0.0)
            by_key["z1"].evidence[run] = f"zooms on {_pct(share)} of them, {_pct(on_target)} on the label"
            by_key["z1"].holds[run] = share >= t.zoom_share and on_target >= t.on_target
        if zoom and resize:
            needed, overall = zoom["score/needs_high_res"], zoom["score"]
            # Equal to a resize-only policy that never resizes would be no claim at all
            resized = resize.get("tool_calls/resize/needs_high_res", 0.0)
            by_key["z2"].evidence[run] = (f"needs it {needed:.1f} vs {resize['score/needs_high_res']:.1f}, "
                                          f"overall {overall:.1f} vs {resize['score']:.1f}; "
                                          f"resize-only resized {_pct(resized)}")  # fmt: skip
            by_key["z2"].holds[run] = (
                needed >= resize["score/needs_high_res"] - t.accuracy_margin
                and overall >= resize["score"] - t.accuracy_margin
                and resized >= t.zoom_share
            )
            share = zoom["visual_tokens"] / resize["visual_tokens"]
            by_key["z3"].evidence[run] = (f"{zoom['visual_tokens']:.1f} vs {resize['visual_tokens']:.1f} "
                                          f"({_pct(share)})")  # fmt: skip
            by_key["z3"].holds[run] = share <= t.token_share
    return claims


def _plot_tools(histories: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for axis, need in zip(axes, ("needs_high_res", "low_res_enough"), strict=True):
        for index, (label, series) in enumerate(histories.items()):
            for style, source in (("-", "zoom"), (":", "resize")):
                points = series.get(f"train/tool_calls/{source}/{need}", [])
                if points:
                    axis.plot([p[0] for p in points], [p[1] for p in points], style, color=f"C{index}",
                              label=f"{label}: {source}")  # fmt: skip
        axis.set_title(need.replace("_", " "), fontsize=10)
    save_step_panels(figure, axes, "share of rollouts calling the tool", path, legend_size=7)


def render(cfg: Any, recipe: Recipe, stages: list[dict[str, Any]]) -> Path:
    """The zoom claims' section of ``cfg.report``, from the run's outputs."""
    outputs, report = Path(cfg.paths.outputs_dir), Path(cfg.report)
    (report.parent / "figures").mkdir(parents=True, exist_ok=True)
    runs = [(init, seed) for init in cfg.inits for seed in cfg.seeds]
    measured: dict[tuple[int, int], dict[str, Any]] = {}
    for init, seed in runs:
        measured[(init, seed)] = {}
        for variant in cfg.variants:
            results = load_json(outputs / "eval" / run_name(cfg, f"eval-{variant}", seed, init) / "results.json")
            measured[(init, seed)][variant] = results["synthetic"]["adaptive"] if results else None
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{outputs / 'mlflow.db'}")
    keys = [f"train/tool_calls/{s}/{n}" for s in ("zoom", "resize") for n in ("needs_high_res", "low_res_enough")]
    labels = {
        f"{v} i{init} s{seed}": run_name(cfg, f"grpo-{v}", seed, init) for init, seed in runs for v in cfg.variants
    }
    figure = report.parent / "figures" / "reproduction_zoom_tools.png"
    _plot_tools(metric_histories(tracking, labels, keys), figure)
    claims = check_zoom_claims(cfg.claims, measured)
    seeds = [f"i{init} s{seed}" for init, seed in runs]
    lines = ["", "## The zoom tool in miniature (issue 31)", "",
             "Written by `make reproduce-zoom` (`src/reproduce.py --config-name reproduce_zoom`) from its own outputs. "
             f"Recipe: `{' '.join(recipe.overrides)}` (the label in any corner, both tools, each call priced by its "
             f"visual tokens, a KL term to the base), {cfg.grpo.steps} GRPO steps from the base `{cfg.model}` "
             f"(`src/pretrain.py {' '.join(cfg.base.overrides)}`); the resize-only policy: the same data, pricing "
             "and steps with `tool=resize`, from its own base trained the same way with `tool=resize` (a base "
             "offered one tool less than it was trained with never calls). Thresholds were fixed in `conf/reproduce_zoom.yaml` before the run; a claim "
             "is reproduced when it holds for every initialisation and seed.", "",
             "| claim | threshold | " + " | ".join(seeds) + " | verdict |", "|---|---|" + "---|" * len(seeds) + "---|"]  # fmt: skip
    for claim in claims:
        cells = [f"{claim.evidence.get(run, '-')} ({'holds' if claim.holds.get(run) else 'fails'})" for run in runs]
        verdict = "Reproduced" if claim.reproduced else "Not reproduced"
        lines.append(
            f"| ({claim.key}) {claim.statement} | {claim.threshold} | " + " | ".join(cells) + f" | {verdict} |"
        )
    lines += ["", "Greedy, adaptive mode, synthetic test split:", "",
              "| policy | accuracy | needs it / not | visual tokens | zoom calls needs it / not | resize calls needs it / not "
              "| zooms on the label |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (init, seed), by_variant in measured.items():
        for variant, f in by_variant.items():
            if not f:
                continue
            calls = {s: f"{_pct(f.get(f'tool_calls/{s}/needs_high_res'))} / {_pct(f.get(f'tool_calls/{s}/low_res_enough'))}"
                     for s in ("zoom", "resize")}  # fmt: skip
            lines.append(f"| {variant} i{init} s{seed} | {f['score']:.1f} | {f.get('score/needs_high_res', 0):.1f} / "
                         f"{f.get('score/low_res_enough', 0):.1f} | {f['visual_tokens']:.1f} | {calls['zoom']} | "
                         f"{calls['resize']} | {_pct(f.get('zoom_on_target'))} |")  # fmt: skip
    lines += ["", f"![tool calls during training](figures/{figure.name})", "",
              "Sampled rollouts during training: the share calling each tool (solid: zoom, dotted: resize).", "",
              "| stage | seconds | command |", "|---|---|---|"]  # fmt: skip
    lines += stage_rows(stages)
    write_section(report, ZOOM_SECTION, lines)
    return report
