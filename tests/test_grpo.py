"""GRPO pure functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from visionthink.grpo import group_advantages, grpo_loss, kl_penalty, zero_variance_groups


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, group_size=4, eps=0.0 + 1e-12)
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 1, 0]
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, 0.5, -0.5]) / std)
    assert torch.equal(adv[4:], torch.zeros(4))


def test_dr_grpo_keeps_the_scale():
    adv = group_advantages(torch.tensor([1.5, 0.5, 0.0, 0.0]), group_size=2, scale=False)
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_group_size_must_divide_the_rewards():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(5), group_size=2)


def test_zero_variance_groups():
    flags = zero_variance_groups(torch.tensor([1.0, 1.0, 0.5, 0.0]), group_size=2)
    assert flags.tolist() == [True, False]


def test_loss_at_ratio_one_is_minus_the_mean_advantage_over_generated_tokens():
    logprobs = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.2, 0.2]]))
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    advantages = torch.tensor([2.0, -1.0])
    loss, metrics = grpo_loss(logprobs, logprobs, advantages, mask, beta=0.0)
    # token-mean over 4 masked tokens: (-2 -2 +1 +1) / 4
    assert loss.item() == pytest.approx(-0.5)
    assert metrics["clip_fraction"].item() == 0.0
    assert metrics["ratio"].item() == pytest.approx(1.0)


def test_clipping_both_sides():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    mask = torch.ones(1, 2)
    loss_pos, metrics_pos = grpo_loss(new, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.2, beta=0.0)
    # A > 0: min(1.5, 1.2) = 1.2 on token 1 (clipped); min(0.5, 0.8)=0.5 on token 2 (not clipped)
    assert loss_pos.item() == pytest.approx(-(1.2 + 0.5) / 2)
    assert metrics_pos["clip_fraction"].item() == pytest.approx(0.5)
    loss_neg, metrics_neg = grpo_loss(new, old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.28, beta=0.0)
    # A < 0: max(-1.5, -1.28) -> 1.5 stays (unclipped); max(-0.5, -0.8) -> 0.8 (clipped)
    assert loss_neg.item() == pytest.approx((1.5 + 0.8) / 2)
    assert metrics_neg["clip_fraction"].item() == pytest.approx(0.5)


def test_clipped_tokens_get_no_gradient():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]])).requires_grad_()
    loss, _ = grpo_loss(new, old, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0)
    loss.backward()
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 1].item() != 0.0


def test_k3_kl_value_and_beta():
    logprobs = torch.log(torch.tensor([[0.5]]))
    ref = torch.log(torch.tensor([[0.25]]))
    expected = math.exp(math.log(0.5)) - math.log(0.5) - 1  # exp(ref-lp) - (ref-lp) - 1 with ref-lp = log 0.5
    assert kl_penalty(logprobs, ref, "k3").item() == pytest.approx(expected)
    assert kl_penalty(logprobs, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logprobs, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    loss, metrics = grpo_loss(logprobs, logprobs, torch.tensor([0.0]), torch.ones(1, 1), ref_logprobs=ref, beta=0.1)
    assert metrics["kl"].item() == pytest.approx(expected)
    assert loss.item() == pytest.approx(0.1 * expected)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logprobs, logprobs, torch.tensor([0.0]), torch.ones(1, 1), beta=0.1)


def test_aggregations_weight_tokens_or_sequences():
    logprobs = torch.zeros(2, 4)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    advantages = torch.tensor([4.0, 1.0])
    token_mean, _ = grpo_loss(logprobs, logprobs, advantages, mask, aggregate="token-mean", beta=0.0)
    seq_mean, _ = grpo_loss(logprobs, logprobs, advantages, mask, aggregate="seq-mean-token-mean", beta=0.0)
    assert token_mean.item() == pytest.approx(-(4 + 4 * 1) / 5)
    assert seq_mean.item() == pytest.approx(-(4 + 1) / 2)


def test_masked_tokens_do_not_matter():
    logprobs = torch.zeros(1, 3)
    old = torch.tensor([[0.0, 5.0, -5.0]])
    mask = torch.tensor([[1, 0, 0]])
    loss, metrics = grpo_loss(logprobs, old, torch.tensor([1.0]), mask, beta=0.0)
    assert loss.item() == pytest.approx(-1.0) and metrics["clip_fraction"].item() == 0.0
