"""Turn-2 KV reuse: the same tokens as a fresh prefill, with only the new tokens prefilled."""

from __future__ import annotations

from conftest import SMALL_RESOLUTION, TOOL_TURN
from visionthink.episode import EpisodeBuilder
from visionthink.models import ModelConfig, load_policy
from visionthink.models.family import continues_from_shared_caches
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig, TransformersRolloutEngine
from visionthink.rollout.engine import GenerationRequest

GREEDY = SamplingConfig(greedy=True, max_new_tokens=12)


def second_turn(builder, episode, first_turn_ids):
    tool = builder.tool_response(episode)
    return GenerationRequest(
        episode.prompt.token_ids + first_turn_ids + tool.token_ids, episode.prompt.images + tool.images
    )


def test_greedy_second_turn_matches_a_fresh_prefill_and_prefills_only_new_tokens(samples, family, tokenizer):
    model, builder = family.model, family.builder
    episodes = [builder.build(s) for s in samples[:3]]
    first = [GenerationRequest(e.prompt.token_ids, e.prompt.images) for e in episodes]
    reusing = TransformersRolloutEngine(model, tokenizer, reuse_kv_cache=True)
    generated = [r.token_ids for r in reusing.generate(first, GREEDY)]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    scripted = tokenizer(TOOL_TURN, add_special_tokens=False)["input_ids"] + [end]
    for first_turn in (generated, [scripted] * 3):  # the model's own turn, and a turn it did not write
        requests = [
            second_turn(builder, e, t if t[-1] == end else t + [end]) for e, t in zip(episodes, first_turn, strict=True)
        ]
        fresh = TransformersRolloutEngine(model, tokenizer)
        expected = [r.token_ids for r in fresh.generate(requests, GREEDY)]
        reusing.generate(first, GREEDY)  # turn 1 again, so the cache holds it
        prefill_before, reused_before = reusing.prefill_tokens, reusing.reused_tokens
        assert [r.token_ids for r in reusing.generate(requests, GREEDY)] == expected
        prefilled = reusing.prefill_tokens - prefill_before
        reused = reusing.reused_tokens - reused_before
        # Every prompt token is either served from the cache or prefilled, and most are reused; a
        # family with recurrent layers prefills every request whole
        assert prefilled + reused == sum(len(r.token_ids) for r in requests)
        assert prefilled < reused / 2 if continues_from_shared_caches(model) else reused == 0
        reusing.end_episodes()


def test_seeded_rollouts_are_identical_with_and_without_reuse(sft_checkpoint, processor, samples, agent_prompt):
    model = load_policy(ModelConfig(name_or_path=str(sft_checkpoint))).eval()
    builder = EpisodeBuilder(processor, agent_prompt, SMALL_RESOLUTION)
    sampling = SamplingConfig(max_new_tokens=48)
    runs = {}
    for reuse in (False, True):
        engine = TransformersRolloutEngine(model, processor.tokenizer, reuse_kv_cache=reuse)
        driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=4))
        runs[reuse] = (driver.run([builder.build(s) for s in samples[:6]], sampling, seed=3), engine.prefill_tokens)
    (plain, plain_prefill), (reused, reused_prefill) = runs[False], runs[True]
    assert sum(len(t.turns) == 2 for t in plain) > 0
    assert [t.token_ids for t in plain] == [t.token_ids for t in reused]
    assert reused_prefill < plain_prefill


def test_a_group_prefills_its_prompt_once_and_samples_the_same_tokens(family, samples):
    """The rollouts of a group share one prompt: it is prefilled (image included) once, and each
    seeded rollout samples the tokens it samples when generated on its own."""
    model, builder, processor = family.model, family.builder, family.processor
    episodes = [builder.build(s) for s in samples[:2]]
    requests = [
        GenerationRequest(e.prompt.token_ids, e.prompt.images, seed=100 * index + rollout)
        for index, e in enumerate(episodes)
        for rollout in range(4)
    ]
    sampling = SamplingConfig(max_new_tokens=48)
    engine = TransformersRolloutEngine(model, processor.tokenizer)
    together = [r.token_ids for r in engine.generate(requests, sampling)]
    if continues_from_shared_caches(model):  # each prompt once (all but its last token), then one token per rollout
        assert engine.prefill_tokens == sum(len(e.prompt.token_ids) - 1 for e in episodes) + len(requests)
    else:  # recurrent layers: every request whole
        assert engine.prefill_tokens == sum(len(r.token_ids) for r in requests)
    alone = [
        TransformersRolloutEngine(model, processor.tokenizer).generate([r], sampling)[0].token_ids for r in requests
    ]
    assert together == alone
    assert len({tuple(tokens) for tokens in together}) > 2, "seeded rollouts of one prompt differ"
