"""Prompt configs: each is selectable and renders the paper's text with the image in place."""

from __future__ import annotations

import json

import pytest

from conftest import load_prompt
from visionthink.episode import PromptSpec


@pytest.mark.parametrize(
    "name,protocol",
    [("agent", "json"), ("simple_resize", "tag"), ("simple_think_resize", "tag"), ("general_qa", "none")],
)
def test_each_prompt_is_selectable(name, protocol):
    prompt = load_prompt(name)
    assert prompt.name == name and prompt.tool_protocol == protocol
    system, user = prompt.first_turn("<image>How many cats?")
    assert user["content"].count({"type": "image"}) == 1
    text = "".join(part.get("text", "") for part in user["content"])
    assert "How many cats?" in text and "<image>" not in text


def test_agent_prompt_declares_the_resize_tool_as_valid_json():
    prompt = load_prompt("agent")
    system = prompt.system_text()
    declaration = system.split("<tools>\n")[1].split("\n</tools>")[0]
    tool = json.loads(declaration)
    assert tool["function"]["name"] == "resize_image"
    assert tool["function"]["parameters"]["properties"]["action"]["enum"] == ["resize"]
    assert system.startswith("You are a helpful assistant.\n\n# Tools")


def test_tool_response_carries_one_image_and_the_paper_instruction():
    message = load_prompt("agent").tool_response_message()
    assert message["role"] == "user" and message["content"].count({"type": "image"}) == 1
    assert message["content"][0]["text"].startswith("<tool_response>\nThe resized image is shown below:")


def test_a_prompt_without_an_image_slot_is_rejected():
    with pytest.raises(ValueError, match="exactly one <image>"):
        PromptSpec(name="broken", tool_protocol="none", system="s", user="{question}")
