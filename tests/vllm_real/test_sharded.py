"""Training on 2 CPU ranks with real vLLM generating every rollout, one engine per rank. Under
FSDP and ZeRO-3 the policy's full weights are gathered from the shards and pushed into each
engine after every update (the strategies run on CPU through tests/cpu_strategies.py)."""

from __future__ import annotations

import subprocess

import pytest

from conftest import ROOT
from train_runs import environment, history, mlflow_run, train_command
from vllm_real.test_entry_points import IN_SYNC

pytestmark = pytest.mark.slow

TWO_RANKS = ["experiment=vllm_cpu", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
             "trainer.max_steps=2", "trainer.val_check_interval=100", "data.val=null", "optimized_metrics=[]",
             "data.batch_size=4", "grpo.entropy_coef=0.01", "optim.optimizer.lr=1e-3"]  # fmt: skip
STRATEGIES = {
    "ddp": ["trainer=ddp"],
    "fsdp": ["trainer=fsdp", "trainer.strategy._target_=cpu_strategies.CPUFSDPStrategy"],
    "zero3": ["trainer=deepspeed_zero3", "trainer.strategy._target_=cpu_strategies.CPUDeepSpeedStrategy"],
}
COMPARED = ("train/reward", "train/response_tokens", "train/loss", "train/kl", "rollout/logprob_abs_diff")


def test_sharded_policies_push_their_weights_into_vllm_as_ddp_does(tmp_path):
    env = dict(environment(tmp_path), PYTHONPATH=str(ROOT / "tests"))
    curves = {}
    for name, strategy in STRATEGIES.items():
        command = train_command(tmp_path, name, *TWO_RANKS, *strategy)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        client, (run,) = mlflow_run(tmp_path, name)
        curves[name] = {key: history(client, run.info.run_id, key) for key in COMPARED}
    ddp = curves["ddp"]
    assert sorted(ddp["train/loss"]) == [1, 2], "both steps must update the policy"
    # Step 2's rollouts come from the weights pushed after step 1: were they stale or garbled,
    # its rollouts, rewards and vLLM's log-probs against the trainer's would differ.
    assert ddp["rollout/logprob_abs_diff"][2] < IN_SYNC
    for name in ("fsdp", "zero3"):
        for key in COMPARED:
            assert curves[name][key] == pytest.approx(ddp[key], rel=1e-4, abs=1e-6), (name, key)
