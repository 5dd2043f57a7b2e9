"""Multi-turn rollouts: a scripted policy that calls the tool exercises the second turn and the masks."""

from __future__ import annotations

import pytest

from conftest import TOOL_TURN, answer_turn
from visionthink.metrics.rollouts import rollout_metrics
from visionthink.reward.scoring import RolloutScore
from visionthink.rollout import (
    EpisodeDriver,
    GenerationResult,
    RolloutConfig,
    SamplingConfig,
    TransformersRolloutEngine,
)

SAMPLING = SamplingConfig(max_new_tokens=24)


def by_images(first: str, second: str):
    """Script: `first` while the request holds one image, `second` once the high-res image is there."""
    return lambda request: first if len(request.images) == 1 else second


def test_tool_call_brings_the_original_high_res_image_and_a_second_turn(builder, samples, scripted, tokenizer):
    engine = scripted(by_images(TOOL_TURN, answer_turn("7")))
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=3))
    episodes = [builder.build(s) for s in samples[:2]]
    trajectories = driver.run(episodes, SAMPLING)
    assert engine.calls == [6, 6]  # every turn of every rollout in one batched call
    for trajectory in trajectories:
        episode = trajectory.episode
        assert trajectory.used_high_res and len(trajectory.turns) == 2 and trajectory.end_reason == "answer"
        assert trajectory.final_answer.answer == "7"
        # The tool result is the original image (high view), not an upsampled low view.
        assert trajectory.images[1].image is episode.high_view.image
        assert trajectory.visual_tokens == episode.first_view.visual_tokens + episode.high_view.visual_tokens == 16 + 64
        # Mask: 1 exactly on the two generated turns (text + <|im_end|>), 0 on prompt and tool response.
        turn_lengths = [t.generated_tokens for t in trajectory.turns]
        assert sum(trajectory.loss_mask) == sum(turn_lengths)
        prompt_len = len(episode.prompt.token_ids)
        assert trajectory.loss_mask[:prompt_len] == [0] * prompt_len
        first_end = prompt_len + turn_lengths[0]
        assert trajectory.loss_mask[prompt_len:first_end] == [1] * turn_lengths[0]
        tool_ids = builder.tool_response(episode).token_ids
        assert trajectory.token_ids[first_end : first_end + len(tool_ids)] == tool_ids
        assert trajectory.loss_mask[first_end : first_end + len(tool_ids)] == [0] * len(tool_ids)
        assert trajectory.loss_mask[-turn_lengths[1] :] == [1] * turn_lengths[1]
        # Image placeholders in the ids match the images carried along.
        pads = trajectory.token_ids.count(tokenizer.convert_tokens_to_ids("<|image_pad|>"))
        assert pads == trajectory.visual_tokens


def test_direct_answer_ends_after_one_turn(builder, samples, scripted):
    driver = EpisodeDriver(scripted(lambda r: answer_turn("red")), builder, RolloutConfig(group_size=2))
    (trajectory, _) = driver.run([builder.build(samples[0])], SAMPLING)
    assert not trajectory.used_high_res and len(trajectory.turns) == 1
    assert trajectory.visual_tokens == 16 and trajectory.end_reason == "answer"


@pytest.mark.parametrize("policy,turns,reason", [("error_turn", 2, "answer"), ("end", 1, "malformed")])
def test_malformed_tool_call_gets_an_error_turn_or_ends(policy, turns, reason, builder, samples, scripted, tokenizer):
    bad = "<think>x</think><tool_call>{broken</tool_call>"
    engine = scripted(lambda r: answer_turn("3") if "ERROR occurs" in tokenizer.decode(r.token_ids) else bad)
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1, on_malformed_tool_call=policy))
    (trajectory,) = driver.run([builder.build(samples[0])], SAMPLING)
    assert len(trajectory.turns) == turns and trajectory.end_reason == reason
    assert not trajectory.used_high_res
    if policy == "error_turn":
        assert "not valid JSON" in tokenizer.decode(trajectory.token_ids)


def test_metrics_split_accuracy_by_branch_and_count_broken_tool_calls(builder, samples, scripted, tokenizer):
    """A broken call is neither a resized nor a direct answer: lumping it with the direct ones hides
    what asking costs (it showed as a low direct accuracy in the miniature's no-penalty runs)."""
    bad = "<think>x</think><tool_call>{broken</tool_call>"
    scripts = {
        "resized": by_images(TOOL_TURN, answer_turn("7")),
        "direct": lambda r: answer_turn("red"),
        "broken": lambda r: answer_turn("3") if "ERROR" in tokenizer.decode(r.token_ids) else bad,
    }
    trajectories = []
    for script in scripts.values():
        driver = EpisodeDriver(scripted(script), builder, RolloutConfig(group_size=2))
        trajectories += driver.run([builder.build(samples[0])], SAMPLING)
    # Right: one resized rollout of two and both direct ones; the broken ones wrong
    right = [True, False, True, True, False, False]
    scores = [RolloutScore(float(ok), 0.0, 0.0, float(ok), True, None) for ok in right]
    metrics = rollout_metrics(trajectories, scores)
    assert metrics["accuracy/resized"] == 0.5 and metrics["accuracy/direct"] == 1.0
    assert metrics["failed_tool_call_ratio"] == pytest.approx(2 / 6)
    assert rollout_metrics(trajectories[:2], scores[:2]).keys().isdisjoint({"accuracy/direct"})


def test_surplus_tool_call_ends_the_episode_at_the_image_budget(builder, samples, scripted):
    driver = EpisodeDriver(scripted(lambda r: TOOL_TURN), builder, RolloutConfig(group_size=1, max_turns=4))
    (trajectory,) = driver.run([builder.build(samples[0])], SAMPLING)
    assert len(trajectory.images) == 2 and len(trajectory.turns) == 2
    assert trajectory.end_reason == "tool_call_limit" and trajectory.final_answer is None


def test_a_turn_cut_by_the_token_budget_is_counted_as_truncated(builder, samples, scripted, tokenizer):
    class BudgetEngine:
        """The scripted tool call, cut after `budget` tokens as a sampler with that budget would."""

        def __init__(self, budget: int):
            self.inner, self.budget = scripted(lambda r: TOOL_TURN), budget

        def generate(self, requests, sampling):
            results = self.inner.generate(requests, sampling)
            return [GenerationResult(token_ids=r.token_ids[: self.budget], stopped=len(r.token_ids) <= self.budget)
                    for r in results]  # fmt: skip

        def end_episodes(self):
            pass

    tool_call_length = len(tokenizer(TOOL_TURN, add_special_tokens=False)["input_ids"]) + 1
    for budget, truncated in ((tool_call_length // 2, 1.0), (tool_call_length, 0.0)):
        driver = EpisodeDriver(BudgetEngine(budget), builder, RolloutConfig(group_size=2))
        trajectories = driver.run([builder.build(samples[0])], SAMPLING)
        metrics = rollout_metrics(trajectories)
        assert metrics["truncated_ratio"] == truncated
        assert metrics["resize_ratio"] == 1.0 - truncated


def test_transformers_engine_generates_every_rollout_in_one_batch(builder, samples, model, tokenizer):
    engine = TransformersRolloutEngine(model, tokenizer)
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=2))
    episodes = [builder.build(s) for s in samples[:3]]
    trajectories = driver.run(episodes, SamplingConfig(max_new_tokens=12))
    assert len(trajectories) == 6 and [t.group for t in trajectories] == [0, 0, 1, 1, 2, 2]
    stops = set(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for trajectory in trajectories:
        turn = trajectory.turns[0]
        assert 1 <= turn.generated_tokens <= 12
        assert trajectory.token_ids.count(pad) == trajectory.visual_tokens
        if not turn.truncated:
            assert trajectory.token_ids[len(trajectory.episode.prompt.token_ids) + turn.generated_tokens - 1] in stops


def test_greedy_generation_is_deterministic(builder, samples, model, tokenizer):
    engine = TransformersRolloutEngine(model, tokenizer)
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1))
    greedy = SamplingConfig(greedy=True, max_new_tokens=10)
    first = driver.run([builder.build(samples[0])], greedy)[0].token_ids
    assert driver.run([builder.build(samples[0])], greedy)[0].token_ids == first
