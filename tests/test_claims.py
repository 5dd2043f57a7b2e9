"""The reproduction report's claim checks, on hand-made numbers that pass and that fail."""

from __future__ import annotations

import copy

from omegaconf import OmegaConf

from conftest import CONF_DIR
from visionthink.reproduce.claims import check_claims
from visionthink.reproduce.zoom import check_zoom_claims

THRESHOLDS = OmegaConf.load(CONF_DIR / "reproduce.yaml").claims


def adaptive(label_ratio, coarse_ratio, score, tokens, precision, recall, label_score=95.0):
    return {
        "resize_ratio/needs_high_res": label_ratio, "resize_ratio/low_res_enough": coarse_ratio,
        # The stripes question, asked of images that need the full resolution and of images that do not
        "resize_ratio/stripes/needs_high_res": label_ratio, "resize_ratio/stripes/low_res_enough": coarse_ratio,
        "resize_ratio": 0.3 * label_ratio + 0.7 * coarse_ratio, "score": score, "visual_tokens": tokens,
        "decision_precision": precision, "decision_recall": recall, "score/needs_high_res": label_score,
    }  # fmt: skip


GOOD = {
    "base_full": {"score": 100.0, "visual_tokens": 64.0},
    "paper": adaptive(0.95, 0.05, 97.0, 36.0, 0.9, 0.95),
    "no_penalty": adaptive(1.0, 0.6, 98.0, 60.0, 0.4, 1.0),
    "flat_penalty": adaptive(0.0, 0.0, 85.0, 16.0, 0.0, 0.0, label_score=50.0),
    "theta": [(0.05, 0.2), (0.5, 0.3), (0.9, 0.8)],
    # The sampled policy at the end of training
    "paper_train": {"needs_high_res": 0.8, "low_res_enough": 0.2},
}
# Another initialisation: only the paper penalty runs from it
OTHER_INIT = {key: GOOD[key] for key in ("base_full", "paper", "paper_train")} | {"theta": []}


def verdicts(measured):
    return {claim.key: claim.reproduced for claim in check_claims(THRESHOLDS, measured, "stripes")}


def test_a_run_that_shows_every_claim_on_both_seeds_reproduces_them_all():
    assert verdicts({(0, 0): GOOD, (0, 1): GOOD, (1, 0): OTHER_INIT, (1, 1): OTHER_INIT}) == dict.fromkeys(
        "abcdef", True
    )


def test_the_claims_every_initialisation_is_checked_on_fail_with_one_of_them():
    bad = copy.deepcopy(OTHER_INIT)
    bad["paper"]["resize_ratio/stripes/low_res_enough"] = 0.6  # asks on the same question whatever the image
    result = verdicts({(0, 0): GOOD, (1, 0): OTHER_INIT, (2, 0): bad})
    assert result["a"] is False and result["c"] is True


def test_a_policy_selective_only_when_greedy_fails_a():
    """(a) also asks the sampled policy at the end of training to be selective."""
    unselective = dict(GOOD, paper_train={"needs_high_res": 0.7, "low_res_enough": 0.5})
    assert verdicts({(0, 0): unselective})["a"] is False
    assert verdicts({(0, 0): {k: v for k, v in GOOD.items() if k != "paper_train"}})["a"] is False


def test_each_claim_fails_on_numbers_that_miss_its_threshold():
    failing = {
        "a": ("paper", "resize_ratio/stripes/low_res_enough", 0.5),
        "b": ("paper", "visual_tokens", 50.0),
        "c": ("no_penalty", "resize_ratio/low_res_enough", 0.1),
        "d": ("flat_penalty", "score/needs_high_res", 90.0),
        "f": ("paper", "decision_recall", 0.5),
    }
    for key, (variant, figure, value) in failing.items():
        bad = copy.deepcopy(GOOD)
        bad[variant][figure] = value
        result = verdicts({(0, 0): GOOD, (0, 1): bad})  # one seed failing is enough
        assert result[key] is False, key
    not_monotone = dict(GOOD, theta=[(0.05, 0.2), (0.5, 0.9), (0.9, 0.8)])
    assert verdicts({(0, 0): not_monotone})["e"] is False
    too_few = dict(GOOD, theta=[(0.05, 0.2), (0.9, 0.8)])
    assert verdicts({(0, 0): too_few})["e"] is False


def test_a_claim_without_numbers_is_not_reproduced():
    assert verdicts({(0, 0): {"theta": []}}) == dict.fromkeys("abcdef", False)


ZOOM_THRESHOLDS = OmegaConf.load(CONF_DIR / "reproduce_zoom.yaml").claims
ZOOMS = {
    # Zooms on most label questions, on the label, as right as resizing, for fewer tokens
    "zoom": {"tool_calls/zoom/needs_high_res": 0.9, "zoom_on_target": 0.95, "score/needs_high_res": 90.0,
             "score": 95.0, "visual_tokens": 18.0},
    "resize_only": {"score/needs_high_res": 95.0, "score": 97.0, "visual_tokens": 30.0,
                    "tool_calls/resize/needs_high_res": 0.95},
}  # fmt: skip


def zoom_verdicts(measured):
    return {claim.key: claim.reproduced for claim in check_zoom_claims(ZOOM_THRESHOLDS, measured)}


def test_the_zoom_claims_hold_on_numbers_that_show_them_and_fail_one_by_one():
    assert zoom_verdicts({(0, 0): ZOOMS, (0, 1): ZOOMS}) == {"z1": True, "z2": True, "z3": True}
    failing = {
        "z1": [("zoom", "tool_calls/zoom/needs_high_res", 0.3), ("zoom", "zoom_on_target", 0.3)],
        "z2": [
            ("zoom", "score/needs_high_res", 60.0),
            ("zoom", "score", 70.0),
            # A resize-only policy that stopped resizing is no comparison
            ("resize_only", "tool_calls/resize/needs_high_res", 0.1),
        ],
        "z3": [("zoom", "visual_tokens", 29.0)],
    }
    for key, cases in failing.items():
        for variant, figure, value in cases:
            bad = copy.deepcopy(ZOOMS)
            bad[variant][figure] = value
            assert zoom_verdicts({(0, 0): ZOOMS, (0, 1): bad})[key] is False, (key, figure)
    # Without the resize-only policy's evaluation there is nothing to compare with
    assert zoom_verdicts({(0, 0): {"zoom": ZOOMS["zoom"], "resize_only": None}})["z2"] is False
