"""Prompt templates (``conf/prompt/*.yaml``) and the chat messages built from them.

``<image>`` in a template marks where an image goes; ``{question}``, ``{tools}`` and
``{error}`` are filled in. Messages use the processor's chat format
(``{"type": "image"}`` / ``{"type": "text", "text": ...}`` content parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from visionthink.episode.tools import BOX_COORDINATES
from visionthink.errors import InputError

IMAGE_PLACEHOLDER = "<image>"
ToolProtocol = Literal["json", "tag", "none"]
# What a call does (visionthink.episode.tools): the whole image at full resolution, or a region of it
TOOL_KINDS = ("resize", "zoom")


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call, in the format Qwen's agent prompt declares tools."""

    name: str
    description: str
    parameters: dict[str, Any]
    name_for_human: str | None = None
    args_format: str | None = "Format the arguments as a JSON object."
    # The environment's side, never shown in the declaration: what a call does (TOOL_KINDS), the
    # user turn carrying its image (None: the prompt's tool_response), and for zoom the box
    # convention (auto: the model family's; pixels | relative_1000)
    kind: str = "resize"
    response: str | None = None
    coordinates: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in TOOL_KINDS:
            raise ValueError(f"tool {self.name!r}: kind must be one of {', '.join(TOOL_KINDS)}, got {self.kind!r}")
        if self.response is not None and self.response.count(IMAGE_PLACEHOLDER) != 1:
            raise ValueError(f"tool {self.name!r}: the response template needs exactly one {IMAGE_PLACEHOLDER}")
        if self.coordinates not in ("auto", *BOX_COORDINATES):
            raise ValueError(
                f"tool {self.name!r}: coordinates must be auto, {' or '.join(BOX_COORDINATES)}, got {self.coordinates!r}"
            )

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
        if self.tool_protocol == "tag" and any(tool.kind != "resize" for tool in self.tools):
            raise InputError(
                f"prompt {self.name!r} asks for the image with the {self.resize_tag} tag, which can only resize",
                "Offer the zoom tool with a json-protocol prompt (prompt=agent or agent_compact), or use tool=resize",
            )

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

    def tool_response_message(self, tool: ToolSpec | None = None) -> dict[str, Any]:
        """The user turn carrying the image a call of ``tool`` brought back."""
        template = tool.response if tool is not None and tool.response is not None else self.tool_response
        return {"role": "user", "content": content_parts(template)}

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


def prompt_from_config(tools: Any = (), declarations: Any = None, **fields: Any) -> PromptSpec:
    """Build a ``PromptSpec`` from a ``conf/prompt`` node (Hydra's ``instantiate`` target).

    ``tools``: a list of specs, or the ``tool`` group's mapping of name to spec. ``declarations``:
    per tool name, the declaration fields this prompt words its own way (the compact prompt's short
    resize declaration); each listed field replaces the tool's whole."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(tools, (DictConfig, ListConfig)):
        tools = OmegaConf.to_container(tools, resolve=True)
    if isinstance(declarations, DictConfig):
        declarations = OmegaConf.to_container(declarations, resolve=True)
    if isinstance(tools, dict):
        tools = [{"name": name, **spec} for name, spec in tools.items()]
    specs = tuple(ToolSpec(**{**tool, **(declarations or {}).get(tool["name"], {})}) for tool in tools or ())
    return PromptSpec(tools=specs, **fields)


def load_prompt(name: str, tool: str = "resize") -> PromptSpec:
    """A shipped ``conf/prompt/<name>.yaml`` offering the tools of ``conf/tool/<tool>.yaml``, outside
    a Hydra run (benchmarks, tests; an entry point composes both groups itself)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from visionthink.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return instantiate(compose(overrides=[f"+prompt={name}", f"+tool={tool}"]).prompt)
