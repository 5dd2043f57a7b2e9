"""Turn a sample into an episode: the token ids and encoded images of the first turn, and
the continuations (tool response, error turn) the environment appends later.

Token ids are produced once per segment and concatenated by the rollout; nothing is ever
decoded and re-tokenised. Each image is run through the processor once; its
``pixel_values`` rows and ``image_grid_thw`` travel with the trajectory.

Text that comes from data or from the model (questions, tool errors) is literal text: a question
holding ``<|im_end|>`` or ``<|image_pad|>`` reaches the model as those characters, never as the
control tokens, which would forge a turn or an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from PIL import Image

from visionthink.data.sample import Sample
from visionthink.episode.parser import TAG_TOOL_NAME, ToolCall
from visionthink.episode.prompts import PromptSpec, ToolSpec
from visionthink.episode.resolution import ResolutionPolicy, View
from visionthink.episode.tools import ImageTool, build_tools

Mode = Literal["adaptive", "full", "low"]
# Marks where literal text goes in a rendered chat template (a private-use character, which no
# template writes; dropped from the literal text itself)
LITERAL_MARK = "\ue000"


@dataclass(frozen=True)
class EncodedImage:
    image: Image.Image
    pixel_values: torch.Tensor  # (patches, patch_dim), this image's rows only
    grid_thw: torch.Tensor  # (3,)

    @property
    def visual_tokens(self) -> int:
        return int(self.grid_thw.prod().item()) // 4  # 2x2 spatial merge


@dataclass(frozen=True)
class Segment:
    """Token ids plus the images whose ``<|image_pad|>`` runs they contain, in order."""

    token_ids: list[int]
    images: list[EncodedImage]


@dataclass
class Episode:
    sample: Sample
    mode: Mode
    prompt: Segment
    first_view: View
    high_view: View
    # The user turns carrying what tool calls brought back, by call (EpisodeBuilder.tool_response):
    # encoded the first time a rollout of this episode makes the call, then shared by the group's rollouts
    tool_responses: dict[tuple, Segment] = field(default_factory=dict, repr=False)


class EpisodeBuilder:
    def __init__(self, processor: Any, prompt: PromptSpec, resolution: ResolutionPolicy):
        self.processor = processor
        self.prompt = prompt
        # Visual-token counts follow the checkpoint's own patch geometry.
        image_processor = processor.image_processor
        self.resolution = replace(
            resolution, patch_size=image_processor.patch_size, merge_size=image_processor.merge_size
        )
        eos = processor.tokenizer.eos_token
        # Box convention of the model family's grounding (visionthink.models.processor)
        coordinates = getattr(processor, "box_coordinates", None)
        # The tag protocol's one call (a resize) is named as the parser reports it
        specs = (ToolSpec(TAG_TOOL_NAME, "", {}),) if prompt.tool_protocol == "tag" else prompt.tools
        self.tools: dict[str, ImageTool] = build_tools(
            specs, coordinates, image_processor.patch_size, image_processor.merge_size
        )
        self._response_texts = {
            name: continuation_text(processor, prompt.tool_response_message(tool.spec), eos)
            for name, tool in self.tools.items()
        }
        self._eos = eos
        # Closes a turn the token budget cut off, as the chat template closes every turn.
        self.end_of_turn = Segment(token_ids=[processor.tokenizer.convert_tokens_to_ids(eos)], images=[])

    def build(self, sample: Sample, mode: Mode = "adaptive") -> Episode:
        views = self.resolution.views(sample.image)
        first = views.high if mode == "full" else views.low
        text = self.processor.apply_chat_template(
            self.prompt.first_turn(LITERAL_MARK), add_generation_prompt=True, tokenize=False
        )
        prompt = self.encode(text, [first.image], literals=[self.prompt.question_text(sample.question)])
        return Episode(sample=sample, mode=mode, prompt=prompt, first_view=first, high_view=views.high)

    def tool_response(self, episode: Episode, call: ToolCall | None = None, shown: Sequence[str] = ()) -> Segment:
        """The user turn carrying the image ``call`` brings back (None: the resize tool's), built
        once per episode and call. ``shown``: the sources of the images already in the trajectory.
        Raises ``ToolError`` for a call its tool cannot execute."""
        name = call.name if call is not None else next((n for n, t in self.tools.items() if t.source == "resize"), None)
        if name not in self.tools:
            raise ValueError(f"prompt {self.prompt.name!r} declares no tool {call.name if call else 'resize'!r}")
        tool = self.tools[name]
        arguments = call.arguments if call is not None else {}
        image = tool.image(episode, arguments, list(shown))
        key = tool.cache_key(arguments)
        if key not in episode.tool_responses:
            episode.tool_responses[key] = self.encode(self._response_texts[name], [image])
        return episode.tool_responses[key]

    def error_turn(self, error: str) -> Segment:
        text = continuation_text(self.processor, self.prompt.error_message(LITERAL_MARK), self._eos)
        return self.encode(text, [], literals=[error])

    def encode(self, text: str, images: list[Image.Image], literals: Sequence[str] = ()) -> Segment:
        """Token ids and encoded images of ``text``, whose ``LITERAL_MARK``s are replaced by
        ``literals`` in order, as plain text."""
        pieces = text.split(LITERAL_MARK)
        if len(pieces) != len(literals) + 1:
            raise ValueError(f"{len(pieces) - 1} literal marks in the template text for {len(literals)} literals")
        literals = [literal.replace(LITERAL_MARK, "") for literal in literals]
        tokenizer = self.processor.tokenizer
        literal_ids = [tokenizer(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] for t in literals]
        if all(
            ids == tokenizer(t, add_special_tokens=False)["input_ids"]
            for t, ids in zip(literals, literal_ids, strict=True)
        ):
            # No control token in them: one pass over the whole text, as the template renders it
            whole = pieces[0] + "".join(t + piece for t, piece in zip(literals, pieces[1:], strict=True))
            return self._encode_template(whole, images)
        # Each template piece is encoded with its own images, each literal as plain text between them
        token_ids, encoded, remaining = [], [], list(images)
        for index, piece in enumerate(pieces):
            count = piece.count(self.processor.image_token)
            segment = self._encode_template(piece, remaining[:count])
            remaining = remaining[count:]
            token_ids += segment.token_ids + (literal_ids[index] if index < len(literals) else [])
            encoded += segment.images
        return Segment(token_ids=token_ids, images=encoded)

    def _encode_template(self, text: str, images: list[Image.Image]) -> Segment:
        if not images:
            ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
            return Segment(token_ids=list(ids), images=[])
        batch = self.processor(text=[text], images=images, return_tensors="pt")
        rows = batch["image_grid_thw"].prod(-1).tolist()
        pixel_chunks = torch.split(batch["pixel_values"], rows)
        encoded = [
            EncodedImage(image=image, pixel_values=chunk, grid_thw=grid)
            for image, chunk, grid in zip(images, pixel_chunks, batch["image_grid_thw"], strict=True)
        ]
        return Segment(token_ids=batch["input_ids"][0].tolist(), images=encoded)


def continuation_text(processor: Any, message: dict[str, Any], eos_token: str) -> str:
    """What the chat template writes after an assistant turn's end token and through
    ``message``, up to the next assistant header.

    Rendering a probe conversation with and without ``message`` and taking the difference
    keeps this correct for any Qwen-style template (the tiny model's and the real one).
    """
    probe = [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]
    before = processor.apply_chat_template(probe, tokenize=False)
    after = processor.apply_chat_template(probe + [message], add_generation_prompt=True, tokenize=False)
    if not after.startswith(before):
        raise ValueError("the chat template is not prefix-stable; multi-turn continuation cannot be derived from it")
    end_of_assistant = before.rindex("A" + eos_token) + len("A" + eos_token)
    return before[end_of_assistant:] + after[len(before) :]
