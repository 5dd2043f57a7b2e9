"""The GRPO update without Lightning: a plain model, a torch optimizer, the default hooks."""

from __future__ import annotations

import copy

import torch

from conftest import TOOL_TURN, answer_turn
from visionthink.grpo.config import GRPOConfig
from visionthink.grpo.update import GRPOUpdate
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig

GROUP = 4


def rollouts(builder, samples, scripted):
    """Two groups of four: answers and tool calls mixed, so the rewards vary within each group."""
    turns = iter([answer_turn("red"), TOOL_TURN, answer_turn("blue"), answer_turn("no")] * 4)
    driver = EpisodeDriver(scripted(lambda request: next(turns)), builder, RolloutConfig(group_size=GROUP))
    trajectories = driver.run([builder.build(s, "adaptive") for s in samples[:2]], SamplingConfig(max_new_tokens=64))
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.5])
    return trajectories, rewards


def updated(model, processor, trajectories, rewards, **settings):
    policy = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    tokenizer = processor.tokenizer
    update = GRPOUpdate(
        GRPOConfig(beta=0.0, **settings), GROUP, 1.0, tokenizer.pad_token_id,
        tokenizer.convert_tokens_to_ids("<|image_pad|>"),
    )  # fmt: skip
    metrics = update(policy, None, trajectories, rewards, optimizer)
    return policy, metrics


def test_an_update_moves_the_policy_and_reports_what_it_did(model, processor, builder, samples, scripted):
    trajectories, rewards = rollouts(builder, samples, scripted)
    policy, metrics = updated(model, processor, trajectories, rewards)
    assert metrics["train/updated_groups"] == 2 and metrics["train/optimizer_steps"] == 1
    assert metrics["train/advantage_abs"] > 0
    moved = [not torch.equal(a, b) for a, b in zip(policy.parameters(), model.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2


def test_micro_batches_and_token_weighting_give_the_one_pass_gradient(model, processor, builder, samples, scripted):
    trajectories, rewards = rollouts(builder, samples, scripted)
    whole, _ = updated(model, processor, trajectories, rewards, micro_batch_size=8, max_grad_norm=1e9)
    split, _ = updated(model, processor, trajectories, rewards, micro_batch_size=3, max_grad_norm=1e9)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_mini_batches_and_epochs_make_one_step_each(model, processor, builder, samples, scripted):
    trajectories, rewards = rollouts(builder, samples, scripted)
    _, metrics = updated(model, processor, trajectories, rewards, mini_batch_size=1, ppo_epochs=2)
    assert metrics["train/optimizer_steps"] == 4  # 2 groups / 1 per step x 2 epochs


def test_nothing_to_learn_from_takes_a_step_without_gradients(model, processor):
    policy, metrics = updated(model, processor, [], torch.tensor([]))
    assert metrics == {"train/updated_groups": 0.0, "train/optimizer_steps": 0.0}
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), model.parameters(), strict=True))


def test_a_reordered_batch_is_refused_never_normalised_across_the_wrong_rollouts(
    model, processor, builder, samples, scripted
):
    import pytest

    from visionthink.reward.judges.base import Verdict
    from visionthink.reward.scoring import RewardConfig, score_trajectories

    trajectories, rewards = rollouts(builder, samples, scripted)
    order = [0, 4, 1, 5, 2, 6, 3, 7]  # the two groups interleaved
    shuffled = [trajectories[i] for i in order]
    with pytest.raises(ValueError, match=r"not in whole consecutive groups of 4: groups \[0, 1, 0, 1"):
        updated(model, processor, shuffled, rewards[order])
    # Rewards group by each trajectory's own group, so their order does not matter there
    verdicts = [Verdict(i % 2 == 0) for i in range(8)]
    prompt = builder.prompt
    scores = score_trajectories(trajectories, verdicts, prompt, RewardConfig())
    shuffled_scores = score_trajectories(shuffled, [verdicts[i] for i in order], prompt, RewardConfig())
    assert [shuffled_scores[order.index(i)] for i in range(8)] == scores
