"""The vLLM engine's parts that need no vllm: requests, sampling parameters, weight gathering,
the rollout/trainer mismatch correction, and the start-up error without vllm. The engine itself
runs against real vLLM in tests/vllm_real (`make test-vllm`)."""

from __future__ import annotations

import copy
import importlib.util
from types import SimpleNamespace

import pytest
import torch

from conftest import answer_turn, start_up_error
from visionthink.grpo import grpo_loss
from visionthink.grpo.correction import rollout_correction
from visionthink.models.family import family_of
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig
from visionthink.rollout.engine import GenerationRequest, GenerationResult
from visionthink.rollout.vllm_engine import collapse_image_pads, generation_result, sampling_kwargs, vllm_prompt
from visionthink.sync import full_parameters

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_prompts_carry_one_placeholder_per_image_and_the_images(builder, samples, tokenizer):
    episode = builder.build(samples[0])
    tool = builder.tool_response(episode)
    request = GenerationRequest(episode.prompt.token_ids + tool.token_ids, episode.prompt.images + tool.images)
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt = vllm_prompt(request, pad)
    assert prompt["prompt_token_ids"].count(pad) == 2
    assert len(prompt["prompt_token_ids"]) == len(request.token_ids) - (16 - 1) - (64 - 1)
    assert [image for image in prompt["multi_modal_data"]["image"]] == [
        episode.first_view.image,
        episode.high_view.image,
    ]
    assert collapse_image_pads([1, pad, pad, 2, pad, 3], pad) == [1, pad, 2, pad, 3]


def test_sampling_parameters():
    sampled = sampling_kwargs(SamplingConfig(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=5), 42, [7, 8], [3])
    assert sampled["temperature"] == 0.7 and sampled["top_k"] == -1 and sampled["seed"] == 42
    assert sampled["stop_token_ids"] == [7, 8] and sampled["max_tokens"] == 5 and sampled["logprobs"] == 0
    assert sampled["logit_bias"] == {3: -100.0}
    greedy = sampling_kwargs(SamplingConfig(greedy=True), None, [7])
    assert greedy["temperature"] == 0.0 and "seed" not in greedy


def test_vision_tokens_vllm_samples_despite_the_bias_are_dropped_with_their_logprobs(
    builder, samples, model, tokenizer
):
    ids = family_of(model).special_token_ids(tokenizer)
    answer = tokenizer(answer_turn("red"), add_special_tokens=False)["input_ids"] + [ids.stop[0]]
    sampled = [ids.vision[0], *answer[:3], ids.image, *answer[3:]]
    logprob = {token: -float(i) for i, token in enumerate(sampled)}
    completion = SimpleNamespace(
        token_ids=sampled,
        logprobs=[{token: SimpleNamespace(logprob=logprob[token])} for token in sampled],
        finish_reason="stop",
    )
    result = generation_result(completion, ids.vision)
    assert result.token_ids == answer and result.stopped
    assert result.logprobs == [logprob[token] for token in answer]

    class OneCompletion:
        def generate(self, requests, sampling):
            return [result for _ in requests]

        def end_episodes(self):
            pass

    (trajectory,) = EpisodeDriver(OneCompletion(), builder, RolloutConfig(group_size=1)).run(
        [builder.build(samples[0])], SamplingConfig()
    )
    assert trajectory.token_ids.count(ids.image) == trajectory.visual_tokens
    assert trajectory.final_answer.answer == "red"


def test_full_parameters_of_a_plain_model_use_hugging_face_names(model):
    names = dict(full_parameters(model))
    assert set(names) == set(model.state_dict())
    assert any(name.startswith("model.language_model.") for name in names)


def test_lora_adapters_are_merged_before_the_push(model):
    peft = pytest.importorskip("peft", reason="peft is not installed (LoRA is optional)")
    # A copy: PEFT adds its layers to the model it wraps and freezes the rest, and the session's
    # model is shared with every other test of this worker
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    names = dict(full_parameters(lora))
    assert not any("lora_" in n or "base_layer" in n for n in names)


def test_mismatch_metrics_and_truncated_importance_weights(builder, samples, tokenizer):
    class ReportingEngine:
        def generate(self, requests, sampling):
            ids = tokenizer(answer_turn("red"), add_special_tokens=False)["input_ids"] + [
                tokenizer.convert_tokens_to_ids("<|im_end|>")
            ]
            return [GenerationResult(ids, True, logprobs=[-1.0] * len(ids)) for _ in requests]

        def end_episodes(self):
            pass

    (trajectory,) = EpisodeDriver(ReportingEngine(), builder, RolloutConfig(group_size=1)).run(
        [builder.build(samples[0])], SamplingConfig()
    )
    assert len(trajectory.rollout_logprobs) == trajectory.generated_tokens
    trainer = torch.full((len(trajectory.token_ids) - 1,), -1.5)
    weights, metrics = rollout_correction([trajectory], [trainer], cap=2.0)
    assert metrics["rollout/logprob_abs_diff"] == pytest.approx(0.5)
    mask = torch.tensor(trajectory.loss_mask[1:], dtype=torch.bool)
    assert torch.allclose(weights[0][mask], torch.full((int(mask.sum()),), torch.exp(torch.tensor(-0.5)).item()))
    assert torch.all(weights[0][~mask] == 1.0)
    no_weights, _ = rollout_correction([trajectory], [trainer], cap=None)
    assert no_weights is None


def test_importance_weights_scale_the_policy_term():
    logprobs = torch.zeros(1, 2)
    plain, _ = grpo_loss(logprobs, logprobs, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0)
    halved, _ = grpo_loss(
        logprobs, logprobs, torch.tensor([1.0]), torch.ones(1, 2), importance_weights=torch.full((1, 2), 0.5), beta=0.0
    )
    assert halved.item() == pytest.approx(plain.item() / 2)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed: the missing-package error cannot occur")
def test_rollout_vllm_without_vllm_fails_at_start_up_naming_the_extras_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    line = start_up_error(capsys, monkeypatch, "train.py", "rollout=vllm", f"paths.outputs_dir={tmp_path}")
    assert "rollout=vllm needs the vllm package" in line
    assert "make setup-vllm" in line and "requirements-gpu.txt" in line
