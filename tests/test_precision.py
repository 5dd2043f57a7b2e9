"""Training on GPUs as configured: the trainable policy keeps fp32 master weights under bf16
compute, and a config that would update bf16 weights directly stops at start-up, as do
transformers rollouts on a sharded policy."""

from __future__ import annotations

import pytest
import torch

from conftest import TOOL_TURN, answer_turn, changed_weights, compose_train, train_in_process
from visionthink.config_checks import check_master_weights, check_sharded_rollouts
from visionthink.errors import InputError
from visionthink.models import ModelConfig, load_policy
from visionthink.models.loading import checkpoint_policy


def test_one_bf16_mixed_step_at_the_papers_learning_rate_moves_essentially_every_weight(tmp_path):
    # The entropy bonus gives every weight a gradient; the script gives the groups varied rewards.
    script = lambda request: TOOL_TURN if len(request.images) == 1 and request.seed % 2 else answer_turn("red")  # noqa: E731
    train_in_process(
        tmp_path,
        ["trainer.precision=bf16-mixed", "optim.optimizer.lr=1e-6", "optim.vision_lr_scale=1.0", "trainer.max_steps=1",
         "grpo.entropy_coef=0.01", "grpo.beta=0.001", "data.val=null", "optimized_metrics=[]",
         "callbacks.model_checkpoint.every_n_train_steps=1"],
        script=script,
    )  # fmt: skip
    trained = checkpoint_policy(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(value.dtype == torch.float32 for value in trained.values())
    # A few vision-tower gradients underflow to zero in bf16 compute. With bf16 weights AdamW at
    # this rate changes about 2% of them (the problem this guards against).
    changed, total = changed_weights(trained, load_policy(ModelConfig()).state_dict())
    assert changed / total > 0.95, f"{changed} of {total} weights changed"


@pytest.mark.parametrize(
    "overrides,problem",
    [
        (["model.dtype=bfloat16"], "model.dtype=bfloat16 would make the optimizer update"),
        (["trainer.precision=bf16-true"], "trainer.precision=bf16-true casts the weights"),
    ],
)
def test_updating_low_precision_weights_directly_is_refused(overrides, problem):
    with pytest.raises(InputError, match=problem):
        check_master_weights(compose_train(overrides))


def test_the_paper_recipes_keep_fp32_master_weights():
    for experiment in ("visionthink_7b", "visionthink_3b"):
        cfg = compose_train([f"experiment={experiment}"])
        assert cfg.model.dtype == "float32" and cfg.trainer.precision == "bf16-mixed"
        check_master_weights(cfg)
    check_master_weights(
        compose_train(["experiment=visionthink_7b", "trainer=deepspeed_zero2", "model.dtype=bfloat16"])
    )


def test_transformers_rollouts_on_a_sharded_policy_are_refused():
    refused = [["trainer=fsdp"], ["trainer=fsdp", "trainer.devices=1"], ["trainer=deepspeed_zero3"]]
    for overrides in refused:
        with pytest.raises(InputError, match="cannot generate with a sharded policy"):
            check_sharded_rollouts(compose_train([*overrides, "rollout=hf"]))
    for overrides in (["trainer=fsdp", "rollout=vllm"], ["trainer=deepspeed_zero3", "rollout=vllm"],
                      ["trainer=deepspeed_zero3", "rollout=hf", "trainer.devices=1"],
                      ["trainer=deepspeed_zero2", "rollout=hf"]):  # fmt: skip
        check_sharded_rollouts(compose_train(overrides))


def test_deepspeed_clips_gradients_at_the_grpo_norm():
    """Lightning's clip call does nothing under DeepSpeed, which clips in its own step by its
    config's gradient_clipping (0, off, unless set): the module sets it from grpo.max_grad_norm."""
    from types import SimpleNamespace

    from hydra.utils import instantiate
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from visionthink.training.run import build_module

    cfg = compose_train(["trainer=deepspeed_zero2", "grpo.max_grad_norm=0.5"])
    module = build_module(cfg, instantiate(cfg.resolution))
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, DeepSpeedStrategy) and "gradient_clipping" not in strategy.config
    module._trainer = SimpleNamespace(strategy=strategy, precision="bf16-mixed")
    module.setup("fit")
    assert strategy.config["gradient_clipping"] == 0.5
