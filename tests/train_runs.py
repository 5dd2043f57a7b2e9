"""Training runs as a user starts them (`python src/train.py ...` in a subprocess) and what
they left in MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from conftest import ROOT, SMOKE_RUN


def train_command(workdir: Path, run_name: str, *overrides: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "src" / "train.py"),
        f"run_name={run_name}",
        *SMOKE_RUN,
        f"paths.data_dir={workdir / 'data'}",
        f"paths.outputs_dir={workdir / 'outputs'}",
        "data.synthetic.splits={train: 32, val: 8, test: 8}",
        "data.val.limit=4",
        "rollout.sampling.max_new_tokens=16",
        "rollout.val_sampling.max_new_tokens=16",
        *overrides,
    ]  # fmt: skip


def environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    return env


def run(workdir: Path, run_name: str, *overrides: str) -> str:
    """The run's console output (stdout and stderr)."""
    result = subprocess.run(
        train_command(workdir, run_name, *overrides),
        env=environment(workdir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def mlflow_run(workdir: Path, run_name: str):
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visionthink")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    return client, runs


def history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def run_until_checkpoint_then_kill(workdir: Path, run_name: str, *overrides: str) -> Path:
    """Start a run, SIGKILL it as soon as its first checkpoint exists; returns that checkpoint."""
    process = subprocess.Popen(
        train_command(workdir, run_name, *overrides), env=environment(workdir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    last = workdir / "outputs" / "runs" / run_name / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.exists(), "no checkpoint was written before the kill"
    return last


def scripted_run(workdir: Path, run_name: str, *overrides: str) -> dict[str, float]:
    """Train with scripted rollouts (tests/scripted_train.py) in a subprocess, the tiny model, one
    step unless overridden; returns the run's final metrics."""
    command = [
        sys.executable, str(ROOT / "tests" / "scripted_train.py"), f"run_name={run_name}", "model=tiny",
        "prompt=agent", "grpo=default", "optim.scheduler.num_warmup_steps=0", "seed=0", "data.batch_size=4", "rollout.group_size=4", "trainer.max_steps=1",
        "data.val=null", "data.synthetic.splits={train: 32, val: 4, test: 4}", "optimized_metrics=[]",
        "callbacks.model_checkpoint.every_n_train_steps=1", f"paths.outputs_dir={workdir / 'outputs'}",
        f"paths.data_dir={workdir / 'data'}", f"logger.mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        *overrides,
    ]  # fmt: skip
    result = subprocess.run(command, env=environment(workdir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads((workdir / "outputs" / "runs" / run_name / "final_metrics.json").read_text())
