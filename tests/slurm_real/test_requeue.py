"""A training job that SLURM takes back (preemption, `scontrol requeue`) comes back by itself: the
job saves the step in progress and exits without a result, SLURM starts it again, and the restarted
job resumes from the run folder, so that the MLflow run ends FINISHED with each step logged once."""

from __future__ import annotations

import subprocess
import sys
import time

import mlflow
import pytest

from test_sweeps import ROOT, TINY, environment

pytestmark = pytest.mark.slow


def training_run(client, deadline):
    """The MLflow run of the job once it has logged a training step."""
    while time.time() < deadline:
        experiment = client.get_experiment_by_name("visionthink") if client is not None else None
        runs = client.search_runs([experiment.experiment_id]) if experiment is not None else []
        if runs and "train/reward" in runs[0].data.metrics:
            return runs[0]
        time.sleep(0.5)
    raise TimeoutError("the job never logged a training step")


def test_a_requeued_training_job_resumes_and_finishes(tmp_path, cluster):
    steps = 8
    command = [
        sys.executable, str(ROOT / "src" / "train.py"), "-m", "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}", f"paths.outputs_dir={tmp_path / 'outputs'}",
        f"paths.data_dir={tmp_path / 'data'}", *TINY, f"trainer.max_steps={steps}", "trainer.val_check_interval=4",
        "callbacks.model_checkpoint.every_n_train_steps=100", "rollout.sampling.max_new_tokens=48",
    ]  # fmt: skip
    env = {**environment(tmp_path), "SLURM_CONF": str(cluster.conf)}
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    run = training_run(client, time.time() + 600)
    job_id = run.data.tags["slurm.job_id"]
    subprocess.run(["scontrol", "requeue", job_id], env=cluster.env, check=True)

    output, _ = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, output[-3000:]
    job = cluster.job_fields(job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", job
    (resumed,) = client.search_runs([run.info.experiment_id])  # the same run, continued
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/reward")]
    assert sorted(logged) == list(range(1, steps + 1)), logged  # contiguous, each step once

    # The job's logs: the first start stopped after saving, the restart resumed from that checkpoint
    logs = "\n".join(path.read_text() for path in tmp_path.rglob(f"{job_id}_*_log.*"))
    assert "resuming from" in logs and "SLURM restarted this job" in logs, logs[-3000:]
