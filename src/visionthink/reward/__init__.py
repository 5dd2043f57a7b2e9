"""Rewards: format reward, penalty control, judges, and the per-group scoring that combines them.

Pure functions, importable without Lightning:

    from visionthink.reward import format_reward, penalty_control
"""

from visionthink.reward.format import format_reward
from visionthink.reward.judges import Judge, JudgeItem, RuleJudge, Verdict
from visionthink.reward.penalty import PENALTY_MODES, penalty_control
from visionthink.reward.scoring import RewardConfig, RolloutScore, judge_trajectories, score_trajectories

__all__ = [
    "PENALTY_MODES",
    "Judge",
    "JudgeItem",
    "RewardConfig",
    "RolloutScore",
    "RuleJudge",
    "Verdict",
    "format_reward",
    "judge_trajectories",
    "penalty_control",
    "score_trajectories",
]
