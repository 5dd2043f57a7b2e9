"""The rollout-engine interface: token ids and images in, token ids out.

An engine knows nothing about tools, prompts or rewards; the episode driver
(``visionthink.rollout.driver``) owns the multi-turn loop, so every backend (transformers
here, vLLM on GPUs) runs exactly the same episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from visionthink.episode.builder import EncodedImage


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    # 0 disables top-k filtering
    top_k: int = 0
    # Per turn. 64 holds the compact agent prompt's turns on the tiny model (a resize call is 49
    # tokens); the 7B recipes (rollout=vllm) set 1024.
    max_new_tokens: int = 64
    # Greedy decoding (evaluation); temperature, top_p and top_k are then ignored.
    greedy: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    token_ids: list[int]
    images: list[EncodedImage]
    # Seed of this request's own sampling noise (see visionthink.rollout.seeding); None: the global RNG.
    seed: int | None = None


@dataclass(frozen=True)
class GenerationResult:
    # Generated ids, ending with the stop token when `stopped` (the stop token is included); never a
    # vision token (each engine keeps them out: a generated placeholder desynchronises images and tokens).
    token_ids: list[int]
    stopped: bool
    # The engine's log-prob of each generated token, when it reports them (vLLM).
    logprobs: list[float] | None = None


class RolloutEngine(Protocol):
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        """Continue every request once, all in one batched call."""
        ...

    def end_episodes(self) -> None:
        """The episodes of the last calls are over: release what was kept for them (caches)."""
        ...
