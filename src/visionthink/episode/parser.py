"""Parse one model turn into a final answer, a tool call, or a malformed turn.

The parser decides what the environment does next (answer -> episode ends, tool call ->
high-resolution image, malformed -> error turn or end). It never raises: every string maps
to exactly one of the three results. How strictly a turn follows the prompt's layout is the
format reward's business (``visionthink.reward.format``), not the parser's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from visionthink.episode.prompts import PromptSpec, ToolProtocol, ToolSpec

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
# The tag protocol's one call (paper Table 10), reported as the agent prompt's resize call
TAG_TOOL_NAME = "resize_image"


@dataclass(frozen=True)
class FinalAnswer:
    text: str
    answer: str
    think: str | None
    boxed: str | None


@dataclass(frozen=True)
class ToolCall:
    text: str
    name: str
    arguments: dict[str, Any]
    think: str | None


@dataclass(frozen=True)
class Malformed:
    text: str
    reason: str
    # True when the turn tried to call a tool, so the environment may answer with an error turn.
    tool_intent: bool


ParsedTurn = FinalAnswer | ToolCall | Malformed


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces matched; None if absent or unbalanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[begin:index].strip()
            depth -= 1
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys in JSON object")
    return dict(pairs)


def strict_json(text: str) -> Any:
    """``json.loads`` without the extensions Python accepts (NaN, Infinity, duplicate keys)."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def _think(text: str) -> str | None:
    match = THINK_RE.search(text)
    return match.group(1).strip() if match else None


class TurnParser:
    def __init__(self, protocol: ToolProtocol, tools: Sequence[ToolSpec] = (), resize_tag: str = "<resize>"):
        self.protocol = protocol
        self.resize_tag = resize_tag
        self.validators = {}
        for tool in tools:
            schema = {"additionalProperties": False, **tool.parameters}
            self.validators[tool.name] = Draft202012Validator(schema)
        self.tool_names = [tool.name for tool in tools]

    @classmethod
    def for_prompt(cls, prompt: PromptSpec) -> TurnParser:
        return cls(prompt.tool_protocol, prompt.tools, prompt.resize_tag)

    def parse(self, text: str) -> ParsedTurn:
        if self.protocol == "json" and (TOOL_OPEN in text or TOOL_CLOSE in text):
            return self._json_tool_call(text)
        if self.protocol == "tag" and self.resize_tag in text:
            return self._tag_tool_call(text)
        return self._answer(text)

    def _answer(self, text: str) -> ParsedTurn:
        opens, closes = text.count(ANSWER_OPEN), text.count(ANSWER_CLOSE)
        if opens == 0 and closes == 0:
            reason = "no <answer>...</answer> and no tool call"
            return Malformed(text, reason, tool_intent=False)
        if opens != 1 or closes != 1:
            return Malformed(
                text, f"expected one <answer>...</answer>, found {opens} open and {closes} close tags", False
            )
        start, end = text.index(ANSWER_OPEN) + len(ANSWER_OPEN), text.index(ANSWER_CLOSE)
        if end < start:
            return Malformed(text, "</answer> comes before <answer>", tool_intent=False)
        answer = text[start:end].strip()
        return FinalAnswer(text=text, answer=answer, think=_think(text), boxed=extract_boxed(answer))

    def _json_tool_call(self, text: str) -> ParsedTurn:
        opens, closes = text.count(TOOL_OPEN), text.count(TOOL_CLOSE)
        if opens != 1 or closes != 1:
            reason = f"expected exactly one {TOOL_OPEN}...{TOOL_CLOSE}, found {opens} open and {closes} close tags"
            return Malformed(text, reason, tool_intent=True)
        start, end = text.index(TOOL_OPEN) + len(TOOL_OPEN), text.index(TOOL_CLOSE)
        if end < start:
            return Malformed(text, f"{TOOL_CLOSE} comes before {TOOL_OPEN}", tool_intent=True)
        if ANSWER_OPEN in text or ANSWER_CLOSE in text:
            return Malformed(text, "a turn cannot both call a tool and give an <answer>", tool_intent=True)
        try:
            call = strict_json(text[start:end].strip())
        except (ValueError, RecursionError) as error:
            return Malformed(text, f"the tool call is not valid JSON ({error})", tool_intent=True)
        if not isinstance(call, dict) or set(call) != {"name", "arguments"}:
            reason = 'the tool call must be a JSON object with exactly the keys "name" and "arguments"'
            return Malformed(text, reason, tool_intent=True)
        name, arguments = call["name"], call["arguments"]
        if not isinstance(name, str) or name not in self.validators:
            return Malformed(text, f"unknown tool {name!r}; available: {', '.join(self.tool_names)}", tool_intent=True)
        if not isinstance(arguments, dict):
            return Malformed(text, '"arguments" must be a JSON object', tool_intent=True)
        errors = sorted(self.validators[name].iter_errors(arguments), key=lambda error: error.path)
        if errors:
            return Malformed(text, f"invalid arguments for {name}: {errors[0].message}", tool_intent=True)
        return ToolCall(text=text, name=name, arguments=arguments, think=_think(text))

    def _tag_tool_call(self, text: str) -> ParsedTurn:
        count = text.count(self.resize_tag)
        if count != 1:
            return Malformed(text, f"expected one {self.resize_tag}, found {count}", tool_intent=True)
        if ANSWER_OPEN in text or ANSWER_CLOSE in text:
            return Malformed(text, "a turn cannot both request a resize and give an <answer>", tool_intent=True)
        return ToolCall(text=text, name=TAG_TOOL_NAME, arguments={"action": "resize"}, think=_think(text))
