"""Evaluation outputs: results.json, a Table-2-shaped markdown table and a score/token plot."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

MODES = ("full", "low", "adaptive")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temporary file and rename, so a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(handle, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    os.replace(temporary, path)


def markdown_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Modes as rows, benchmarks as columns (paper Table 2): score (% of full), then visual tokens."""
    benchmarks = list(results)
    modes = [m for m in MODES if any(m in results[b] for b in benchmarks)]
    modes += sorted({m for b in benchmarks for m in results[b]} - set(modes))
    lines = [
        "| mode | " + " | ".join(benchmarks) + " | visual tokens (% of full) | resize ratio |",
        "|---" * (len(benchmarks) + 3) + "|",
    ]
    for mode in modes:
        cells, tokens, ratios = [], [], []
        for benchmark in benchmarks:
            figures = results[benchmark].get(mode)
            if figures is None:
                cells.append("-")
                continue
            full = results[benchmark].get("full")
            share = f" ({100 * figures['score'] / full['score']:.1f}%)" if full and full["score"] else ""
            cells.append(f"{figures['score']:.1f}{share}")
            tokens.append(figures["visual_token_ratio"])
            ratios.append(figures["resize_ratio"])
        mean_tokens = f"{100 * sum(tokens) / len(tokens):.1f}%" if tokens else "-"
        mean_ratio = f"{100 * sum(ratios) / len(ratios):.1f}%" if ratios else "-"
        lines.append(f"| {mode} | " + " | ".join(cells) + f" | {mean_tokens} | {mean_ratio} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """Score against mean visual tokens per sample, one marker per mode, one colour per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"full": "s", "low": "v", "adaptive": "o"}
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for index, (benchmark, modes) in enumerate(results.items()):
        colour = f"C{index % 10}"
        points = [(m, f["visual_tokens"], f["score"]) for m, f in modes.items()]
        axis.plot([p[1] for p in points], [p[2] for p in points], color=colour, alpha=0.3)
        for mode, tokens, score in points:
            axis.scatter(tokens, score, color=colour, marker=markers.get(mode, "x"), s=60)
            axis.annotate(mode, (tokens, score), textcoords="offset points", xytext=(5, 4), fontsize=8)
        axis.plot([], [], color=colour, label=benchmark)
    axis.set_xlabel("visual tokens per sample (mean)")
    axis.set_ylabel("score")
    axis.set_title("Score vs visual tokens")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as handle:
        figure.savefig(handle.name, dpi=120)
    plt.close(figure)
    os.replace(handle.name, path)


def write_results(results: dict, directory: Path) -> dict[str, Path]:
    paths = {
        "results": directory / "results.json",
        "table": directory / "table.md",
        "plot": directory / "score_vs_tokens.png",
    }
    write_atomic(paths["results"], json.dumps(results, indent=2))
    write_atomic(paths["table"], markdown_table(results))
    plot(results, paths["plot"])
    return paths
