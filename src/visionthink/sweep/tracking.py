"""One MLflow parent run per Optuna study; every trial's run nests under it."""

from __future__ import annotations

import os
from typing import Any

import mlflow

from visionthink.tracking import experiment_for

STUDY_TAG = "optuna.study"


def _client(mlflow_config: Any) -> tuple[mlflow.MlflowClient, str]:
    client = mlflow.MlflowClient(tracking_uri=mlflow_config.tracking_uri)
    return client, experiment_for(client, mlflow_config)


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


def slurm_job_id() -> str | None:
    """This process's SLURM job, as squeue and scontrol name it (an array task: ``<array job>_<task>``)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


def slurm_tags() -> dict[str, str]:
    """The SLURM job a run ran in."""
    job = slurm_job_id()
    return {"slurm.job_id": job} if job else {}


def end_sweep_parent_run(config: Any, run_id: str, status: str = "FINISHED") -> None:
    client, _ = _client(config.logger.mlflow)
    client.set_terminated(run_id, status=status)


def mark_trial_runs_killed(mlflow_config: Any, study_name: str, trial: int) -> None:
    """The MLflow runs of a trial that a kill or a cancel interrupted end KILLED (instead of
    RUNNING forever, or FAILED as if the trial itself had gone wrong)."""
    client, experiment_id = _client(mlflow_config)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`optuna.trial` = '{trial}' "
        "and attributes.status != 'FINISHED'",
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="KILLED")
