"""LoRA through PEFT: which weights train, the log-probs and gradients of an adapted model against
the base weights plus B @ A computed by hand, the reference with adapters off, bad settings."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from conftest import TOOL_TURN, answer_turn
from visionthink.errors import InputError
from visionthink.grpo.logprobs import token_logprobs
from visionthink.models import ModelConfig, load_policy
from visionthink.models.lora import LoraSettings, adapter_targets, attach_lora, reference_model
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig


@pytest.fixture
def trajectories(builder, samples, scripted):
    def script(request):
        if len(request.images) > 1:
            return answer_turn("7")
        return [TOOL_TURN, answer_turn("red")][request.seed % 2]

    driver = EpisodeDriver(scripted(script), builder, RolloutConfig(group_size=2))
    return driver.run([builder.build(s) for s in samples[:2]], SamplingConfig(), seed=3)


def adapted(tiny_path, **settings):
    torch.manual_seed(0)
    policy = attach_lora(load_policy(ModelConfig(), tiny_path), LoraSettings(**{"rank": 4, **settings}))
    # PEFT starts B at zero (the base model's outputs); random B makes the comparison bite
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    return policy


def test_only_the_adapters_train_and_the_vision_tower_only_when_asked(tiny_path):
    language_only = adapted(tiny_path)
    trainable = [name for name, p in language_only.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not [name for name in trainable if ".visual." in name]
    with_vision = adapted(tiny_path, vision=True)
    assert [name for name, p in with_vision.named_parameters() if p.requires_grad and ".visual." in name]


class LowRankUpdate(torch.nn.Module):
    """W + scale * B @ A, with A and B the trainable leaves: LoRA computed by hand."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.a, self.b, self.scale = torch.nn.Parameter(a.clone()), torch.nn.Parameter(b.clone()), scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * self.b @ self.a


def test_a_lora_step_has_the_loss_and_adapter_gradients_of_the_merged_weights(tiny_path, trajectories, processor):
    policy = adapted(tiny_path, alpha=8.0)
    settings = LoraSettings(rank=4, alpha=8.0)
    reference = load_policy(ModelConfig(), tiny_path).requires_grad_(False)
    modules = dict(reference.named_modules())
    by_hand = {}
    for target in adapter_targets(reference, settings):
        layer = policy.get_submodule(f"base_model.model.{target}")
        update = LowRankUpdate(layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach(),
                               settings.alpha / settings.rank)  # fmt: skip
        parametrize.register_parametrization(modules[target], "weight", update)
        by_hand[target] = update
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id

    def loss(model):
        logprobs, mask = token_logprobs(model, trajectories, pad_id, image_id)
        weights = torch.arange(1, logprobs.shape[-1] + 1, dtype=logprobs.dtype) * mask
        return (logprobs * weights).sum()

    peft_loss, hand_loss = loss(policy), loss(reference)
    assert torch.allclose(peft_loss, hand_loss, rtol=1e-5)
    peft_loss.backward()
    hand_loss.backward()
    for target, update in by_hand.items():
        layer = policy.get_submodule(f"base_model.model.{target}")
        for peft_grad, hand_grad in ((layer.lora_A["default"].weight.grad, update.a.grad),
                                     (layer.lora_B["default"].weight.grad, update.b.grad)):  # fmt: skip
            assert hand_grad.abs().max() > 0, target
            assert (peft_grad - hand_grad).abs().max() <= 1e-5 * hand_grad.abs().max() + 1e-8, target


def test_the_reference_is_the_policy_with_its_adapters_off(tiny_path, trajectories, processor):
    policy = adapted(tiny_path)
    base = load_policy(ModelConfig(), tiny_path)
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id
    with torch.no_grad():
        adapted_logprobs, mask = token_logprobs(policy, trajectories, pad_id, image_id)
        with reference_model(policy, policy) as model:
            reference_logprobs, _ = token_logprobs(model, trajectories, pad_id, image_id)
        base_logprobs, _ = token_logprobs(base, trajectories, pad_id, image_id)
        again, _ = token_logprobs(policy, trajectories, pad_id, image_id)
    kept = mask.bool()
    assert torch.allclose(reference_logprobs[kept], base_logprobs[kept], atol=1e-5)
    assert not torch.allclose(adapted_logprobs[kept], base_logprobs[kept], atol=1e-3)
    assert torch.equal(again, adapted_logprobs)  # the adapters are back on after it


def test_a_target_that_matches_no_layer_is_named(tiny_path):
    model = load_policy(ModelConfig(), tiny_path)
    with pytest.raises(InputError, match="qproj names no linear layer.*q_proj"):
        attach_lora(model, LoraSettings(rank=4, target_modules=["q_proj", "qproj"]))
    # The vision tower's attention projection exists, but only with model.lora.vision
    with pytest.raises(InputError, match="qkv names no linear layer of the language model"):
        attach_lora(model, LoraSettings(rank=4, target_modules=["qkv"]))
    assert attach_lora(model, LoraSettings(rank=4, target_modules=["qkv"], vision=True)) is not None


@pytest.mark.slow
def test_a_lora_run_keeps_adapters_only_resumes_exactly_and_exports_merged_and_adapter_folders(tmp_path):
    """`python src/train.py model.lora.rank=4` with the KL term on (grpo=default): its checkpoints
    hold the adapters and their optimizer state only, a killed run resumes to the same adapters,
    and the export is the merged model beside the adapter folder, both equal to the checkpoint's."""
    import subprocess
    import sys

    from peft import PeftModel

    from conftest import ROOT
    from train_runs import run, run_until_checkpoint_then_kill
    from visionthink.models.loading import load_trained_policy

    settings = ("model.lora.rank=4", "trainer.max_steps=4", "callbacks.model_checkpoint.every_n_train_steps=2",
                "trainer.val_check_interval=100", "grpo.entropy_coef=0.01", "optim.optimizer.lr=1e-2")  # fmt: skip
    run(tmp_path, "straight", *settings)
    run_until_checkpoint_then_kill(tmp_path, "killed", *settings)
    run(tmp_path, "killed", *settings, "ckpt_path=last")
    checkpoints = {
        name: tmp_path / "outputs" / "runs" / name / "checkpoints" / "last.ckpt" for name in ("straight", "killed")
    }
    straight, resumed = (torch.load(path, weights_only=True) for path in checkpoints.values())
    assert straight["global_step"] == resumed["global_step"] == 4
    assert straight["lora"]["rank"] == 4
    assert straight["state_dict"] and all("lora_" in name for name in straight["state_dict"])
    for name, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    # Adam's two moments per adapter weight, and nothing for the frozen base
    adapter_values = sum(t.numel() for t in straight["state_dict"].values())
    moments = straight["optimizer_states"][0]["state"].values()
    assert sum(s["exp_avg"].numel() + s["exp_avg_sq"].numel() for s in moments) == 2 * adapter_values
    full = sum(p.numel() for p in load_policy(ModelConfig()).parameters())
    assert adapter_values < full / 10

    exported = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "export.py"), f"checkpoint={checkpoints['straight']}", f"output={exported}",
         f"paths.outputs_dir={tmp_path / 'outputs'}"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    merged = load_policy(ModelConfig(name_or_path=str(exported))).state_dict()
    _, evaluated, _ = load_trained_policy(ModelConfig(), str(checkpoints["straight"]), {})
    assert set(merged) == set(evaluated.state_dict())
    # (merged in place for the export, by merge_and_unload here: the same sums, to float32 rounding)
    assert all(torch.allclose(merged[name], value, atol=1e-6) for name, value in evaluated.state_dict().items())
    base = load_policy(ModelConfig()).state_dict()
    moved = [name for name in base if not torch.equal(base[name], merged[name])]
    assert moved and all("_proj.weight" in name and ".visual." not in name for name in moved)
    # The adapter folder is PEFT's: on the base model it gives the merged model's weights
    adapter = PeftModel.from_pretrained(load_policy(ModelConfig()), str(exported / "adapter")).merge_and_unload()
    assert all(torch.allclose(adapter.state_dict()[name], value, atol=1e-6) for name, value in merged.items())


def test_a_bf16_base_trains_fp32_adapters_and_the_run_allows_it(tiny_path):
    """The frozen base can stay in bf16 (half the memory): only the adapters see optimizer updates,
    and PEFT keeps them in fp32, so bf16 rounding does not swallow small steps."""
    from conftest import compose_train
    from visionthink.config_checks import check_master_weights

    base = load_policy(ModelConfig(dtype="bfloat16"), tiny_path)
    policy = attach_lora(base, LoraSettings(rank=4))
    trainable = {p.dtype for p in policy.parameters() if p.requires_grad}
    frozen = {p.dtype for p in policy.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    check_master_weights(compose_train(["model.dtype=bfloat16", "model.lora.rank=4"]))
    with pytest.raises(InputError, match="no fp32 master copy"):
        check_master_weights(compose_train(["model.dtype=bfloat16"]))
