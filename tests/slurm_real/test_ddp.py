"""One training run over two SLURM nodes (two slurmd on this machine): `hydra/launcher=slurm` with
`trainer=ddp trainer.num_nodes=2` asks SLURM for two nodes of one task each, and Lightning builds
its process group from SLURM's environment (ranks, node list, master address)."""

from __future__ import annotations

import re
import subprocess
import sys

import mlflow
import pytest

from test_sweeps import ROOT, TINY, environment

pytestmark = pytest.mark.slow


def test_a_ddp_run_spans_two_slurm_nodes(tmp_path, two_nodes):
    command = [
        sys.executable, str(ROOT / "src" / "train.py"), "-m", "hydra/launcher=slurm",
        f"hydra.launcher.partition={two_nodes.partition}", "trainer=ddp", "trainer.accelerator=cpu",
        "trainer.precision=32-true", "trainer.devices=1", "trainer.num_nodes=2",
        f"paths.outputs_dir={tmp_path / 'outputs'}", f"paths.data_dir={tmp_path / 'data'}", *TINY,
        "trainer.max_steps=2", "trainer.val_check_interval=2",
    ]  # fmt: skip
    env = {**environment(tmp_path), "SLURM_CONF": str(two_nodes.conf)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visionthink")
    (run,) = client.search_runs([experiment.experiment_id])  # rank 0 alone logs
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/reward")] == [1, 2]
    job_id = run.data.tags["slurm.job_id"]
    job = two_nodes.job_fields(job_id)
    assert job["JobState"] == "COMPLETED" and job["NumNodes"] == "2" and job["NumTasks"] == "2", job

    # Each node's task joined one process group of two
    logs = {path.name: path.read_text() for path in tmp_path.rglob(f"{job_id}_*_log.*")}
    members = sorted(m for text in logs.values() for m in re.findall(r"GLOBAL_RANK: (\d), MEMBER: (\d)/2", text))
    assert members == [("0", "1"), ("1", "2")], logs
