"""Judges decide answer accuracy; every judge implements ``Judge.judge``.

``RuleJudge`` (exact/numeric/multiple-choice/boxed), ``LocalJudge`` (a transformers causal LM)
and ``OpenAIJudge`` (any OpenAI-compatible server: OpenAI, Azure, ``vllm serve``).
"""

from visionthink.reward.judges.base import Judge, JudgeItem, JudgeStats, Verdict
from visionthink.reward.judges.local import LocalJudge
from visionthink.reward.judges.openai_judge import AzureSettings, OpenAIJudge
from visionthink.reward.judges.prompts import PAPER_SYSTEM, JudgePrompt
from visionthink.reward.judges.rule import RuleJudge

__all__ = [
    "PAPER_SYSTEM",
    "AzureSettings",
    "Judge",
    "JudgeItem",
    "JudgePrompt",
    "JudgeStats",
    "LocalJudge",
    "OpenAIJudge",
    "RuleJudge",
    "Verdict",
]
