"""Prompt templates (``conf/prompt/*.yaml``) and the chat messages built from them.

``<image>`` in a template marks where an image goes; ``{question}``, ``{tools}`` and
``{error}`` are filled in. Messages use the processor's chat format
(``{"type": "image"}`` / ``{"type": "text", "text": ...}`` content parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

IMAGE_PLACEHOLDER = "<image>"
ToolProtocol = Literal["json", "tag", "none"]


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call, in the format Qwen's agent prompt declares tools."""

    name: str
    description: str
    parameters: dict[str, Any]
    name_for_human: str | None = None
    args_format: str | None = "Format the arguments as a JSON object."

    def declaration(self) -> str:
        function: dict[str, Any] = {}
        if self.name_for_human:
            function["name_for_human"] = self.name_for_human
        function.update(name=self.name, description=self.description, parameters=self.parameters)
        if self.args_format:
            function["args_format"] = self.args_format
        return json.dumps({"type": "function", "function": function}, ensure_ascii=False)


@dataclass(frozen=True)
class PromptSpec:
    name: str
    # How a turn asks for the high-resolution image: `json` = <tool_call>{...}</tool_call>,
    # `tag` = <resize> (paper Table 10), `none` = no tool (full- or low-resolution prompts).
    tool_protocol: ToolProtocol
    system: str
    user: str
    tool_response: str = ""
    error_response: str = ""
    tools: tuple[ToolSpec, ...] = field(default_factory=tuple)
    resize_tag: str = "<resize>"

    def __post_init__(self) -> None:
        if self.tool_protocol not in ("json", "tag", "none"):
            raise ValueError(
                f"prompt {self.name!r}: tool_protocol must be json, tag or none, got {self.tool_protocol!r}"
            )
        if self.user.count(IMAGE_PLACEHOLDER) != 1:
            raise ValueError(f"prompt {self.name!r}: the user template needs exactly one {IMAGE_PLACEHOLDER}")
        if self.uses_tool and self.tool_response.count(IMAGE_PLACEHOLDER) != 1:
            raise ValueError(f"prompt {self.name!r}: the tool_response template needs exactly one {IMAGE_PLACEHOLDER}")
        if self.tool_protocol == "json" and not self.tools:
            raise ValueError(f"prompt {self.name!r}: the json tool protocol needs at least one entry in `tools`")

    @property
    def uses_tool(self) -> bool:
        return self.tool_protocol != "none"

    def system_text(self) -> str:
        return self.system.replace("{tools}", "\n".join(tool.declaration() for tool in self.tools))

    @staticmethod
    def question_text(question: str) -> str:
        """The question as the prompt shows it: its own ``<image>`` markers dropped."""
        return question.replace(IMAGE_PLACEHOLDER, "").strip()

    def first_turn(self, question: str) -> list[dict[str, Any]]:
        """System and user messages of turn 1."""
        user = self.user.replace("{question}", self.question_text(question))
        return [
            {"role": "system", "content": self.system_text()},
            {"role": "user", "content": content_parts(user)},
        ]

    def tool_response_message(self) -> dict[str, Any]:
        return {"role": "user", "content": content_parts(self.tool_response)}

    def error_message(self, error: str) -> dict[str, Any]:
        return {"role": "user", "content": content_parts(self.error_response.replace("{error}", error))}


def content_parts(text: str) -> list[dict[str, str]]:
    parts: list[dict[str, str]] = []
    for index, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if index:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def prompt_from_config(tools: Any = (), **fields: Any) -> PromptSpec:
    """Build a ``PromptSpec`` from a ``conf/prompt`` node (Hydra's ``instantiate`` target)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(tools, (DictConfig, ListConfig)):
        tools = OmegaConf.to_container(tools, resolve=True)
    return PromptSpec(tools=tuple(ToolSpec(**tool) for tool in tools or ()), **fields)
