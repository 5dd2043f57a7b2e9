"""Benchmark metrics on hand-made cases."""

from __future__ import annotations

import pytest

from visionthink.evaluation.metrics import (
    anls,
    mme_answer,
    mme_scores,
    ocrbench_match,
    pope_label,
    pope_scores,
    relaxed_correctness,
)


@pytest.mark.parametrize(
    "prediction,target,expected",
    [
        ("47", "47", True),
        ("46", "47", True),  # within 5%: the official metric's flaw the paper shows (Fig. 6)
        ("47%", "47", False),  # 0.47 vs 47: the other flaw
        ("0.47", "47", False),
        ("44", "47", False),
        ("Yes", "yes", True),
        ("0", "0", True),
        ("0.1", "0", False),
        ("0.0", "0", False),  # a target of 0 is compared as text (official code, lmms-eval)
    ],
)
def test_chartqa_relaxed_correctness(prediction, target, expected):
    assert relaxed_correctness(prediction, target) is expected


def test_anls():
    assert anls("Hello World", ["hello world"]) == 1.0
    assert anls("hello wrld", ["hello world"]) == pytest.approx(1 - 1 / 11)
    assert anls("abc", ["xyz"]) == 0.0  # similarity 0 < 0.5
    assert anls("jon", ["john", "jon"]) == 1.0  # best accepted answer
    assert anls("jo", ["john"]) == 0.0  # normalised distance 2/4 is not below the 0.5 threshold
    assert anls("joh", ["john"]) == pytest.approx(0.75)


def test_ocrbench_containment():
    assert ocrbench_match("The sign says STOP here", ["stop"])
    assert not ocrbench_match("go", ["stop"])
    hme = "Handwritten Mathematical Expression Recognition"
    assert ocrbench_match("x ^ { 2 } + 1", ["x^{2}+1"], hme)
    assert not ocrbench_match("x^{3}+1", ["x^{2}+1"], hme)


def test_pope():
    # lmms-eval 0.7 counts only the bare words; a sentence is neither answer
    assert [pope_label(p) for p in ["Yes", " no ", "Yes, there is.", "There is not a dog"]] == ["yes", "no", None, None]
    scores = pope_scores(["yes", "yes", "no", "no"], ["yes", "no", "no", "yes"])
    assert scores["accuracy"] == 50.0 and scores["precision"] == 50.0 and scores["recall"] == 50.0
    assert scores["f1"] == 50.0 and scores["yes_ratio"] == 50.0
    perfect = pope_scores(["yes", "no"], ["yes", "no"])
    assert perfect["f1"] == 100.0
    # An answer that is neither word is wrong, and counts as neither a false positive nor a miss of "yes"
    vague = pope_scores(["yes", "Yes, it is", "maybe"], ["yes", "yes", "no"])
    assert vague["accuracy"] == 100 / 3 and vague["precision"] == 100.0 and vague["recall"] == 100.0


def test_mme_acc_plus():
    assert mme_answer("Yes, it is.") == "yes" and mme_answer("I think no") == "no" and mme_answer("maybe") is None
    records = [
        ("existence", "img1", True), ("existence", "img1", True),  # both right: counts for acc+
        ("existence", "img2", True), ("existence", "img2", False),
        ("code_reasoning", "img3", False), ("code_reasoning", "img3", False),
    ]  # fmt: skip
    scores = mme_scores(records)
    assert scores["mme/existence"] == pytest.approx(75.0 + 50.0)
    assert scores["mme/code_reasoning"] == 0.0
    assert scores["perception"] == pytest.approx(125.0) and scores["cognition"] == 0.0
    assert scores["total"] == pytest.approx(125.0)


def test_label_scores_split_the_score_by_use_tool_label():
    from types import SimpleNamespace

    from visionthink.evaluation.scoring import Record, label_scores
    from visionthink.reward.judges import Verdict

    def record(use_tool, correct):
        sample = SimpleNamespace(use_tool=use_tool, answer="a", answers=None, info={})
        return Record(SimpleNamespace(episode=SimpleNamespace(sample=sample)), "a", Verdict(correct, ""))

    records = [record(True, True), record(True, False), record(True, False), record(False, True), record(None, False)]
    assert label_scores("accuracy", records) == {"score/needs_high_res": pytest.approx(100 / 3),
                                                 "score/low_res_enough": 100.0}  # fmt: skip
    assert label_scores("accuracy", [record(None, True)]) == {}
