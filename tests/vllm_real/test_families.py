"""Real vLLM on each other model family's tiny model (test_engine.py runs Qwen2.5-VL's): it loads the
family's folder, generates what the transformers engine generates, and after a push (full weights
or LoRA) generates as the trained policy does. vLLM's CPU kernel of Qwen3.5's Gated DeltaNet layers
runs in bf16 only: its log-probs are compared with the fp32 policy's to bf16's rounding (measured
gaps 0.004-0.006; after a push, 2.3 against the weights before it)."""

from __future__ import annotations

import pytest

from conftest import SMALL_RESOLUTION, tiny_family_path
from visionthink.models.family import family_of
from visionthink.models.lora import LoraSettings, attach_lora
from visionthink.rollout import EpisodeDriver, RolloutConfig
from visionthink.rollout.hf_engine import TransformersRolloutEngine
from vllm_real.conftest import CPU_SETTINGS
from vllm_real.test_engine import (
    GREEDY,
    LOGPROB_TOLERANCE,
    assert_a_push_makes_vllm_generate_as,
    assert_engine_logprobs_match,
    fresh_policy,
    one_large_step,
)

# fp32 engines: as test_engine.py; vLLM's bf16 recurrent layers: bf16 rounding
TOLERANCE = {"qwen2_vl": LOGPROB_TOLERANCE, "qwen3_vl": LOGPROB_TOLERANCE, "qwen3_5": 0.02}


@pytest.fixture(scope="module", params=sorted(TOLERANCE))
def family_engine(request, family_model):
    """(the family's tiny model with its processor and builder, a vLLM engine on its folder)."""
    from visionthink.rollout.vllm_engine import VLLMRolloutEngine, VLLMSettings

    family = family_model(request.param)
    settings = {**CPU_SETTINGS, "dtype": "bfloat16"} if family_of(family.model).RECURRENT_LAYERS else CPU_SETTINGS
    engine = VLLMRolloutEngine(
        family.path, family.processor.tokenizer, SMALL_RESOLUTION, VLLMSettings(**settings), max_images=2, seed=0
    )
    yield family, engine
    del engine  # vLLM frees it when the last reference goes


def test_vllm_generates_what_the_transformers_engine_does(family_engine, samples):
    family, engine = family_engine
    episodes = [family.builder.build(s) for s in samples[:4]]
    tokenizer = family.processor.tokenizer
    served = EpisodeDriver(engine, family.builder, RolloutConfig(group_size=1)).run(episodes, GREEDY)
    local = TransformersRolloutEngine(family.model, tokenizer)
    expected = EpisodeDriver(local, family.builder, RolloutConfig(group_size=1)).run(episodes, GREEDY)
    assert [t.visual_tokens for t in served] == [t.visual_tokens for t in expected]
    assert_engine_logprobs_match(family.model, served, tokenizer, tolerance=TOLERANCE[family.name])
    if TOLERANCE[family.name] == LOGPROB_TOLERANCE:  # fp32 on both sides
        assert [t.token_ids for t in served] == [t.token_ids for t in expected]


@pytest.mark.parametrize("lora", [False, True], ids=["full_weights", "lora"])
def test_a_push_makes_vllm_generate_as_the_trained_policy(family_engine, samples, lora):
    family, engine = family_engine
    policy = fresh_policy(family.model)
    if lora:
        policy = attach_lora(policy, LoraSettings(rank=8, alpha=16.0))
    for _ in range(3 if lora else 1):  # LoRA's B starts at zero: A takes a gradient from the second step on
        one_large_step(policy, family.builder, samples, lr=5e-2 if lora else 1e-2)
    try:
        assert_a_push_makes_vllm_generate_as(
            policy, engine, family.model, family.builder, samples, family.processor.tokenizer, TOLERANCE[family.name]
        )
    finally:
        engine.weight_source = None
        engine.load_weights(None)  # the folder's weights again


def test_an_fp32_engine_for_recurrent_layers_on_a_cpu_is_refused_in_one_line(processor):
    from visionthink.errors import InputError
    from visionthink.rollout.vllm_engine import VLLMRolloutEngine, VLLMSettings

    with pytest.raises(InputError, match=r"bfloat16 only.*rollout.vllm.dtype=float32"):
        VLLMRolloutEngine(tiny_family_path("qwen3_5"), processor.tokenizer, SMALL_RESOLUTION,
                          VLLMSettings(**CPU_SETTINGS), max_images=2)  # fmt: skip
