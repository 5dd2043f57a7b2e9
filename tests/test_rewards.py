"""Rewards: format reward, penalty control (both modes, theta edges), the rule judge, group scoring."""

from __future__ import annotations

import pytest

from visionthink.reward import RuleJudge, format_reward, penalty_control
from visionthink.reward.judges import JudgeItem

TOOL = (
    '<think>small text</think>\n<tool_call>\n{"name": "resize_image", "arguments": {"action": "resize"}}\n</tool_call>'
)
ANSWER = "<think>it is red</think>\n<answer>red</answer>"


def test_format_reward_direct_and_tool_episodes():
    assert format_reward([ANSWER]) == 0.5
    assert format_reward([TOOL, ANSWER]) == 0.5
    assert format_reward([TOOL, ANSWER], weight=1.0) == 1.0


@pytest.mark.parametrize(
    "turns",
    [
        ["<answer>red</answer>"],  # no think
        ["<think>a</think><think>b</think><answer>red</answer>"],  # two thinks
        ["<think>a</think><answer>red</answer> trailing"],  # text after the answer
        [ANSWER.replace("</answer>", "</answer><tool_call>x</tool_call>")],
        [TOOL],  # the episode ended on a tool call
        [TOOL.replace('"resize"}', '"zoom"}'), ANSWER],  # invalid arguments
        [TOOL.replace("resize_image", "crop"), ANSWER],  # unknown tool
        [TOOL + "<answer>x</answer>", ANSWER],
        [ANSWER, ANSWER],  # a non-final turn that is not a tool call
        [],
    ],
)
def test_format_reward_is_zero_when_any_rule_breaks(turns):
    assert format_reward(turns) == 0.0


def test_format_reward_tag_protocol():
    assert format_reward(["look <resize></resize>", "<answer>3</answer>"], protocol="tag") == 0.5
    assert format_reward(["<resize> then more", "<answer>3</answer>"], protocol="tag") == 0.0


# Group of 4: (used_high_res, correct)
def group(*pairs):
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_paper_mode_penalises_direct_answers_when_low_res_rarely_succeeds():
    high, correct = group((True, True), (True, True), (True, True), (False, False), (False, True))
    # r = 1 / (1 + 3) = 0.25 >= 0.2: upscaling was unnecessary often enough -> high-res rollouts pay
    assert penalty_control(high, correct, theta=0.2) == [0.1, 0.1, 0.1, 0.0, 0.0]
    # theta 0.3: r < theta -> every direct rollout pays, right or wrong
    assert penalty_control(high, correct, theta=0.3) == [0.0, 0.0, 0.0, 0.1, 0.1]


def test_paper_mode_uses_both_penalty_sizes_and_no_correct_answer_means_no_penalty():
    high, correct = group((True, True), (False, True), (False, True))
    assert penalty_control(high, correct, theta=0.2, direct_penalty=0.05, high_res_penalty=0.3) == [0.3, 0.0, 0.0]
    assert penalty_control([True, False], [False, False], theta=0.2) == [0.0, 0.0]
    assert penalty_control([True, False], [False, False], theta=0.2, mode="upstream") == [0.0, 0.0]


def test_theta_edges():
    high, correct = group((True, True), (False, True), (False, False))
    # theta 0: r < 0 never holds -> penalise high-res whenever anything is correct
    assert penalty_control(high, correct, theta=0.0) == [0.1, 0.0, 0.0]
    # theta 1: r < 1 unless every correct answer is direct
    assert penalty_control(high, correct, theta=1.0) == [0.0, 0.1, 0.1]
    only_direct = group((False, True), (True, False))
    assert penalty_control(*only_direct, theta=1.0) == [0.0, 0.1]


def test_upstream_mode_matches_the_released_code():
    high, correct = group((True, True), (True, False), (False, True), (False, False), (True, True), (True, True))
    # r = 1 / 4 = 0.25: correct high-res answers always lose 0.1; 0 < r < theta? (theta 0.3) -> correct direct too
    assert penalty_control(high, correct, theta=0.3, mode="upstream") == [0.1, 0.0, 0.1, 0.0, 0.1, 0.1]
    assert penalty_control(high, correct, theta=0.2, mode="upstream") == [0.1, 0.0, 0.0, 0.0, 0.1, 0.1]
    # r = 0 (no correct direct answer): direct answers are not penalised in upstream mode
    assert penalty_control([True, False], [True, False], theta=0.5, mode="upstream") == [0.1, 0.0]


def test_flat_and_none_modes():
    assert penalty_control([True, False, True], [False, True, True], theta=0.2, mode="flat") == [0.1, 0.0, 0.1]
    assert penalty_control([True, False], [True, True], theta=0.2, mode="none") == [0.0, 0.0]
    with pytest.raises(ValueError, match="penalty mode"):
        penalty_control([True], [True], theta=0.2, mode="bogus")


@pytest.mark.parametrize(
    "prediction,truth,expected",
    [
        ("Red.", "red", True),
        ("the red", "Red", True),
        ("blue", "red", False),
        ("3", "3.0", True),
        ("1,000", "1000", True),
        ("47%", "47", True),
        ("0.47", "47", False),
        ("46", "47", False),
        ("\\boxed{12}", "12", True),
        ("(B)", "B", True),
        ("B. a cat", "B", True),
        ("b", "B", True),
        ("A cat", "B", False),
        ("", "red", False),
        ("seven", "7", False),
    ],
)
def test_rule_judge(prediction, truth, expected):
    verdict = RuleJudge().judge([JudgeItem("q", truth, prediction)])[0]
    assert verdict.correct is expected and verdict.valid


def test_rule_judge_accepts_any_alias_and_numeric_tolerance():
    assert RuleJudge().judge([JudgeItem("q", "car", "automobile", ("car", "automobile"))])[0].correct
    assert RuleJudge(numeric_tolerance=0.05).judge([JudgeItem("q", "47", "46")])[0].correct
