"""DeepSpeed ZeRO-2/3 and FSDP on a GPU: three steps of the tiny model in bf16-mixed, then the
checkpoint (DeepSpeed's and FSDP's directories, no reference model), the Hugging Face export
gathered from the shards, and a resumed step. Rollouts are scripted (tests/scripted_train.py):
what is tested is the strategies' update, checkpoints and export."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from train_runs import scripted_run
from visionthink.models import ModelConfig, load_policy
from visionthink.models.loading import checkpoint_policy

pytestmark = pytest.mark.gpu

GPU = ["trainer.devices=1", "trainer.precision=bf16-mixed", "trainer.max_steps=3"]


@pytest.mark.parametrize("trainer", ["deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_a_sharded_strategy_trains_checkpoints_exports_and_resumes(tmp_path, trainer):
    if trainer.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (requirements-gpu.txt has it)")
    if not torch.cuda.is_available():
        pytest.fail("VISIONTHINK_GPU=1 but torch sees no CUDA GPU")
    metrics = scripted_run(tmp_path, trainer, f"trainer={trainer}", *GPU)
    assert metrics["train/optimizer_steps"] == 1.0
    runs = tmp_path / "outputs" / "runs"
    checkpoint = runs / trainer / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir(), f"{trainer} writes a checkpoint directory"
    state = checkpoint_policy(checkpoint)
    initial = load_policy(ModelConfig()).state_dict()
    assert state.keys() == initial.keys()  # the policy, whole, and no reference model
    assert sum(not torch.equal(state[k].float(), v) for k, v in initial.items()) > len(initial) // 2

    exported = load_policy(ModelConfig(name_or_path=str(runs / trainer / "model"))).state_dict()
    for key, value in state.items():
        assert torch.allclose(exported[key].float(), value.float(), rtol=1e-2, atol=1e-3), key
    command = [sys.executable, str(ROOT / "src" / "export.py"), f"checkpoint={checkpoint}", f"output={tmp_path / 'x'}"]
    result = subprocess.run(command, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    scripted_run(tmp_path, trainer, f"trainer={trainer}", *GPU[:-1], "trainer.max_steps=4", "ckpt_path=last")
    assert (runs / trainer / "checkpoints" / "step_000004.ckpt").exists()
