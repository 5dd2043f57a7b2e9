"""Rewards for trajectories: R = accuracy + format - penalty control, computed per group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from visionthink.episode.prompts import PromptSpec
from visionthink.reward.format import format_reward
from visionthink.reward.judges.base import Judge, JudgeItem, Verdict
from visionthink.reward.penalty import PENALTY_MODES, penalty_control
from visionthink.rollout.trajectory import Trajectory


@dataclass(frozen=True)
class RewardConfig:
    accuracy_weight: float = 1.0
    format_weight: float = 0.5
    # theta in Eq. 5: the low-resolution success ratio below which direct answers are penalised.
    penalty_theta: float = 0.2
    # paper | upstream | flat | none | tokens (see visionthink.reward.penalty)
    penalty_mode: Literal["paper", "upstream", "flat", "none", "tokens"] = "paper"
    # Subtracted from direct answers when r < theta.
    direct_penalty: float = 0.1
    # Subtracted from high-resolution rollouts when r >= theta.
    high_res_penalty: float = 0.1
    # tokens mode: subtracted per visual token a rollout's tool calls brought back.
    visual_token_rate: float = 1.0e-4
    # What the judge sees: `strict` = the final turn's single <answer>...</answer>; `split` = the
    # text after the last <answer> of the whole episode (the released code's two options).
    answer_extraction: Literal["strict", "split"] = "strict"

    def __post_init__(self) -> None:
        if self.answer_extraction not in ("strict", "split"):
            raise ValueError(f"reward.answer_extraction must be strict or split, got {self.answer_extraction!r}")
        if self.penalty_mode not in PENALTY_MODES:
            raise ValueError(f"reward.penalty_mode must be one of {PENALTY_MODES}, got {self.penalty_mode!r}")
        if not 0.0 <= self.penalty_theta <= 1.0:
            raise ValueError(f"reward.penalty_theta must lie in [0, 1], got {self.penalty_theta}")
        if self.visual_token_rate < 0:
            raise ValueError(f"reward.visual_token_rate must be >= 0, got {self.visual_token_rate}")


@dataclass(frozen=True)
class RolloutScore:
    accuracy: float
    format: float
    penalty: float
    reward: float
    # False when the judge failed on this rollout; its whole group is then dropped.
    valid: bool
    verdict: Verdict


def prediction(trajectory: Trajectory, extraction: str = "strict") -> str | None:
    """The answer text the judge sees, or None when the episode gave no answer."""
    if extraction == "split":
        text = " ".join(trajectory.turn_texts)
        return text.split("<answer>")[-1].split("</answer>")[0].strip() if "<answer>" in text else None
    answer = trajectory.final_answer
    return answer.answer if answer is not None else None


def judge_trajectories(trajectories: Sequence[Trajectory], judge: Judge, extraction: str = "strict") -> list[Verdict]:
    """Ask the judge about every trajectory with an answer; others are wrong without asking."""
    verdicts: list[Verdict | None] = [None] * len(trajectories)
    items, positions = [], []
    for position, trajectory in enumerate(trajectories):
        answer = prediction(trajectory, extraction)
        if answer is None:
            verdicts[position] = Verdict(False, f"no final answer ({trajectory.end_reason})")
            continue
        sample = trajectory.episode.sample
        question = sample.question.replace("<image>", "").strip()
        items.append(JudgeItem(question, sample.answer, answer, sample.answers))
        positions.append(position)
    for position, verdict in zip(positions, judge.judge(items) if items else [], strict=True):
        verdicts[position] = verdict
    return verdicts  # type: ignore[return-value]


def score_trajectories(
    trajectories: Sequence[Trajectory], verdicts: Sequence[Verdict], prompt: PromptSpec, config: RewardConfig
) -> list[RolloutScore]:
    """Scores in trajectory order; penalty control looks at each group (same ``group``) as a whole."""
    scores: list[RolloutScore | None] = [None] * len(trajectories)
    groups: dict[int, list[int]] = {}
    for position, trajectory in enumerate(trajectories):
        groups.setdefault(trajectory.group, []).append(position)
    for members in groups.values():
        group_verdicts = [verdicts[i] for i in members]
        correct = [bool(v.correct) for v in group_verdicts]
        high = [trajectories[i].used_high_res for i in members]
        penalties = penalty_control(
            high,
            correct,
            theta=config.penalty_theta,
            direct_penalty=config.direct_penalty,
            mode=config.penalty_mode,
            high_res_penalty=config.high_res_penalty,
            tool_visual_tokens=[trajectories[i].tool_visual_tokens for i in members],
            visual_token_rate=config.visual_token_rate,
        )
        for i, verdict, ok, penalty in zip(members, group_verdicts, correct, penalties, strict=True):
            accuracy = config.accuracy_weight * float(ok)
            fmt = format_reward(
                trajectories[i].turn_texts, config.format_weight, prompt.tool_protocol, prompt.tools, prompt.resize_tag
            )
            if any(turn.tool_error for turn in trajectories[i].turns):
                fmt = 0.0  # a call its tool could not execute (an empty box) is not well formed
            scores[i] = RolloutScore(accuracy, fmt, penalty, accuracy + fmt - penalty, verdict.valid, verdict)
    return scores  # type: ignore[return-value]
