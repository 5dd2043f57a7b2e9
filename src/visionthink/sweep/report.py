"""What a study found: every trial, the Pareto front, as a table and a plot (and in MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from visionthink.evaluation.report import write_atomic


def summarise(study: optuna.Study, names: list[str]) -> list[dict[str, Any]]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {
        t.number for t in (study.best_trials if len(study.directions) > 1 else ([study.best_trial] if complete else []))
    }
    names = names if len(names) == len(study.directions) else [f"objective_{i}" for i in range(len(study.directions))]
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name, **trial.params}
        if trial.values is not None:
            row.update(dict(zip(names, trial.values, strict=True)))
        row["pareto"] = trial.number in front
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no trials\n"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    for row in rows:
        cells = [f"{row[k]:.4g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], names: list[str], params: list[str], path: Path) -> None:
    """Two objectives: accuracy (y) against visual tokens (x), front highlighted, points labelled
    with the swept parameters. One objective: it against the first parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["state"] == "COMPLETE"]
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    if len(names) >= 2:
        x_name, y_name = names[1], names[0]
    else:
        x_name, y_name = (params[0] if params else "trial"), names[0]
    xs = [r.get(x_name, r["trial"]) for r in done]
    ys = [r[y_name] for r in done]
    axis.scatter(xs, ys, color="C0", alpha=0.6, label="trials")
    front = sorted((r for r in done if r["pareto"]), key=lambda r: r.get(x_name, r["trial"]))
    if front:
        axis.plot(
            [r.get(x_name, r["trial"]) for r in front],
            [r[y_name] for r in front],
            "o-",
            color="C3",
            label="Pareto front",
        )
    for row, x, y in zip(done, xs, ys, strict=True):
        label = ", ".join(f"{p.split('.')[-1]}={row[p]:.3g}" for p in params if isinstance(row.get(p), (int, float)))
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xlabel(x_name)
    axis.set_ylabel(y_name)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    study: optuna.Study, names: list[str], outputs_dir: str, mlflow_config: Any, parent_run_id: str | None
) -> Path:
    """outputs/sweeps/<study>/{trials.md, trials.json, pareto.png}, also logged to the parent run."""
    directory = Path(outputs_dir) / "sweeps" / study.study_name
    directory.mkdir(parents=True, exist_ok=True)
    rows = summarise(study, names)
    names = names if len(names) == len(study.directions) else [f"objective_{i}" for i in range(len(study.directions))]
    params = sorted({p for t in study.trials for p in t.params})
    write_atomic(directory / "trials.md", markdown(rows))
    write_atomic(directory / "trials.json", json.dumps(rows, indent=2, default=str))
    plot(rows, names, params, directory / "pareto.png")
    if mlflow_config is not None and parent_run_id:
        from visionthink.sweep.tracking import _client

        client, _ = _client(mlflow_config)
        for name in ("trials.md", "trials.json", "pareto.png"):
            client.log_artifact(parent_run_id, str(directory / name))
    return directory
