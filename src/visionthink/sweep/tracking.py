"""One MLflow parent run per Optuna study; every trial's run nests under it."""

from __future__ import annotations

from typing import Any

import mlflow

from visionthink.tracking import mark_model_training

STUDY_TAG = "optuna.study"


def _client(mlflow_config: Any) -> tuple[mlflow.MlflowClient, str]:
    client = mlflow.MlflowClient(tracking_uri=mlflow_config.tracking_uri)
    experiment = client.get_experiment_by_name(mlflow_config.experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            mlflow_config.experiment_name, artifact_location=mlflow_config.get("artifact_location")
        )
    )
    mark_model_training(client, experiment_id)
    return client, experiment_id


def sweep_parent_run(config: Any, study_name: str) -> str:
    """The run id of the study's parent run, created on the first sweep and reused on resume."""
    client, experiment_id = _client(config.logger.mlflow)
    existing = client.search_runs(
        [experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`sweep.parent` = 'true'"
    )
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")  # a resumed sweep
        return run_id
    run = client.create_run(
        experiment_id, run_name=f"sweep-{study_name}", tags={STUDY_TAG: study_name, "sweep.parent": "true"}
    )
    return run.info.run_id


def trial_tags(sweep: Any) -> dict[str, str]:
    """MLflow tags of a trial's run (``sweep`` is the ``sweep`` node the sweeper adds)."""
    if not sweep:
        return {}
    return {
        "mlflow.parentRunId": str(sweep.parent_run_id),
        STUDY_TAG: str(sweep.study),
        "optuna.trial": str(sweep.trial),
    }


def end_sweep_parent_run(config: Any, run_id: str) -> None:
    client, _ = _client(config.logger.mlflow)
    client.set_terminated(run_id, status="FINISHED")


def mark_trial_runs_killed(mlflow_config: Any, study_name: str, trial: int) -> None:
    """The MLflow runs of a trial that a kill interrupted end KILLED instead of RUNNING forever."""
    client, experiment_id = _client(mlflow_config)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`optuna.trial` = '{trial}' "
        "and attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
