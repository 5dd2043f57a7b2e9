"""Multi-turn rollout cost: a batch where every trajectory takes two turns, with and without
turn-2 KV reuse in the transformers engine."""

from __future__ import annotations

import time
from statistics import median
from typing import Any

from visionthink.rollout import SamplingConfig, TransformersRolloutEngine
from visionthink.rollout.engine import GenerationRequest


def two_turn_requests(builder, episodes, first_turns):
    requests = []
    for episode, turn in zip(episodes, first_turns, strict=True):
        tool = builder.tool_response(episode)
        requests.append(
            GenerationRequest(episode.prompt.token_ids + turn + tool.token_ids, episode.prompt.images + tool.images)
        )
    return requests


def measure(model, tokenizer, builder, samples, max_new_tokens: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Greedy decoding (identical tokens either way); medians over ``repeats`` runs."""
    sampling = SamplingConfig(greedy=True, max_new_tokens=max_new_tokens)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = {}
    for reuse in (False, True):
        times, turn2_times, prefill, generated = [], [], 0, 0
        for _ in range(repeats):
            engine = TransformersRolloutEngine(model, tokenizer, reuse_kv_cache=reuse)
            episodes = [builder.build(s) for s in samples]
            first = [GenerationRequest(e.prompt.token_ids, e.prompt.images) for e in episodes]
            started = time.perf_counter()
            turn1 = engine.generate(first, sampling)
            after_turn1 = time.perf_counter()
            turn1_ids = [r.token_ids if r.stopped else r.token_ids + [end] for r in turn1]
            prefill_before = engine.prefill_tokens
            turn2 = engine.generate(two_turn_requests(builder, episodes, turn1_ids), sampling)
            finished = time.perf_counter()
            times.append(finished - started)
            turn2_times.append(finished - after_turn1)
            prefill = engine.prefill_tokens - prefill_before
            generated = sum(len(r.token_ids) for r in turn1 + turn2)
            engine.end_episodes()
        rows["reuse" if reuse else "no_reuse"] = {
            "turn2_prefill_tokens": prefill,
            "generated_tokens": generated,
            "seconds": median(times),
            "turn2_seconds": median(turn2_times),
            "tokens_per_second": generated / median(times),
        }
    rows["turn2_new_tokens"] = rows["reuse"]["turn2_prefill_tokens"]
    return rows
