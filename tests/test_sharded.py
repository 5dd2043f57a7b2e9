"""Sharded training (FSDP, DeepSpeed ZeRO-2 and ZeRO-3) in two CPU processes against one process:
the update, the sharded checkpoint, resuming from it, the Hugging Face export, and fp32 master
weights under bf16-mixed.

The strategies run on CPU through tests/cpu_strategies.py (Lightning's strategies, past their
GPU-only checks); rollouts come from a script (tests/scripted_train.py), because rollouts under a
sharded model are vLLM's work (the transformers engine is refused there). tests/gpu_real runs
them on a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, changed_weights, start_up_error
from train_runs import scripted_run
from visionthink.models import ModelConfig, load_policy
from visionthink.models.loading import checkpoint_policy

# One worker runs this file under `make test-slow` (xdist's loadgroup): its one-process references
# (module fixtures, a training run each) are then built once
pytestmark = pytest.mark.xdist_group("sharded")

COMMON = [
    # Two backward passes per optimizer step (4 rollouts per group, 2 per micro-batch)
    "grpo.drop_zero_variance_groups=true", "grpo.micro_batch_size=2",
    # SGD: the first step's weight change is the gradient itself, so it can be compared. Momentum
    # gives the optimizer a state to checkpoint and resume (plain SGD's is empty).
    "optim.optimizer._target_=torch.optim.SGD", "~optim.optimizer.betas", "optim.optimizer.lr=1.0",
    "+optim.optimizer.momentum=0.9",
]  # fmt: skip
ON_CPU = {
    "fsdp": ["trainer=fsdp", "trainer.strategy._target_=cpu_strategies.CPUFSDPStrategy"],
    "deepspeed_zero2": ["trainer=deepspeed_zero2", "trainer.strategy._target_=cpu_strategies.CPUDeepSpeedStrategy"],
    "deepspeed_zero3": ["trainer=deepspeed_zero3", "trainer.strategy._target_=cpu_strategies.CPUDeepSpeedStrategy"],
}
TWO_CPU_PROCESSES = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same step in one process: (its final metrics, its trained policy, the initial policy)."""
    workdir = tmp_path_factory.mktemp("one")
    metrics = scripted_run(workdir, "one", *COMMON)
    trained = checkpoint_policy(workdir / "outputs" / "runs" / "one" / "checkpoints" / "last.ckpt")
    return metrics, trained, load_policy(ModelConfig()).state_dict()


def test_fsdp_units_are_the_transformer_blocks_of_any_family(family):
    from visionthink.training.strategies import TransformerBlocks

    blocks = TransformerBlocks()
    chosen = [type(m).__name__ for m in family.model.modules() if blocks(m)]  # parents first, as FSDP visits
    config = family.model.config
    assert len(chosen) == config.text_config.num_hidden_layers + config.vision_config.depth
    kinds = {re.sub(r"^Qwen[0-9_]*", "", name) for name in chosen}
    assert kinds in (
        {"VLDecoderLayer", "VLVisionBlock"},
        {"VLTextDecoderLayer", "VLVisionBlock"},
        {"DecoderLayer", "VisionBlock"},
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(ON_CPU))
def test_two_sharded_processes_match_one_process_then_resume_and_export(tmp_path, one_process, strategy):
    one, one_weights, initial = one_process
    sharded_run = [*COMMON, *ON_CPU[strategy], *TWO_CPU_PROCESSES]
    two = scripted_run(tmp_path, strategy, *sharded_run)
    # 3 of the 4 groups are dropped (no reward variance), so one rank keeps none: its reference
    # log-probs and its backward pass are padding passes, which the weight gathers of the other
    # rank's passes wait for (FSDP, ZeRO-3).
    assert one["train/filtered_groups"] == two["train/filtered_groups"] == 3
    assert one["train/advantage_abs"] > 0
    for key in ("train/reward", "train/accuracy", "train/advantage_abs", "train/kl", "train/loss", "train/entropy"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

    runs = tmp_path / "outputs" / "runs"
    checkpoint = runs / strategy / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir(), "the sharded strategies write checkpoint directories"
    trained = checkpoint_policy(checkpoint)
    assert trained.keys() == initial.keys()  # the whole policy, and no reference model
    moved = 0
    for key, value in one_weights.items():
        step_one, step_two = value - initial[key], trained[key] - initial[key]
        assert torch.allclose(step_one, step_two, rtol=1e-3, atol=1e-6), key
        moved += int(step_one.abs().max() > 0)
    assert moved > len(initial) // 2

    # The run's own export (gathered from the shards) and src/export.py on the checkpoint directory
    exported = load_policy(ModelConfig(name_or_path=str(runs / strategy / "model"))).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in trained.items())
    command = [sys.executable, str(ROOT / "src" / "export.py"), f"checkpoint={checkpoint}", f"output={tmp_path / 'x'}"]
    result = subprocess.run(command, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = load_policy(ModelConfig(name_or_path=str(tmp_path / "x"))).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in trained.items())

    # Resuming from the checkpoint directory (model, optimizer and loop state) trains the next step.
    scripted_run(tmp_path, strategy, *sharded_run, "ckpt_path=last", "trainer.max_steps=2")
    assert (runs / strategy / "checkpoints" / "step_000002.ckpt").is_dir()
    resumed = checkpoint_policy(runs / strategy / "checkpoints" / "last.ckpt")
    assert any(not torch.equal(resumed[k], v) for k, v in trained.items())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(ON_CPU))
def test_a_bf16_mixed_step_at_the_papers_learning_rate_moves_essentially_every_weight(tmp_path, strategy):
    """The sharded strategies' mixed precision keeps fp32 master weights: at lr 1e-6 an update of
    bf16 weights would change about 2% of them (tests/test_precision.py)."""
    scripted_run(
        tmp_path, strategy, *ON_CPU[strategy], "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.precision=bf16-mixed", "optim.optimizer.lr=1e-6", "optim.vision_lr_scale=1.0", "grpo.entropy_coef=0.01",
    )  # fmt: skip
    trained = checkpoint_policy(tmp_path / "outputs" / "runs" / strategy / "checkpoints" / "last.ckpt")
    assert {value.dtype for value in trained.values()} == {torch.float32}
    changed, total = changed_weights(trained, load_policy(ModelConfig()).state_dict())
    assert changed / total > 0.95, f"{changed} of {total} weights changed"


LORA = ["model.lora.rank=4"]
LORA_STRATEGIES = {"ddp": ["trainer=ddp"], "fsdp": ON_CPU["fsdp"], "deepspeed_zero2": ON_CPU["deepspeed_zero2"]}


def merged_checkpoint(checkpoint) -> dict[str, torch.Tensor]:
    from visionthink.models.loading import load_trained_policy

    return load_trained_policy(ModelConfig(), str(checkpoint), {})[1].state_dict()


@pytest.fixture(scope="module")
def one_lora_process(tmp_path_factory):
    """The LoRA step in one process: (its final metrics, the merged trained policy)."""
    workdir = tmp_path_factory.mktemp("one_lora")
    metrics = scripted_run(workdir, "one", *COMMON, *LORA)
    return metrics, merged_checkpoint(workdir / "outputs" / "runs" / "one" / "checkpoints" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(LORA_STRATEGIES))
def test_lora_in_two_processes_matches_one_process(tmp_path, one_lora_process, strategy):
    """The adapters' step under DDP, FSDP (frozen and trainable weights in one shard unit) and
    ZeRO-2 equals one process's; the checkpoint gives the same merged model; the export runs."""
    one, one_merged = one_lora_process
    two = scripted_run(tmp_path, strategy, *COMMON, *LORA, *LORA_STRATEGIES[strategy], *TWO_CPU_PROCESSES)
    for key in ("train/reward", "train/advantage_abs", "train/kl", "train/loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    runs = tmp_path / "outputs" / "runs"
    merged = merged_checkpoint(runs / strategy / "checkpoints" / "last.ckpt")
    initial = load_policy(ModelConfig()).state_dict()
    moved = [k for k, v in one_merged.items() if not torch.equal(v, initial[k])]
    assert moved and all(".visual." not in k for k in moved)
    for key, value in one_merged.items():
        assert torch.allclose(merged[key] - initial[key], value - initial[key], rtol=1e-3, atol=1e-6), key
    exported = load_policy(ModelConfig(name_or_path=str(runs / strategy / "model"))).state_dict()
    assert all(torch.allclose(exported[k], v, atol=1e-6) for k, v in merged.items())
    assert (runs / strategy / "model" / "adapter" / "adapter_config.json").is_file()


def test_lora_under_zero3_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    line = start_up_error(capsys, monkeypatch, "train.py", *LORA, *ON_CPU["deepspeed_zero3"], *TWO_CPU_PROCESSES,
                          f"paths.outputs_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}")  # fmt: skip
    assert "LoRA does not run under DeepSpeed ZeRO-3" in line
