"""The vLLM rollout engine against real vLLM: weight pushes, two-image episodes, seeds, log-probs,
prefix caching, level-2 reloads, suppressed vision tokens and the image limit."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import TOOL_TURN
from visionthink.grpo.logprobs import forward_inputs, trajectory_logprobs
from visionthink.models.family import family_of
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig
from visionthink.rollout.engine import GenerationRequest
from visionthink.rollout.hf_engine import TransformersRolloutEngine
from visionthink.rollout.trajectory import Trajectory
from visionthink.sync import CopyToEngineSync
from vllm_real.conftest import CPU_SETTINGS

GREEDY = SamplingConfig(greedy=True, max_new_tokens=16)
# fp32 on both sides; the largest gap measured on this CPU was 9.5e-7 over 4,070 sampled tokens.
LOGPROB_TOLERANCE = 1e-4


@torch.no_grad()
def sampled_logprobs(policy, trajectories, tokenizer, temperature=1.0):
    """The trainer's log-probs of generated tokens under the distribution the engines sample
    from: vision tokens suppressed (both engines forbid them; the trainer's loss does not)."""
    pad, image = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|image_pad|>")
    batch = forward_inputs(policy, trajectories, pad, image)
    logits = policy(**batch, use_cache=False).logits[:, :-1].float() / temperature
    logits[..., list(family_of(policy).special_token_ids(tokenizer).vision)] = float("-inf")
    logprobs = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    rows = []
    for row, trajectory in zip(logprobs, trajectories, strict=True):
        generated = [i - 1 for i, m in enumerate(trajectory.loss_mask) if m]
        rows.append(row[generated])
    return rows


def assert_engine_logprobs_match(policy, trajectories, tokenizer, temperature=1.0, tolerance=LOGPROB_TOLERANCE):
    expected_rows = sampled_logprobs(policy, trajectories, tokenizer, temperature)
    for expected, trajectory in zip(expected_rows, trajectories, strict=True):
        reported = torch.tensor(trajectory.rollout_logprobs)
        assert reported.shape == expected.shape
        assert (reported - expected).abs().max() < tolerance


def fresh_policy(model):
    return copy.deepcopy(model).float().train()


def teacher_forced_step(policy, optimizer, episode, reply: list[int], tokenizer) -> None:
    """One optimizer step on the episode's first turn followed by ``reply`` (only the reply is trained)."""
    prompt = episode.prompt.token_ids
    ids = torch.tensor([prompt + reply])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    image = episode.prompt.images[0]
    policy(
        input_ids=ids,
        pixel_values=image.pixel_values,
        image_grid_thw=image.grid_thw[None],
        mm_token_type_ids=(ids == tokenizer.convert_tokens_to_ids("<|image_pad|>")).int(),
        labels=labels,
    ).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def one_large_step(policy, builder, samples, lr=1e-2):
    """An optimizer step that moves every weight visibly."""
    tokenizer = builder.processor.tokenizer
    answer = tokenizer("<answer>blue</answer>", add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    teacher_forced_step(policy, optimizer, builder.build(samples[0]), answer, tokenizer)


def assert_a_push_makes_vllm_generate_as(
    policy, engine, model, builder, samples, tokenizer, tolerance=LOGPROB_TOLERANCE
) -> None:
    """Greedy episodes from vLLM, before and after ``policy``'s weights are pushed: after, its
    log-probs (to ``tolerance``) and, in fp32, its tokens are the policy's (and differ from the
    model's before; greedy tokens of a bf16 engine may part from an fp32 policy's at a near tie)."""
    episodes = [builder.build(s) for s in samples[:4]]
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1))
    before = driver.run(episodes, GREEDY)
    assert_engine_logprobs_match(model, before, tokenizer, tolerance=tolerance)
    sync = CopyToEngineSync(engine)
    sync.push(policy)
    after = driver.run(episodes, GREEDY)
    policy.eval()
    assert_engine_logprobs_match(policy, after, tokenizer, tolerance=tolerance)
    if tolerance == LOGPROB_TOLERANCE:  # fp32 on both sides: the same greedy tokens too
        local = EpisodeDriver(TransformersRolloutEngine(policy, tokenizer), builder, RolloutConfig(group_size=1))
        assert [t.token_ids for t in after] == [t.token_ids for t in local.run(episodes, GREEDY)]
    assert [t.token_ids for t in after] != [t.token_ids for t in before]
    assert sync.version == 1


def test_a_pushed_optimizer_step_makes_vllm_generate_as_the_trained_policy(
    base_weights, model, builder, samples, tokenizer
):
    policy = fresh_policy(model)
    one_large_step(policy, builder, samples)
    assert_a_push_makes_vllm_generate_as(policy, base_weights, model, builder, samples, tokenizer)


def test_a_lora_policy_pushes_its_merged_weights_and_vllm_generates_as_it_does(
    base_weights, model, builder, samples, tokenizer
):
    """Only the adapters move; the push merges them into the base weights for vLLM."""
    from visionthink.models.lora import LoraSettings, attach_lora

    policy = attach_lora(fresh_policy(model), LoraSettings(rank=8, alpha=16.0))
    for _ in range(3):  # B starts at zero: A takes a gradient from the second step on
        one_large_step(policy, builder, samples, lr=5e-2)
    assert_a_push_makes_vllm_generate_as(policy, base_weights, model, builder, samples, tokenizer)


@pytest.fixture(scope="module")
def tool_calling_policy(model, builder, samples):
    """The tiny policy taught (by overfitting) to ask for the image in its first turn."""
    tokenizer = builder.processor.tokenizer
    policy = fresh_policy(model)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    call = tokenizer(TOOL_TURN, add_special_tokens=False)["input_ids"] + [end]
    episodes = [builder.build(s) for s in samples[:4]]
    # Enough steps to overfit the call on any four prompts of the synthetic mix (60 were not on the
    # three-way stripes question)
    for _ in range(150):
        for episode in episodes:
            teacher_forced_step(policy, optimizer, episode, call, tokenizer)
    return policy.eval()


def test_two_image_episodes_run_through_the_shared_driver(base_weights, tool_calling_policy, builder, samples):
    engine, tokenizer = base_weights, builder.processor.tokenizer
    CopyToEngineSync(engine).push(tool_calling_policy)
    episodes = [builder.build(s) for s in samples[:4]]
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=2))
    reused_before = engine.reused_tokens
    trajectories = driver.run(episodes, SamplingConfig(max_new_tokens=48), seed=7)
    two_turn = [t for t in trajectories if t.used_high_res]
    assert len(two_turn) >= 4, [t.turn_texts for t in trajectories]
    for trajectory in two_turn:
        # The tool result is the original image, and vLLM saw exactly what the trainer scores.
        assert trajectory.images[1].image is trajectory.episode.high_view.image
        assert len(trajectory.turns) == 2
    assert_engine_logprobs_match(tool_calling_policy, trajectories, tokenizer)
    # Turn 2 continues turn 1's tokens: vLLM's prefix cache serves them.
    turn_one = sum(len(t.episode.prompt.token_ids) for t in two_turn)
    assert engine.reused_tokens - reused_before >= turn_one // 2


def test_per_request_seeds_reproduce_whatever_the_batch(vllm_engine, builder, samples):
    episodes = [builder.build(s) for s in samples[:3]]
    requests = [GenerationRequest(e.prompt.token_ids, e.prompt.images, seed=100 + i) for i, e in enumerate(episodes)]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    together = vllm_engine.generate(requests, sampling)
    alone = [vllm_engine.generate([r], sampling)[0] for r in reversed(requests)][::-1]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    # A batch whose prompts exceed one step's token budget (max_model_len) is prefilled over
    # several steps; seeded rollouts still reproduce.
    driver = EpisodeDriver(vllm_engine, builder, RolloutConfig(group_size=8))
    many = [builder.build(s) for s in samples[:8]]
    assert sum(len(e.prompt.token_ids) for e in many) * 8 > CPU_SETTINGS["max_model_len"]
    first, second = (driver.run(many, sampling, seed=11) for _ in range(2))
    assert [t.token_ids for t in first] == [t.token_ids for t in second]
    reseeded = vllm_engine.generate([GenerationRequest(r.token_ids, r.images, seed=7) for r in requests], sampling)
    assert [r.token_ids for r in reseeded] != [r.token_ids for r in together]


def test_sampled_logprobs_agree_with_the_trainer_and_the_mismatch_metric(vllm_engine, model, builder, samples):
    """At temperature 0.7 too: vLLM reports log-probs after temperature, as the trainer computes them."""
    from visionthink.grpo.correction import rollout_correction

    tokenizer = builder.processor.tokenizer
    driver = EpisodeDriver(vllm_engine, builder, RolloutConfig(group_size=2))
    trajectories = driver.run([builder.build(s) for s in samples[:4]], SamplingConfig(temperature=1.0), seed=3)
    assert_engine_logprobs_match(model, trajectories, tokenizer)
    pad, image = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|image_pad|>")
    trainer = trajectory_logprobs(model, trajectories, pad, image, micro_batch_size=8)
    _, metrics = rollout_correction(trajectories, trainer, cap=None)
    # What is left is the suppressed vision tokens' share of probability, -log(1 - p_vision).
    assert 0 < metrics["rollout/logprob_abs_diff"] < 0.02

    cooled = SamplingConfig(temperature=0.7, max_new_tokens=16)
    trajectories = driver.run([builder.build(s) for s in samples[:2]], cooled, seed=5)
    assert_engine_logprobs_match(model, trajectories, tokenizer, temperature=0.7)


def test_the_logit_bias_keeps_vision_tokens_from_being_sampled(vllm_engine, builder, samples):
    """vLLM's own outputs, before the engine drops any vision token: the bias alone keeps them out,
    and without it this model does sample them."""
    import vllm

    from visionthink.rollout.vllm_engine import sampling_kwargs, vllm_prompt

    ids = vllm_engine.ids
    episode = builder.build(samples[0])
    requests = [GenerationRequest(episode.prompt.token_ids, episode.prompt.images, seed=s) for s in range(24)]
    prompts = [vllm_prompt(r, ids.image) for r in requests]
    hot = SamplingConfig(temperature=2.0, max_new_tokens=48)

    def sampled(suppressed):
        params = [vllm.SamplingParams(**sampling_kwargs(hot, r.seed, ids.stop, suppressed)) for r in requests]
        outputs = vllm_engine.llm.generate(prompts, params, use_tqdm=False)
        return [t for o in outputs for t in o.outputs[0].token_ids]

    biased = sampled(ids.vision)
    assert len(biased) > 1000 and not set(ids.vision) & set(biased)
    assert set(ids.vision) & set(sampled(()))


def test_the_image_limit_is_the_rollout_configs(vllm_engine, builder, samples):
    episode = builder.build(samples[0])
    tool = builder.tool_response(episode)
    ids = episode.prompt.token_ids + tool.token_ids * 3
    four = GenerationRequest(ids, episode.prompt.images + tool.images * 3)
    with pytest.raises(Exception, match="At most 3 image"):
        vllm_engine.generate([four], GREEDY)


def test_a_zoom_and_a_resize_in_one_episode_generate_as_the_policy(base_weights, model, zoom_builder, samples):
    """Three images in one context (the first view, a zoomed region, the full image): vLLM's greedy
    tokens are the transformers engine's and its log-probs the trainer's."""
    from test_tools import three_image_request, zoom_turn

    tokenizer = zoom_builder.processor.tokenizer
    call = tokenizer(zoom_turn([0, 56, 56, 112]), add_special_tokens=False)["input_ids"]
    call += [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    episodes = [zoom_builder.build(s) for s in samples[:3]]
    requests = [three_image_request(zoom_builder, e, call, tokenizer) for e in episodes]
    results = base_weights.generate(requests, GREEDY)
    local = TransformersRolloutEngine(model, tokenizer).generate(requests, GREEDY)
    assert [r.token_ids for r in results] == [r.token_ids for r in local]
    trajectories = [
        Trajectory(e, 0, 0, r.token_ids + list(out.token_ids), [0] * len(r.token_ids) + [1] * len(out.token_ids),
                   list(r.images), rollout_logprobs=list(out.logprobs))
        for e, r, out in zip(episodes, requests, results, strict=True)
    ]  # fmt: skip
    assert_engine_logprobs_match(model, trajectories, tokenizer)


def test_after_a_level_2_sleep_the_engine_reloads_the_newest_weights(base_weights, model, builder, samples):
    """vLLM's CPU platform keeps the weights through a sleep, so what is checked here is that
    waking from level 2 reloads the live policy (on a GPU the weights are gone by then)."""
    engine, tokenizer = base_weights, builder.processor.tokenizer
    engine.sleep_level = 2
    episodes = [builder.build(s) for s in samples[:2]]
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1))
    base = driver.run(episodes, GREEDY)  # sleeps at the end
    loads = engine.weight_loads
    # Nothing pushed yet: waking reloads the model folder's weights.
    assert [t.token_ids for t in driver.run(episodes, GREEDY)] == [t.token_ids for t in base]
    assert engine.weight_loads == loads + 1

    policy = fresh_policy(model)
    CopyToEngineSync(engine).push(policy)
    driver.run(episodes, GREEDY)
    # A step that is not pushed (a validation pass or a refill batch came between): the wake-up
    # after the level-2 sleep brings the policy's current weights.
    one_large_step(policy, builder, samples)
    policy.eval()
    after = driver.run(episodes, GREEDY)
    assert_engine_logprobs_match(policy, after, tokenizer)
    assert [t.token_ids for t in after] != [t.token_ids for t in base]
