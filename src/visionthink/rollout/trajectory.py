"""What one rollout produced: the whole multi-turn token sequence and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from visionthink.episode.builder import EncodedImage, Episode
from visionthink.episode.parser import FinalAnswer, Malformed, ParsedTurn, ToolCall
from visionthink.episode.tools import FIRST_VIEW


@dataclass
class Turn:
    text: str
    parsed: ParsedTurn
    generated_tokens: int
    truncated: bool
    # Why a well-formed call could not be executed (an empty box); None otherwise
    tool_error: str | None = None
    # The box of the full-resolution image (pixels) the turn's tool call brought back
    region: tuple[int, int, int, int] | None = None


@dataclass
class Trajectory:
    episode: Episode
    # Index of the prompt group (rollouts of the same sample share it), and of the rollout within it.
    group: int
    rollout: int
    token_ids: list[int]
    # 1 on tokens the policy generated, 0 on prompt, tool-response and error-turn tokens.
    loss_mask: list[int]
    images: list[EncodedImage]
    # Where each image came from: the first view, or the tool that brought it back (resize, zoom)
    image_sources: list[str] = field(default_factory=lambda: [FIRST_VIEW])
    turns: list[Turn] = field(default_factory=list)
    # The rollout engine's log-prob of each generated token (None: the engine does not report them).
    rollout_logprobs: list[float] | None = field(default_factory=list)
    # How the episode ended: answer, malformed, tool_error, tool_call_limit, turn_limit.
    end_reason: str = ""

    @property
    def used_high_res(self) -> bool:
        """Whether a tool brought back full-resolution pixels (the whole image, or a region of it):
        what the paper's resize ratio and penalty count."""
        return len(self.images) > 1

    @property
    def tool_calls(self) -> int:
        return sum(isinstance(turn.parsed, ToolCall) for turn in self.turns)

    @property
    def broken_tool_calls(self) -> int:
        """Turns that tried to call a tool and broke the call, or made one its tool could not
        execute (the episode went on without its image)."""
        return sum(
            (isinstance(turn.parsed, Malformed) and turn.parsed.tool_intent) or turn.tool_error is not None
            for turn in self.turns
        )

    @property
    def visual_tokens(self) -> int:
        return sum(image.visual_tokens for image in self.images)

    def visual_tokens_from(self, source: str) -> int:
        """Visual tokens of the images from ``source`` (first_view, resize, zoom)."""
        return sum(image.visual_tokens for image, s in zip(self.images, self.image_sources, strict=True) if s == source)

    @property
    def tool_visual_tokens(self) -> int:
        """Visual tokens the tool calls brought back (what ``reward.penalty_mode=tokens`` prices)."""
        return self.visual_tokens - self.visual_tokens_from(FIRST_VIEW)

    @property
    def generated_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def final_answer(self) -> FinalAnswer | None:
        last = self.turns[-1].parsed if self.turns else None
        return last if isinstance(last, FinalAnswer) else None

    @property
    def turn_texts(self) -> list[str]:
        return [turn.text for turn in self.turns]


def group_blocks(trajectories: list[Trajectory], group_size: int) -> list[list[Trajectory]]:
    """The trajectories as consecutive groups of ``group_size``, as the GRPO stages slice them
    (advantages, the zero-variance filter, the update); refused when a block mixes prompt groups
    or a group is split, so that a reordered batch is never normalised across the wrong rollouts."""
    blocks = [trajectories[i : i + group_size] for i in range(0, len(trajectories), group_size)]
    ids = [{t.group for t in block} for block in blocks]
    whole = len(trajectories) % group_size == 0 and all(len(group) == 1 for group in ids)
    if not whole or len({next(iter(group)) for group in ids}) != len(blocks):
        order = [t.group for t in trajectories]
        raise ValueError(f"trajectories are not in whole consecutive groups of {group_size}: groups {order}")
    return blocks
