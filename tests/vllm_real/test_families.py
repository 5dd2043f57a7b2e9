"""Real vLLM on each other model family's tiny model (test_engine.py runs Qwen2.5-VL's): it loads the
family's folder, generates what the transformers engine generates, and after a push (full weights
or LoRA) generates as the trained policy does."""

from __future__ import annotations

import pytest

from conftest import SMALL_RESOLUTION, FamilyModel
from visionthink.episode import EpisodeBuilder
from visionthink.models import ModelConfig, load_policy, load_processor
from visionthink.models.lora import LoraSettings, attach_lora
from visionthink.rollout import EpisodeDriver, RolloutConfig
from visionthink.rollout.hf_engine import TransformersRolloutEngine
from vllm_real.conftest import CPU_SETTINGS
from vllm_real.test_engine import GREEDY, assert_a_push_makes_vllm_generate_as, fresh_policy, one_large_step


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen3_vl"])
def family_engine(request, qwen2_vl_path, qwen3_vl_path, processor, agent_prompt):
    """(the family's tiny model with its processor and builder, a vLLM engine on its folder)."""
    from visionthink.rollout.vllm_engine import VLLMRolloutEngine, VLLMSettings

    path = {"qwen2_vl": qwen2_vl_path, "qwen3_vl": qwen3_vl_path}[request.param]
    own = processor if request.param == "qwen2_vl" else load_processor(path, SMALL_RESOLUTION.processor_size())
    family = FamilyModel(
        load_policy(ModelConfig(), path).eval(), own, EpisodeBuilder(own, agent_prompt, SMALL_RESOLUTION)
    )
    engine = VLLMRolloutEngine(
        path, own.tokenizer, SMALL_RESOLUTION, VLLMSettings(**CPU_SETTINGS), max_images=2, seed=0
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
    assert [t.token_ids for t in served] == [t.token_ids for t in expected]
    assert [t.visual_tokens for t in served] == [t.visual_tokens for t in expected]


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
            policy, engine, family.model, family.builder, samples, family.processor.tokenizer
        )
    finally:
        engine.weight_source = None
        engine.load_weights(None)  # the folder's weights again
