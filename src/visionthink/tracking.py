"""MLflow runs for the entry points that are not Lightning training runs (audit, evaluation, sweeps)."""

from __future__ import annotations

import base64
import io
import os
import random
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock

from visionthink.errors import InputError

# MLflow 3 opens experiments without this tag in its GenAI view (traces, "evaluation runs");
# ours are model training experiments.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def mark_model_training(client: mlflow.MlflowClient, experiment_id: str) -> None:
    client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)


def experiment_for(client: mlflow.MlflowClient, settings: Any) -> str:
    """The id of experiment ``settings.experiment_name``, created (at ``settings.artifact_location``)
    when it does not exist yet, and tagged as model training."""
    experiment = client.get_experiment_by_name(settings.experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(settings.experiment_name, artifact_location=settings.get("artifact_location"))
    )
    mark_model_training(client, experiment_id)
    return experiment_id


def check_tracking_server(tracking_uri: str, timeout: float = 5.0) -> None:
    """A remote tracking server must accept connections before a run starts: MLflow's client
    would retry for minutes after the model has loaded, then fail with a long traceback."""
    parsed = urllib.parse.urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise InputError(
            f"the MLflow tracking server at {tracking_uri} does not answer ({error.strerror or error})",
            "Start it, or fix MLFLOW_TRACKING_URI / logger.mlflow.tracking_uri (unset, runs log to outputs/mlflow.db)",
        ) from None


def check_tracking_servers(cfg: Any) -> None:
    """``check_tracking_server`` for every logger of a training config that has a tracking URI."""
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is not None and logger_cfg.get("tracking_uri"):
            check_tracking_server(str(logger_cfg.tracking_uri))


@contextmanager
def store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Hold while opening an MLflow sqlite store: MLflow creates a new store's tables on first use,
    and processes that start together (the tasks of a multi-node SLURM job) would both create them
    ("duplicate column name"). Other stores need no lock."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield


def end_abandoned_run(tracking_uri: str, run_id: str) -> None:
    """Mark a run that a kill left RUNNING as KILLED (MLflow would show it running forever)."""
    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:  # deleted, or from another tracking store
        return
    if run.info.status == "RUNNING":
        client.set_terminated(run_id, status="KILLED")


@contextmanager
def mlflow_run(
    settings: Any, run_name: str, tags: dict[str, str] | None = None
) -> Iterator[tuple[mlflow.MlflowClient, str]]:
    """Create (or reuse) the experiment ``settings.experiment_name`` and one run in it.

    ``settings`` has ``tracking_uri``, ``experiment_name`` and ``artifact_location``. The run ends
    FINISHED, or FAILED when the body raises.
    """
    check_tracking_server(settings.tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.create_run(experiment_for(client, settings), run_name=run_name, tags=tags or {})
    try:
        yield client, run.info.run_id
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")


def log_evaluation(cfg: Any, results: dict[str, dict[str, dict[str, float]]], output: Any) -> None:
    """One MLflow run per evaluation: metrics named <benchmark>/<mode>/<figure>, the outputs as artifacts."""
    import math

    with mlflow_run(cfg.mlflow, run_name=f"eval-{cfg.run_name}") as (client, run_id):
        client.log_param(run_id, "model", cfg.model.get("name_or_path") or cfg.model.get("tiny_name"))
        client.log_param(run_id, "checkpoint", str(cfg.get("checkpoint")))
        client.log_param(run_id, "modes", ",".join(cfg.eval.modes))
        for benchmark, modes in results.items():
            for mode, figures in modes.items():
                for name, value in figures.items():
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        client.log_metric(run_id, f"{benchmark}/{mode}/{name}".replace("mme/", "mme_"), float(value))
        for name in ("results.json", "table.md", "score_vs_tokens.png"):
            client.log_artifact(run_id, str(output / name))


def image_data_uri(image: Any) -> str:
    """A PIL image as a PNG data URI, the form the MLflow trace view shows inline."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def log_rollout_traces(logger: Any, step: int, rows: list[tuple[Any, Any]]) -> None:
    """One MLflow trace per trajectory (Traces tab, linked to the run): the question at the root,
    and one span per turn with the image the model saw, its text and its token count."""
    # Traces are exported through the process-wide tracking URI, asynchronously.
    client = logger.experiment
    mlflow.set_tracking_uri(client.tracking_uri)
    # Span ids come from Python's global RNG, which the run's seed fixes: two runs of one seed
    # would write the same trace ids. Draw them from fresh entropy and leave training's stream as it was.
    training_random_state = random.getstate()
    random.seed(os.urandom(16))
    try:
        _log_traces(client, logger, step, rows)
    finally:
        random.setstate(training_random_state)
    mlflow.flush_trace_async_logging()


def _log_traces(client: Any, logger: Any, step: int, rows: list[tuple[Any, Any]]) -> None:
    for trajectory, score in rows:
        sample = trajectory.episode.sample
        root = client.start_trace(
            f"rollout step {step}",
            span_type="AGENT",
            inputs={"question": sample.question, "answer": sample.answer},
            experiment_id=logger.experiment_id,
            run_id=logger.run_id,
            tags={"step": str(step), "group": str(trajectory.group), "rollout": str(trajectory.rollout)},
        )
        for index, turn in enumerate(trajectory.turns):
            # Turn 1 sees the low view; a turn after a resize also sees the image it returned.
            image = trajectory.images[min(index, len(trajectory.images) - 1)]
            span = client.start_span(
                f"turn {index + 1}",
                trace_id=root.trace_id,
                parent_id=root.span_id,
                span_type="LLM",
                inputs={"image": image_data_uri(image.image), "visual_tokens": image.visual_tokens},
            )
            outputs = {"text": turn.text, "generated_tokens": turn.generated_tokens, "truncated": turn.truncated}
            client.end_span(root.trace_id, span.span_id, outputs=outputs)
        client.end_trace(
            root.trace_id,
            outputs={
                "reward": score.reward,
                "used_high_res": trajectory.used_high_res,
                "visual_tokens": trajectory.visual_tokens,
                "end_reason": trajectory.end_reason,
            },
        )
