"""The reproduction report's claim checks, on hand-made numbers that pass and that fail."""

from __future__ import annotations

import copy

from omegaconf import OmegaConf

from conftest import CONF_DIR
from visionthink.reproduce.claims import check_claims

THRESHOLDS = OmegaConf.load(CONF_DIR / "reproduce.yaml").claims


def adaptive(label_ratio, coarse_ratio, score, tokens, precision, recall, label_score=95.0):
    return {
        "resize_ratio/needs_high_res": label_ratio, "resize_ratio/low_res_enough": coarse_ratio,
        "resize_ratio": 0.3 * label_ratio + 0.7 * coarse_ratio, "score": score, "visual_tokens": tokens,
        "decision_precision": precision, "decision_recall": recall, "score/needs_high_res": label_score,
    }  # fmt: skip


GOOD = {
    "base_full": {"score": 100.0, "visual_tokens": 64.0},
    "paper": adaptive(0.95, 0.05, 97.0, 36.0, 0.9, 0.95),
    "no_penalty": adaptive(1.0, 0.6, 98.0, 60.0, 0.4, 1.0),
    "flat_penalty": adaptive(0.0, 0.0, 85.0, 16.0, 0.0, 0.0, label_score=50.0),
    "theta": [(0.05, 0.2), (0.5, 0.3), (0.9, 0.8)],
}


def verdicts(measured):
    return {claim.key: claim.reproduced for claim in check_claims(THRESHOLDS, measured)}


def test_a_run_that_shows_every_claim_on_both_seeds_reproduces_them_all():
    assert verdicts({0: GOOD, 1: GOOD}) == dict.fromkeys("abcdef", True)


def test_each_claim_fails_on_numbers_that_miss_its_threshold():
    failing = {
        "a": ("paper", "resize_ratio/low_res_enough", 0.5),
        "b": ("paper", "visual_tokens", 50.0),
        "c": ("no_penalty", "resize_ratio/low_res_enough", 0.1),
        "d": ("flat_penalty", "score/needs_high_res", 90.0),
        "f": ("paper", "decision_recall", 0.5),
    }
    for key, (variant, figure, value) in failing.items():
        bad = copy.deepcopy(GOOD)
        bad[variant][figure] = value
        result = verdicts({0: GOOD, 1: bad})  # one seed failing is enough
        assert result[key] is False, key
    not_monotone = dict(GOOD, theta=[(0.05, 0.2), (0.5, 0.9), (0.9, 0.8)])
    assert verdicts({0: not_monotone})["e"] is False
    too_few = dict(GOOD, theta=[(0.05, 0.2), (0.9, 0.8)])
    assert verdicts({0: too_few})["e"] is False


def test_a_claim_without_numbers_is_not_reproduced():
    assert verdicts({0: {"theta": []}}) == dict.fromkeys("abcdef", False)
