"""What one rollout produced: the whole multi-turn token sequence and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from visionthink.episode.builder import EncodedImage, Episode
from visionthink.episode.parser import FinalAnswer, ParsedTurn, ToolCall


@dataclass
class Turn:
    text: str
    parsed: ParsedTurn
    generated_tokens: int
    truncated: bool


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
    turns: list[Turn] = field(default_factory=list)
    # The rollout engine's log-prob of each generated token (None: the engine does not report them).
    rollout_logprobs: list[float] | None = field(default_factory=list)
    # How the episode ended: answer, malformed, tool_call_limit, turn_limit.
    end_reason: str = ""
    wall_seconds: float = 0.0

    @property
    def used_high_res(self) -> bool:
        """Whether the high-resolution image entered the context (a successful resize call)."""
        return len(self.images) > 1

    @property
    def tool_calls(self) -> int:
        return sum(isinstance(turn.parsed, ToolCall) for turn in self.turns)

    @property
    def visual_tokens(self) -> int:
        return sum(image.visual_tokens for image in self.images)

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
