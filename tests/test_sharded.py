"""Sharded training (FSDP) in two CPU processes against one process: the update, the sharded
checkpoint, resuming from it, and the Hugging Face export.

FSDP runs on CPU through tests/cpu_fsdp.py (Lightning's strategy, handed the CPU device FSDP asks
for); rollouts come from a script (tests/scripted_train.py), because rollouts under a sharded
model are vLLM's work (the transformers engine is refused there). DeepSpeed has no CPU path in
Lightning: its tests are in tests/gpu/.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from train_runs import scripted_run
from visionthink.models import ModelConfig, load_policy
from visionthink.models.loading import checkpoint_state

COMMON = [
    "grpo.drop_zero_variance_groups=true",
    # SGD: the first step's weight change is the gradient itself, so it can be compared. Momentum
    # gives the optimizer a state to checkpoint and resume (plain SGD's is empty).
    "optim.optimizer._target_=torch.optim.SGD", "~optim.optimizer.betas", "optim.optimizer.lr=1.0",
    "+optim.optimizer.momentum=0.9",
]  # fmt: skip
FSDP_ON_CPU = [
    "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
    "trainer.strategy._target_=cpu_fsdp.CPUFSDPStrategy",
]  # fmt: skip


def test_fsdp_units_are_the_transformer_blocks_of_any_family(family_model):
    from visionthink.training.strategies import TransformerBlocks

    blocks = TransformerBlocks()
    chosen = [type(m).__name__ for m in family_model.modules() if blocks(m)]  # parents first, as FSDP visits
    config = family_model.config
    assert len(chosen) == config.text_config.num_hidden_layers + config.vision_config.depth
    assert {name.removeprefix("Qwen2_5_").removeprefix("Qwen2") for name in chosen} == {
        "VLDecoderLayer",
        "VLVisionBlock",
    }


def policy_weights(checkpoint) -> dict[str, torch.Tensor]:
    return {k.removeprefix("policy."): v for k, v in checkpoint_state(checkpoint).items() if k.startswith("policy.")}


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process_then_resumes_and_exports(tmp_path):
    one = scripted_run(tmp_path, "one", *COMMON)
    fsdp = scripted_run(tmp_path, "fsdp", *COMMON, *FSDP_ON_CPU)
    # 3 of the 4 groups are dropped (no reward variance), so one rank keeps none: its reference
    # log-probs and its backward pass are padding passes, which the weight gathers of the other
    # rank's passes wait for.
    assert one["train/filtered_groups"] == fsdp["train/filtered_groups"] == 3
    assert one["train/advantage_abs"] > 0
    for key in ("train/reward", "train/accuracy", "train/advantage_abs", "train/kl", "train/loss", "train/entropy"):
        assert fsdp[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

    runs = tmp_path / "outputs" / "runs"
    sharded = runs / "fsdp" / "checkpoints" / "last.ckpt"
    assert sharded.is_dir(), "FSDP writes sharded checkpoints"
    initial = load_policy(ModelConfig()).state_dict()
    one_weights, fsdp_weights = policy_weights(runs / "one" / "checkpoints" / "last.ckpt"), policy_weights(sharded)
    assert fsdp_weights.keys() == one_weights.keys() == initial.keys()  # the reference model is not stored
    moved = 0
    for key, value in one_weights.items():
        step_one, step_fsdp = value - initial[key], fsdp_weights[key] - initial[key]
        assert torch.allclose(step_one, step_fsdp, rtol=1e-3, atol=1e-6), key
        moved += int(step_one.abs().max() > 0)
    assert moved > len(initial) // 2

    # The run's own export (gathered from the shards) and src/export.py on the sharded checkpoint
    exported = load_policy(ModelConfig(name_or_path=str(runs / "fsdp" / "model"))).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in fsdp_weights.items())
    command = [
        sys.executable,
        str(ROOT / "src" / "export.py"),
        f"checkpoint={sharded}",
        f"output={tmp_path / 'export'}",
    ]
    result = subprocess.run(command, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = load_policy(ModelConfig(name_or_path=str(tmp_path / "export"))).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in fsdp_weights.items())

    # Resuming from the sharded checkpoint (model, optimizer and loop state) trains the next step.
    scripted_run(tmp_path, "fsdp", *COMMON, *FSDP_ON_CPU, "ckpt_path=last", "trainer.max_steps=2")
    assert (runs / "fsdp" / "checkpoints" / "step_000002.ckpt").is_dir()
    resumed = policy_weights(runs / "fsdp" / "checkpoints" / "last.ckpt")
    assert any(not torch.equal(resumed[k], v) for k, v in fsdp_weights.items())
    meta = torch.load(runs / "fsdp" / "checkpoints" / "last.ckpt" / "meta.pt", weights_only=False)
    assert meta["global_step"] == 2
