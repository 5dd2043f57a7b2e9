"""Optuna sweeps through our Hydra sweeper: resume after a kill, failed trials, reports, SLURM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import ROOT, SMOKE_RUN

sys.path.insert(0, str(ROOT / "src"))
from hydra_plugins.visionthink_optuna.sweeper import INTERRUPTED, distribution  # noqa: E402

TINY = [
    *SMOKE_RUN, "trainer.max_steps=1", "data.val.limit=2", "rollout.sampling.max_new_tokens=8",
    "rollout.val_sampling.max_new_tokens=8", "data.synthetic.splits={train: 16, val: 4, test: 4}",
]  # fmt: skip


def test_sweep_overrides_become_optuna_distributions():
    parser = OverridesParser.create()
    cases = {
        "a=interval(0.0, 1.0)": FloatDistribution(0.0, 1.0),
        "a=tag(log, interval(0.001, 1.0))": FloatDistribution(0.001, 1.0, log=True),
        "a=int(interval(1, 5))": IntDistribution(1, 5),
        "a=range(2, 10, 2)": IntDistribution(2, 8, step=2),
        "a=choice(paper, upstream)": CategoricalDistribution(["paper", "upstream"]),
    }
    for line, expected in cases.items():
        assert distribution(parser.parse_override(line)) == expected, line


def sweep_command(workdir, *extra):
    return [
        sys.executable, str(ROOT / "src" / "train.py"), "-m", "hparams_search=theta",
        f"paths.outputs_dir={workdir / 'outputs'}", f"paths.data_dir={workdir / 'data'}", *TINY, *extra,
    ]  # fmt: skip


def environment(workdir):
    return dict(os.environ, HF_HUB_OFFLINE="1", MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")


def load(workdir, name="theta"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'outputs' / 'optuna.db'}")


def trial_run_started(workdir, trial) -> bool:
    """Whether the trial's MLflow run exists yet (the kill should leave one behind)."""
    try:
        client = mlflow.MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("visionthink")
        return bool(experiment) and bool(
            client.search_runs([experiment.experiment_id], filter_string=f"tags.`optuna.trial` = '{trial.number}'")
        )
    except Exception:  # the store is being created
        return False


@pytest.mark.slow
def test_sweep_resumes_after_a_kill_and_reports(tmp_path):
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=3")
    process = subprocess.Popen(command, env=environment(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            trials = load(tmp_path).get_trials(deepcopy=False)
        except Exception:  # the study is not created yet
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if any(t.state == TrialState.COMPLETE for t in trials) and running and trial_run_started(tmp_path, running[0]):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = [t for t in load(tmp_path).get_trials() if t.state == TrialState.RUNNING]
    assert len(interrupted) == 1, "the kill should land while a trial runs"

    result = subprocess.run(command, env=environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 3 and len(failed) == 1 and failed[0].user_attrs[INTERRUPTED]
    retry = [t for t in complete if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert retry and retry[0].params == interrupted[0].params
    for trial in complete:
        assert len(trial.values) == 2  # val/accuracy, val/visual_tokens

    report = tmp_path / "outputs" / "sweeps" / "theta"
    assert (report / "pareto.png").read_bytes()[:4] == b"\x89PNG" and "reward.penalty_theta" in (
        report / "trials.md"
    ).read_text()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visionthink")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`sweep.parent` = 'true'")
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert {r.data.tags["optuna.trial"] for r in children} >= {str(t.number) for t in complete}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"pareto.png", "trials.md"}
    # Every MLflow run ends in a terminal state: the parent FINISHED, the killed trial's run KILLED.
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    statuses = {r.data.tags["optuna.trial"]: r.info.status for r in children}
    assert statuses[str(interrupted[0].number)] == "KILLED"
    assert all(statuses[str(t.number)] == "FINISHED" for t in complete)
    # The resumed sweep's sampler proposes new values, not those of trials already finished.
    fresh = [t for t in complete if "retry_of" not in t.user_attrs]
    values = [t.params["reward.penalty_theta"] for t in fresh]
    assert len(set(values)) == len(values), values


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=4", "reward.penalty_mode=choice(paper,bogus)")
    result = subprocess.run(command, env=environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    states = [t.state for t in load(tmp_path).get_trials()]
    assert len(states) == 4 and TrialState.FAIL in states and TrialState.COMPLETE in states


@pytest.mark.slow
def test_two_trials_through_the_submitit_local_launcher(tmp_path):
    command = sweep_command(
        tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra/launcher=submitit_local"
    )
    result = subprocess.run(command, env=environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state for t in load(tmp_path).get_trials()] == [TrialState.COMPLETE] * 2


@pytest.mark.parametrize(
    ("trainer", "present", "absent"),
    [
        (
            ["trainer=deepspeed_zero2", "trainer.num_nodes=2"],
            ["--nodes=2", "--gpus-per-node=8", "--ntasks-per-node=8"],
            ["--mem=", "--cpus-per-task="],
        ),
        (["trainer=cpu"], ["--nodes=1", "--ntasks-per-node=1"], ["--gpus-per-node"]),
    ],
)
def test_slurm_launcher_takes_its_layout_from_the_trainer(tmp_path, monkeypatch, trainer, present, absent):
    """The sbatch script submitit renders for a trial: one task per device, GPUs only for a GPU
    trainer (`make test-slurm` submits such scripts to a real SLURM)."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    import hydra_plugins.visionthink_slurm.launcher  # noqa: F401 (registers the gpus_per_node resolver)

    # Rendering only: submitit's Slurm executor looks for srun before it writes a script.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=vt-proj", *trainer]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    launcher.pop("_target_")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    # As the launcher does: max_num_timeout goes to the executor, the rest to update_parameters.
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=str(tmp_path / "%j"), slurm_max_num_timeout=launcher.pop("max_num_timeout")
    )
    launcher.pop("submitit_folder")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    text = executor._executor._make_submission_file_text("python src/train.py run_name=trial0", "uid")
    expected = ["--partition=gpu", "--account=vt-proj", "--time=1440", *present]
    assert all(f"#SBATCH {line}" in text for line in expected), text
    assert not any(f"#SBATCH {line}" in text for line in absent), text
    assert f"source {ROOT}/.venv/bin/activate" in text and "export HF_HUB_OFFLINE=1" in text
