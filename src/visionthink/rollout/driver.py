"""The engine-agnostic multi-turn episode loop.

Turn 1 sees the low-resolution view. Each turn is parsed; a valid tool call appends a user
turn carrying the image the tool brings back (resize: the original, never an upsampled copy;
zoom: a region of it) and the episode continues; a call the tool cannot execute gets an error
turn. All trajectories that are still running are continued in one batched engine call per turn. Token ids are concatenated segment by segment and never re-tokenised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from visionthink.episode.builder import Episode, EpisodeBuilder, Segment
from visionthink.episode.parser import Malformed, ToolCall, TurnParser
from visionthink.episode.tools import ToolError
from visionthink.rollout.engine import GenerationRequest, GenerationResult, RolloutEngine, SamplingConfig
from visionthink.rollout.seeding import mix_seed
from visionthink.rollout.trajectory import Trajectory, Turn

ToolErrorPolicy = Literal["error_turn", "end"]


@dataclass(frozen=True)
class RolloutConfig:
    # Rollouts per prompt (G in GRPO; the paper: 16).
    group_size: int = 8
    # Images an episode may hold: the low-resolution view plus one per tool call (paper: 2).
    max_images: int = 2
    # Generation rounds per episode (paper: 2); each round but the last may call a tool.
    max_turns: int = 2
    # A tool call that cannot be executed (bad JSON, unknown tool): answer with an error turn, or end.
    on_malformed_tool_call: ToolErrorPolicy = "error_turn"
    # A valid call when the image budget is spent: error turn, or end the episode.
    on_surplus_tool_call: ToolErrorPolicy = "end"
    # transformers (CPU, one GPU) or vllm (GPU; needs requirements-gpu.txt)
    backend: Literal["transformers", "vllm"] = "transformers"
    # transformers: prefill only the new tokens of a second turn (same tokens, less compute)
    reuse_kv_cache: bool = True
    # vllm: engine settings (visionthink.rollout.vllm_engine.VLLMSettings)
    vllm: Any = None
    # Sampling of training rollouts, and of validation / evaluation (greedy).
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    val_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(greedy=True))


class EpisodeDriver:
    def __init__(self, engine: RolloutEngine, builder: EpisodeBuilder, config: RolloutConfig):
        self.engine, self.builder, self.config = engine, builder, config
        self.parser = TurnParser.for_prompt(builder.prompt)
        self.tokenizer: Any = builder.processor.tokenizer

    def run(
        self,
        episodes: Sequence[Episode],
        sampling: SamplingConfig,
        group_size: int | None = None,
        seed: int | None = None,
    ) -> list[Trajectory]:
        """Roll out every episode ``group_size`` times; trajectories come group by group.

        With ``seed``, every rollout samples from its own stream keyed by (seed, sample id, rollout
        index, turn), so results do not depend on how samples are batched or sharded."""
        group_size = group_size or self.config.group_size
        trajectories = [
            Trajectory(
                episode=episode,
                group=index,
                rollout=rollout,
                token_ids=list(episode.prompt.token_ids),
                loss_mask=[0] * len(episode.prompt.token_ids),
                images=list(episode.prompt.images),
            )
            for index, episode in enumerate(episodes)
            for rollout in range(group_size)
        ]
        running = list(trajectories)
        for turn_index in range(self.config.max_turns):
            if not running:
                break
            requests = [
                GenerationRequest(
                    token_ids=t.token_ids,
                    images=t.images,
                    seed=None if seed is None else mix_seed(seed, t.episode.sample.sample_id, t.rollout, turn_index),
                )
                for t in running
            ]
            results = self.engine.generate(requests, sampling)
            still_running = []
            for trajectory, result in zip(running, results, strict=True):
                last_turn = turn_index == self.config.max_turns - 1
                if self._step(trajectory, result, last_turn):
                    still_running.append(trajectory)
            running = still_running
        self.engine.end_episodes()
        return trajectories

    def _step(self, trajectory: Trajectory, result: GenerationResult, last_turn: bool) -> bool:
        """Record one generated turn; returns whether the episode continues."""
        generated = list(result.token_ids)
        if result.logprobs is None or trajectory.rollout_logprobs is None:
            trajectory.rollout_logprobs = None
        else:
            trajectory.rollout_logprobs += result.logprobs
        stopped = result.stopped
        body = generated[:-1] if stopped else generated
        text = self.tokenizer.decode(body, skip_special_tokens=False)
        parsed = self.parser.parse(text)
        trajectory.token_ids += generated
        trajectory.loss_mask += [1] * len(generated)
        trajectory.turns.append(Turn(text=text, parsed=parsed, generated_tokens=len(generated), truncated=not stopped))
        if not stopped:
            # Close the truncated turn so the chat stays well formed; not trained on.
            self._append(trajectory, self.builder.end_of_turn)
        if isinstance(parsed, ToolCall):
            if len(trajectory.images) >= self.config.max_images:
                return self._refuse(
                    trajectory,
                    "tool_call_limit",
                    f"no more images: an episode holds at most {self.config.max_images}",
                    last_turn,
                    self.config.on_surplus_tool_call,
                )
            if last_turn:
                trajectory.end_reason = "turn_limit"
                return False
            try:
                response = self.builder.tool_response(trajectory.episode, parsed, trajectory.image_sources)
            except ToolError as error:
                trajectory.turns[-1].tool_error = str(error)
                return self._refuse(trajectory, "tool_error", str(error), last_turn, self.config.on_malformed_tool_call)
            tool = self.builder.tools[parsed.name]
            trajectory.turns[-1].region = tool.region(trajectory.episode, parsed.arguments)
            self._append(trajectory, response, source=tool.source)
            return True
        if isinstance(parsed, Malformed) and parsed.tool_intent:
            return self._refuse(trajectory, "malformed", parsed.reason, last_turn, self.config.on_malformed_tool_call)
        trajectory.end_reason = "answer" if not isinstance(parsed, Malformed) else "malformed"
        return False

    def _refuse(
        self, trajectory: Trajectory, reason: str, error: str, last_turn: bool, policy: ToolErrorPolicy
    ) -> bool:
        if policy == "end" or last_turn:
            trajectory.end_reason = reason
            return False
        self._append(trajectory, self.builder.error_turn(error))
        return True

    @staticmethod
    def _append(trajectory: Trajectory, segment: Segment, source: str = "") -> None:
        trajectory.token_ids += segment.token_ids
        trajectory.loss_mask += [0] * len(segment.token_ids)
        trajectory.images += segment.images
        trajectory.image_sources += [source] * len(segment.images)
