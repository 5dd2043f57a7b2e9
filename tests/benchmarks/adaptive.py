"""Adaptive inference savings: evaluation wall time and visual tokens of adaptive vs full vs low,
with the decision scripted from the question (resize exactly when the label is asked about),
against the oracle policy's tokens."""

from __future__ import annotations

import json
import time
from statistics import median
from typing import Any

from visionthink.episode.builder import EpisodeBuilder
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig
from visionthink.rollout.engine import GenerationResult


def resize_call_ids(tokenizer: Any) -> list[int]:
    """A whole turn that calls the resize tool, closed as the model closes a turn."""
    call = json.dumps({"name": "resize_image", "arguments": {"action": "resize"}})
    text = f"<think>\nThe label is too small.\n</think>\n<tool_call>\n{call}\n</tool_call>"
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]


class ScriptedDecision:
    """Turn 1 of a question about the small label is a resize call; everything else is the model's."""

    def __init__(self, engine: Any, tokenizer: Any):
        self.engine, self.tokenizer = engine, tokenizer
        self.call = resize_call_ids(tokenizer)

    def generate(self, requests, sampling):
        scripted = {
            i
            for i, r in enumerate(requests)
            if len(r.images) == 1 and "small label" in self.tokenizer.decode(r.token_ids[-48:])
        }
        rest = [r for i, r in enumerate(requests) if i not in scripted]
        results = iter(self.engine.generate(rest, sampling)) if rest else iter([])
        return [GenerationResult(self.call, True) if i in scripted else next(results) for i in range(len(requests))]

    def end_episodes(self):
        self.engine.end_episodes()


def measure(
    model: Any,
    processor: Any,
    prompts: dict[str, Any],
    resolution: Any,
    samples: list[Any],
    max_new_tokens: int = 32,
    repeats: int = 3,
) -> dict[str, Any]:
    """Each mode ``repeats`` times, interleaved (full, low, adaptive, full, ...); the median wall time."""
    from visionthink.rollout import TransformersRolloutEngine

    sampling = SamplingConfig(greedy=True, max_new_tokens=max_new_tokens)
    rows: dict[str, Any] = {}
    seconds: dict[str, list[float]] = {mode: [] for mode in ("full", "low", "adaptive")}
    for _ in range(repeats):
        for mode in seconds:
            engine: Any = TransformersRolloutEngine(model, processor.tokenizer, reuse_kv_cache=True)
            if mode == "adaptive":
                engine = ScriptedDecision(engine, processor.tokenizer)
            builder = EpisodeBuilder(processor, prompts[mode], resolution)
            driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1))
            started = time.perf_counter()
            trajectories = driver.run([builder.build(s, mode) for s in samples], sampling, group_size=1)
            seconds[mode].append(time.perf_counter() - started)
            rows[mode] = {
                "visual_tokens": sum(t.visual_tokens for t in trajectories) / len(trajectories),
                "resize_ratio": sum(t.used_high_res for t in trajectories) / len(trajectories),
            }
    for mode, values in seconds.items():
        rows[mode]["seconds"] = median(values)
        rows[mode]["runs"] = len(values)
    episodes = [EpisodeBuilder(processor, prompts["adaptive"], resolution).build(s) for s in samples]
    rows["oracle_visual_tokens"] = sum(
        e.first_view.visual_tokens + (e.high_view.visual_tokens if e.sample.use_tool else 0) for e in episodes
    ) / len(episodes)
    rows["needs_high_res"] = sum(bool(s.use_tool) for s in samples) / len(samples)
    rows["adaptive_time_vs_full"] = rows["adaptive"]["seconds"] / rows["full"]["seconds"]
    rows["adaptive_tokens_vs_oracle"] = rows["adaptive"]["visual_tokens"] / rows["oracle_visual_tokens"]
    return rows
