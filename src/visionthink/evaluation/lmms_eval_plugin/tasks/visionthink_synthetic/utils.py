"""The synthetic task's hooks: the released VisionThink layout (images, problem, original_answer, info)."""

from visionthink.reward.judges.base import JudgeItem
from visionthink.reward.judges.rule import RuleJudge

JUDGE = RuleJudge()


def doc_to_visual(doc):
    return [doc["images"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["problem"]


def process_results(doc, results):
    item = JudgeItem(question=doc["problem"], ground_truth=doc["original_answer"], prediction=results[0])
    correct = float(JUDGE.judge([item])[0].correct)
    split = "accuracy_needs_high_res" if doc["info"]["use_tool"] else "accuracy_low_res_enough"
    return {"accuracy": correct, split: correct}
