"""The LLM-as-judge prompt (paper Table 3), prediction hardening and strict verdict parsing.

The prediction is policy output: a policy rewarded by the judge learns whatever fools it. So
before it enters the prompt it is length-capped, flattened to one line, stripped of chat-template
tokens, has verdict-shaped text ("Score: 1", "Judgement: correct") redacted, and is delimited.
The judge's reply is accepted only through a line that is exactly a verdict ("Score: 1"); the
last such line wins. Anything else (a bare "1", "Score: 1" inside a sentence) is invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from visionthink.reward.judges.base import JudgeItem

PAPER_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs.\nYour task is to compare the predicted answer with the correct answer and determine if "
    "they match meaningfully. Here's how you can accomplish the task:\n------\n##INSTRUCTIONS:\n- Focus on the "
    "meaningful match between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases as "
    "valid matches.\n- Evaluate the correctness of the prediction compared to the answer."
)
VERDICT_SHAPED = re.compile(r"(?i)\b(score|judge?ment|verdict|grade|rating|evaluation|result)\s*[:=：]")
SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>")
ANOTHER_SCORE = re.compile(r"(?i)\bscore\b")
# "Score: 0 or 1", "Score: 1/0": the prompt's output format echoed, not a verdict (SmolLM2-135M
# replies so to 269 of the 270 audit questions when it generates freely).
ALTERNATIVE_SCORE = re.compile(r"(?i)^\W*(?:or|and|/|\|)\W*[01](?!\d)")


@dataclass(frozen=True)
class JudgePrompt:
    system: str
    # {question}, {ground_truth} and {prediction} are filled in.
    user: str
    # A verdict line; group 1 is "0" or "1", group 2 (optional) what follows on the line, e.g. a
    # short reason. Matched against every line of the reply.
    verdict_pattern: str = r"^\W*score\W*\s*([01])(?!\w)(.*)$"
    # Predictions longer than this are cut (chars).
    max_prediction_chars: int = 512
    # Put around the (sanitised) prediction.
    prediction_open: str = '"""'
    prediction_close: str = '"""'

    def sanitise(self, prediction: str) -> str:
        text = SPECIAL_TOKEN.sub(" ", prediction)
        text = VERDICT_SHAPED.sub("[redacted]", text)
        text = " ".join(text.replace(self.prediction_close, "'''").split())
        if len(text) > self.max_prediction_chars:
            text = text[: self.max_prediction_chars] + " [truncated]"
        return f"{self.prediction_open}{text}{self.prediction_close}"

    def render(self, item: JudgeItem) -> list[dict[str, str]]:
        ground_truth = " / ".join(item.ground_truths) if len(item.ground_truths) > 1 else item.ground_truth
        user = (
            self.user.replace("{question}", item.question)
            .replace("{ground_truth}", ground_truth)
            .replace("{prediction}", self.sanitise(item.prediction))
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def parse(self, reply: str) -> bool | None:
        """The last verdict line's score. A line may go on after its score ("Score: 1 (matches
        the ground truth)"), but not with another verdict or the other score as an alternative
        ("Score: 0 or 1"): that line is ambiguous and skipped."""
        pattern = re.compile(self.verdict_pattern, re.IGNORECASE)
        verdicts = []
        for line in reply.splitlines():
            match = pattern.match(line.strip())
            if match is None:
                continue
            rest = match.group(2) if pattern.groups >= 2 else ""
            if rest and (VERDICT_SHAPED.search(rest) or ANOTHER_SCORE.search(rest) or ALTERNATIVE_SCORE.match(rest)):
                continue
            verdicts.append(match.group(1))
        return verdicts[-1] == "1" if verdicts else None
