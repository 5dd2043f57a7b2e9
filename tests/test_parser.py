"""The turn parser: typed results, and property tests on arbitrary strings."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_prompt
from visionthink.episode import FinalAnswer, Malformed, ToolCall, TurnParser
from visionthink.episode.parser import extract_boxed, strict_json

AGENT = TurnParser.for_prompt(load_prompt("agent"))
TAG = TurnParser.for_prompt(load_prompt("simple_resize"))
CALL = '{"name": "resize_image", "arguments": {"action": "resize"}}'


def test_final_answer_with_think_and_boxed():
    parsed = AGENT.parse("<think>count them</think>\n<answer>The answer is \\boxed{\\frac{1}{2}}.</answer>")
    assert isinstance(parsed, FinalAnswer)
    assert parsed.think == "count them"
    assert parsed.answer == "The answer is \\boxed{\\frac{1}{2}}."
    assert parsed.boxed == "\\frac{1}{2}"


def test_tool_call_with_validated_arguments():
    parsed = AGENT.parse(f"<think>too small</think>\n<tool_call>\n{CALL}\n</tool_call>")
    assert isinstance(parsed, ToolCall)
    assert (parsed.name, parsed.arguments, parsed.think) == ("resize_image", {"action": "resize"}, "too small")


def test_malformed_turns_say_why():
    cases = {
        "<tool_call>{not json}</tool_call>": "not valid JSON",
        f"<tool_call>{CALL}</tool_call><tool_call>{CALL}</tool_call>": "exactly one",
        '<tool_call>{"name": "crop", "arguments": {}}</tool_call>': "unknown tool",
        '<tool_call>{"name": "resize_image", "arguments": {"action": "zoom"}}</tool_call>': "invalid arguments",
        '<tool_call>{"name": "resize_image", "arguments": {"action": "resize", "x": 1}}</tool_call>': "invalid arguments",
        '<tool_call>{"name": "resize_image", "arguments": {"action": NaN}}</tool_call>': "not valid JSON",
        f"<tool_call>{CALL}</tool_call><answer>3</answer>": "both",
        "just text": "no <answer>",
        "<answer>1</answer><answer>2</answer>": "expected one <answer>",
    }
    for text, reason in cases.items():
        parsed = AGENT.parse(text)
        assert isinstance(parsed, Malformed), text
        assert reason in parsed.reason, (text, parsed.reason)
    assert AGENT.parse("<tool_call>{not json}</tool_call>").tool_intent
    assert not AGENT.parse("just text").tool_intent


def test_tag_protocol():
    assert isinstance(TAG.parse("I cannot read it. <resize></resize>"), ToolCall)
    assert isinstance(TAG.parse("<resize> <resize>"), Malformed)
    assert isinstance(TAG.parse("<answer>7</answer>"), FinalAnswer)


def test_boxed_extraction_matches_braces():
    assert extract_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert extract_boxed("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_boxed("\\boxed{unclosed") is None


TAGS = st.sampled_from(
    ["<tool_call>", "</tool_call>", "<answer>", "</answer>", "<think>", "</think>", CALL, "{", "}", '"', "\n"]
)
TEXT = st.lists(st.one_of(st.text(max_size=12), TAGS), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_parser_never_raises_and_accepts_only_valid_single_known_calls(text):
    parsed = AGENT.parse(text)
    assert isinstance(parsed, (FinalAnswer, ToolCall, Malformed))
    if isinstance(parsed, ToolCall):
        assert text.count("<tool_call>") == 1 and text.count("</tool_call>") == 1
        body = text.split("<tool_call>")[1].split("</tool_call>")[0]
        call = json.loads(body)
        assert call == {"name": "resize_image", "arguments": {"action": "resize"}}
        assert parsed.name == "resize_image"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_invalid_json_or_unknown_tools_are_never_tool_calls(body, name):
    for text in (
        f"<tool_call>{body}</tool_call>",
        f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {{"action": "resize"}}}}</tool_call>',
    ):
        parsed = AGENT.parse(text)
        if isinstance(parsed, ToolCall):
            strict_json(text.split("<tool_call>")[1].split("</tool_call>")[0].strip())
            assert parsed.name == "resize_image"
