"""The theta sweep scheduled by a real SLURM: `hydra/launcher=slurm` as shipped, with the partition
of the local cluster, on the tiny model."""

from __future__ import annotations

import subprocess
import time

import mlflow
import pytest
from optuna.trial import TrialState

from hydra_plugins.visionthink_optuna.sweeper import INTERRUPTED, RETRY_OF, SLURM_JOB
from test_sweeps import environment, load, sweep_command

pytestmark = pytest.mark.slow


def slurm_sweep(workdir, cluster, *extra):
    command = sweep_command(
        workdir, "hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", *extra,
    )  # fmt: skip
    env = {**environment(workdir), "SLURM_CONF": str(cluster.conf)}
    return command, env


def mlflow_trial_runs(workdir):
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visionthink")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`sweep.parent` = 'true'")
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, children


def test_a_theta_sweep_runs_as_slurm_jobs(tmp_path, cluster):
    command, env = slurm_sweep(tmp_path, cluster)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # Job states come from squeue: no sacct errors on a cluster without accounting
    assert "accounting storage is disabled" not in result.stderr, result.stderr[-3000:]

    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    job_ids = [t.user_attrs[SLURM_JOB] for t in trials]
    # n_jobs=2: the first two trials are the tasks of one job array, the third a job of its own
    assert len(set(job_ids)) == 3 and job_ids[0].split("_")[0] == job_ids[1].split("_")[0] != job_ids[2], job_ids
    assert cluster.job_states(job_ids) == dict.fromkeys(job_ids, "COMPLETED")

    parent, children = mlflow_trial_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    runs = {r.data.tags["optuna.trial"]: r for r in children}
    assert set(runs) == {str(t.number) for t in trials}
    for trial in trials:
        run = runs[str(trial.number)]
        assert run.info.status == "FINISHED" and run.data.tags["slurm.job_id"] == trial.user_attrs[SLURM_JOB]
    report = tmp_path / "outputs" / "sweeps" / "theta"
    assert (report / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "reward.penalty_theta" in (report / "trials.md").read_text()


def training_trial_job(workdir, deadline):
    """The job id of a trial that is in its training loop (its run has logged a step)."""
    while time.time() < deadline:
        try:
            _, children = mlflow_trial_runs(workdir)
        except Exception:  # the store or the parent run is not there yet
            children = []
        started = [r.data.tags.get("slurm.job_id") for r in children if r.info.status == "RUNNING" and r.data.metrics]
        if started and started[0]:
            return started[0]
        time.sleep(0.5)
    raise TimeoutError("no trial started training")


def test_a_cancelled_trial_is_requeued_by_a_rerun(tmp_path, cluster):
    # Longer trials, so that the cancel lands mid-training
    command, env = slurm_sweep(tmp_path, cluster, "trainer.max_steps=6", "trainer.val_check_interval=6")
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = training_trial_job(tmp_path, time.time() + 600)
    subprocess.run(["scancel", job], env=cluster.env, check=True)
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode != 0 and "Run the same command again" in output, output[-3000:]

    trials = load(tmp_path).get_trials()
    (cancelled,) = [t for t in trials if t.state == TrialState.FAIL]
    assert cancelled.user_attrs[INTERRUPTED] and cancelled.user_attrs[SLURM_JOB] == job
    assert cluster.job_states([job]) == {job: "CANCELLED"}
    _, children = mlflow_trial_runs(tmp_path)
    (run,) = [r for r in children if r.data.tags["optuna.trial"] == str(cancelled.number)]
    assert run.info.status == "KILLED"

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    (retry,) = [t for t in complete if t.user_attrs.get(RETRY_OF) == cancelled.number]
    assert retry.params == cancelled.params
    parent, children = mlflow_trial_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children if r.data.tags["optuna.trial"] != str(cancelled.number))
