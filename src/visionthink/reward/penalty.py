"""Penalty control (paper Eq. 5 and the released code's variant), for one group of rollouts.

With ``r = C_direct / (C_direct + C_high)`` over the group's correct answers:

- ``paper``: if ``r < theta`` every direct answer loses ``penalty`` (low-resolution answers are
  rarely right: direct answers are lucky guesses); otherwise every rollout that used the high-
  resolution image loses ``high_res_penalty`` (the low-resolution image was enough).
- ``upstream`` (released code): every correct answer that used the tool loses
  ``high_res_penalty``; correct direct answers lose ``penalty`` when ``0 < r < theta``.
- ``flat``: every rollout that used the high-resolution image loses ``high_res_penalty``
  (the paper's "collapse to direct answering" ablation, Fig. 3).
- ``none``: no penalty (the "collapse to always upscaling" ablation).
- ``tokens``: every rollout that used a tool loses ``visual_token_rate`` per visual token its
  calls brought back (a zoom on a small region costs a fraction of a resize); as in ``paper``,
  direct answers lose ``penalty`` when ``r < theta``.

When no rollout of the group is correct, nothing is penalised (except in ``flat``, which does
not look at correctness).
"""

from __future__ import annotations

from collections.abc import Sequence

PENALTY_MODES = ("paper", "upstream", "flat", "none", "tokens")


def penalty_control(
    used_high_res: Sequence[bool],
    correct: Sequence[bool],
    *,
    theta: float,
    direct_penalty: float = 0.1,
    mode: str = "paper",
    high_res_penalty: float | None = None,
    tool_visual_tokens: Sequence[int] = (),
    visual_token_rate: float = 0.0,
) -> list[float]:
    """The amount subtracted from each rollout's reward: ``direct_penalty`` for a rollout that
    answered without the high-resolution image, ``high_res_penalty`` (default: the same) for one
    that asked for it; in ``tokens`` mode ``visual_token_rate`` times ``tool_visual_tokens``."""
    if len(used_high_res) != len(correct):
        raise ValueError(f"used_high_res has {len(used_high_res)} entries but correct has {len(correct)}")
    if mode not in PENALTY_MODES:
        raise ValueError(f"penalty mode {mode!r} is not one of {PENALTY_MODES}")
    if mode == "tokens" and len(tool_visual_tokens) != len(correct):
        raise ValueError(f"tokens mode needs tool_visual_tokens per rollout, got {len(tool_visual_tokens)}")
    high_penalty = direct_penalty if high_res_penalty is None else high_res_penalty
    if mode == "none":
        return [0.0] * len(correct)
    if mode == "flat":
        return [high_penalty if high else 0.0 for high in used_high_res]
    priced = [visual_token_rate * tokens for tokens in tool_visual_tokens] if mode == "tokens" else []
    correct_direct = sum(ok and not high for high, ok in zip(used_high_res, correct, strict=True))
    correct_high = sum(ok and high for high, ok in zip(used_high_res, correct, strict=True))
    if correct_direct + correct_high == 0:
        return priced or [0.0] * len(correct)
    ratio = correct_direct / (correct_direct + correct_high)
    if mode == "tokens":
        lucky = ratio < theta
        return [
            price if high else (direct_penalty if lucky else 0.0)
            for high, price in zip(used_high_res, priced, strict=True)
        ]
    if mode == "paper":
        if ratio < theta:
            return [0.0 if high else direct_penalty for high in used_high_res]
        return [high_penalty if high else 0.0 for high in used_high_res]
    penalties = []
    for high, ok in zip(used_high_res, correct, strict=True):
        if ok and high:
            penalties.append(high_penalty)
        elif ok and 0 < ratio < theta:
            penalties.append(direct_penalty)
        else:
            penalties.append(0.0)
    return penalties
