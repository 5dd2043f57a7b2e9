"""Judges decide answer accuracy; every judge implements ``Judge.judge``."""

from visionthink.reward.judges.base import Judge, JudgeItem, Verdict
from visionthink.reward.judges.rule import RuleJudge

__all__ = ["Judge", "JudgeItem", "RuleJudge", "Verdict"]
