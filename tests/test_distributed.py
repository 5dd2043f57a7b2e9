"""Sharding, seeded rollouts and metric combination, and 2-process DDP on CPU against one process."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest
import torch

from conftest import CONF_DIR, ROOT, SMALL_RESOLUTION, SMOKE_RUN, compose_train
from visionthink.data.sampler import GlobalBatchSampler
from visionthink.metrics.distributed import Slowest, Summed, combine
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig, TransformersRolloutEngine


def test_global_batches_are_the_same_for_any_number_of_ranks_and_resume():
    single = GlobalBatchSampler(20, 4, seed=3)
    ranks = [GlobalBatchSampler(20, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for whole, part0, part1 in zip(single, *ranks, strict=True):
        assert sorted(whole) == sorted(part0 + part1) and len(part0) == len(part1) == 2
    resumed = GlobalBatchSampler(20, 4, seed=3)
    first = iter(resumed)
    consumed = [next(first) for _ in range(2)]
    state = resumed.state_dict()
    fresh = GlobalBatchSampler(20, 4, seed=3)
    fresh.load_state_dict(state)
    reference = list(GlobalBatchSampler(20, 4, seed=3))
    assert consumed + list(fresh) == reference
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        GlobalBatchSampler(20, 3, world_size=2)


def test_rollouts_do_not_depend_on_batch_composition(sft_checkpoint, processor, samples, agent_prompt):
    from visionthink.episode import EpisodeBuilder
    from visionthink.models import ModelConfig, load_policy

    model = load_policy(ModelConfig(name_or_path=str(sft_checkpoint))).eval()
    builder = EpisodeBuilder(processor, agent_prompt, SMALL_RESOLUTION)
    driver = EpisodeDriver(TransformersRolloutEngine(model, processor.tokenizer), builder, RolloutConfig(group_size=4))
    sampling = SamplingConfig(max_new_tokens=48)
    together = driver.run([builder.build(s) for s in samples[:8]], sampling, seed=5)
    apart = driver.run([builder.build(s) for s in samples[:4]], sampling, seed=5)
    apart += driver.run([builder.build(s) for s in samples[4:8]], sampling, seed=5)
    assert sum(len(t.turns) == 2 for t in together) > 0, "the second turn must be covered too"
    assert [t.token_ids for t in together] == [t.token_ids for t in apart]
    other_seed = driver.run([builder.build(s) for s in samples[:4]], sampling, seed=6)
    assert [t.token_ids for t in other_seed] != [t.token_ids for t in apart[:16]]
    assert together[0].token_ids != together[1].token_ids  # the rollouts of a group differ


def test_metrics_combine_counts_durations_and_means():
    """Each value says how it combines: counts add up, durations take the slowest rank, and plain
    values are means weighted by the ranks' trajectory counts, whatever their names."""
    combined = combine(
        [
            ({"train/reward": 1.0, "any/new_count": Summed(2), "any/new_seconds": Slowest(3.0), "train/x": 5.0}, 1),
            ({"train/reward": 0.0, "any/new_count": Summed(1), "any/new_seconds": Slowest(4.0)}, 3),
        ]
    )
    assert combined == {"train/reward": 0.25, "any/new_count": 3, "any/new_seconds": 4.0, "train/x": 5.0}
    assert all(type(value) is float for value in combined.values())


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")))
def test_every_strategy_config_instantiates(name):
    from hydra.utils import instantiate

    cfg = compose_train([f"trainer={name}"])
    strategy = cfg.trainer.get("strategy")
    if strategy is not None:
        instantiate(strategy)
    assert cfg.trainer.use_distributed_sampler is False


def training_metrics(workdir, run_name):
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visionthink")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    return {key: value for key, value in run.data.metrics.items()}


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, sft_checkpoint):
    common = [
        *SMOKE_RUN, f"paths.outputs_dir={tmp_path / 'outputs'}", f"paths.data_dir={tmp_path / 'data'}",
        "data.synthetic.splits={train: 32, val: 4, test: 4}", "data.batch_size=4", "trainer.max_steps=1",
        "trainer.val_check_interval=100", "data.val=null", f"model.name_or_path={sft_checkpoint}",
        "rollout.sampling.max_new_tokens=48", "optimized_metrics=[train/reward]",
        # Plain SGD: the weight change is the gradient itself, so it can be compared.
        "optim.optimizer._target_=torch.optim.SGD", "~optim.optimizer.betas", "optim.optimizer.lr=1.0",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    runs = {
        "one": [],
        "ddp": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"],
    }
    for name, extra in runs.items():
        command = [sys.executable, str(ROOT / "src" / "train.py"), f"run_name={name}", *common, *extra]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    one, ddp = training_metrics(tmp_path, "one"), training_metrics(tmp_path, "ddp")
    assert one["train/advantage_abs"] > 0, "the SFT model should give rewards that vary within groups"
    for key in ("train/reward", "train/format", "train/accuracy", "train/response_tokens", "train/visual_tokens",
                "train/advantage_abs", "train/filtered_groups", "train/loss"):  # fmt: skip
        assert ddp[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

    def weights(name):
        state = torch.load(tmp_path / "outputs" / "runs" / name / "checkpoints" / "last.ckpt", weights_only=True)
        return {k: v for k, v in state["state_dict"].items() if k.startswith("policy.")}

    from visionthink.models import ModelConfig, load_policy

    initial = load_policy(ModelConfig(name_or_path=str(sft_checkpoint))).state_dict()
    one_w, ddp_w = weights("one"), weights("ddp")
    moved = 0
    for key, value in one_w.items():
        step_one = value - initial[key.removeprefix("policy.")]
        step_ddp = ddp_w[key] - initial[key.removeprefix("policy.")]
        assert torch.allclose(step_one, step_ddp, rtol=1e-3, atol=1e-6), key
        moved += int(step_one.abs().max() > 0)
    assert moved > 0
    # The Hugging Face export of the DDP run (rank 0 writes it) holds its trained weights.
    exported = load_policy(ModelConfig(name_or_path=str(tmp_path / "outputs" / "runs" / "ddp" / "model"))).state_dict()
    assert all(torch.equal(exported[k.removeprefix("policy.")], v) for k, v in ddp_w.items())
