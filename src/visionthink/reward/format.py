"""The format reward (paper B.2): ``weight`` only when every turn follows the prompt's layout.

JSON tool protocol (agent prompt):
- a final turn is ``<think>...</think>...<answer>...</answer>``: one of each tag, no tool call;
- every earlier turn is ``<think>...</think>...<tool_call>JSON</tool_call>``: one of each tag,
  valid JSON naming a declared function with valid arguments, no ``<answer>``.
Tag protocol (Table 10 prompts): a final turn ends with ``<answer>...</answer>`` (one pair, no
resize tag); every earlier turn ends with the resize tag (``<resize>`` or ``<resize></resize>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from visionthink.episode.parser import ToolCall, TurnParser
from visionthink.episode.prompts import ToolProtocol, ToolSpec

DIRECT_ANSWER = re.compile(r"^<think>.*</think>.*<answer>.*</answer>$", re.DOTALL)
TOOL_TURN = re.compile(r"^<think>.*</think>.*<tool_call>.*</tool_call>$", re.DOTALL)
TAG_ANSWER = re.compile(r".*<answer>.*</answer>$", re.DOTALL)
RESIZE_TOOL = ToolSpec(
    name="resize_image",
    description="Resize the image resolution.",
    parameters={
        "type": "object",
        "properties": {"action": {"type": "string", "enum": ["resize"]}},
        "required": ["action"],
    },
)


def _counts_are_one(text: str, *tags: str) -> bool:
    return all(text.count(tag) == 1 for tag in tags)


def is_direct_answer(turn: str) -> bool:
    turn = turn.strip()
    return (
        DIRECT_ANSWER.match(turn) is not None
        and _counts_are_one(turn, "<think>", "</think>", "<answer>", "</answer>")
        and "<tool_call>" not in turn
        and "</tool_call>" not in turn
    )


def is_tool_turn(turn: str, parser: TurnParser) -> bool:
    turn = turn.strip()
    return (
        TOOL_TURN.match(turn) is not None
        and _counts_are_one(turn, "<think>", "</think>", "<tool_call>", "</tool_call>")
        and "<answer>" not in turn
        and "</answer>" not in turn
        and isinstance(parser.parse(turn), ToolCall)
    )


def _is_tag_answer(turn: str, tag: str) -> bool:
    turn = turn.strip()
    return TAG_ANSWER.match(turn) is not None and _counts_are_one(turn, "<answer>", "</answer>") and tag not in turn


def _is_tag_tool_turn(turn: str, tag: str) -> bool:
    turn = turn.strip()
    closing = tag.replace("<", "</", 1)
    ends_with_tag = turn.endswith(tag) or turn.endswith(tag + closing)
    return ends_with_tag and turn.count(tag) == 1 and "<answer>" not in turn and "</answer>" not in turn


def format_reward(
    turns: list[str],
    weight: float = 0.5,
    protocol: ToolProtocol = "json",
    tools: Sequence[ToolSpec] = (RESIZE_TOOL,),
    resize_tag: str = "<resize>",
) -> float:
    """``weight`` if the whole episode is well formatted, else 0."""
    if not turns:
        return 0.0
    *earlier, final = turns
    if protocol == "tag":
        ok = all(_is_tag_tool_turn(turn, resize_tag) for turn in earlier) and _is_tag_answer(final, resize_tag)
    else:
        parser = TurnParser("json", tools)
        ok = (protocol == "json" or not earlier) and all(is_tool_turn(turn, parser) for turn in earlier)
        ok = ok and is_direct_answer(final)
    return weight if ok else 0.0
