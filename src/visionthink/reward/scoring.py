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
    # paper | upstream | flat | none (see visionthink.reward.penalty)
    penalty_mode: Literal["paper", "upstream", "flat", "none"] = "paper"
    # Subtracted from direct answers when r < theta.
    direct_penalty: float = 0.1
    # Subtracted from high-resolution rollouts when r >= theta.
    high_res_penalty: float = 0.1

    def __post_init__(self) -> None:
        if self.penalty_mode not in PENALTY_MODES:
            raise ValueError(f"reward.penalty_mode must be one of {PENALTY_MODES}, got {self.penalty_mode!r}")
        if not 0.0 <= self.penalty_theta <= 1.0:
            raise ValueError(f"reward.penalty_theta must lie in [0, 1], got {self.penalty_theta}")


@dataclass(frozen=True)
class RolloutScore:
    accuracy: float
    format: float
    penalty: float
    reward: float
    # False when the judge failed on this rollout; its whole group is then dropped.
    valid: bool
    verdict: Verdict


def judge_trajectories(trajectories: Sequence[Trajectory], judge: Judge) -> list[Verdict]:
    """Ask the judge about every trajectory with a final answer; others are wrong without asking."""
    verdicts: list[Verdict | None] = [None] * len(trajectories)
    items, positions = [], []
    for position, trajectory in enumerate(trajectories):
        answer = trajectory.final_answer
        if answer is None:
            verdicts[position] = Verdict(False, f"no final answer ({trajectory.end_reason})")
            continue
        sample = trajectory.episode.sample
        items.append(
            JudgeItem(sample.question.replace("<image>", "").strip(), sample.answer, answer.answer, sample.answers)
        )
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
            high, correct, config.penalty_theta, config.direct_penalty, config.penalty_mode, config.high_res_penalty
        )
        for i, verdict, ok, penalty in zip(members, group_verdicts, correct, penalties, strict=True):
            accuracy = config.accuracy_weight * float(ok)
            fmt = format_reward(
                trajectories[i].turn_texts, config.format_weight, prompt.tool_protocol, prompt.tools, prompt.resize_tag
            )
            scores[i] = RolloutScore(accuracy, fmt, penalty, accuracy + fmt - penalty, verdict.valid, verdict)
    return scores  # type: ignore[return-value]
