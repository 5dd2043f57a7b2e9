"""Turn-2 KV reuse for the transformers engine: keep each turn's KV cache and prefill only what
a continuation adds (the tool-response turn and its new image).

``transformers.generate`` cannot continue a Qwen2.5-VL cache with new images (it feeds one
``image_grid_thw`` both to the vision tower, which must see only the new images, and to the
M-RoPE position computation, which must see all of them), so continuations run a small decode
loop here: positions come from the model's own rope index over the whole sequence, the
vision tower encodes only the new images, and sampling applies the same logits processors (vision
tokens suppressed, seeded Gumbel or temperature/top-k/top-p).

The first turn uses the same loop: the G rollouts of a group share one prompt, so each distinct
prompt is prefilled once (``prefill_prompts``, all but its last token) and every rollout
continues from its row, instead of ``generate`` encoding the image and the prompt G times.

A request reuses the cached row with which it shares the longest prefix of tokens and images;
cached positions beyond that prefix (another rollout's text, padding) are masked out rather than
cropped, so every row keeps its own prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from visionthink.episode.builder import EncodedImage
from visionthink.models.family import SpecialTokenIds, family_of, model_inputs
from visionthink.rollout.engine import GenerationRequest, SamplingConfig
from visionthink.rollout.seeding import SeededGumbelSampling


@dataclass
class CachedBatch:
    cache: Any  # a transformers Cache holding every fed position of `layout`
    layout: torch.Tensor  # (B, L) token ids at the cached positions (pads included)
    valid: torch.Tensor  # (B, L) 1 where the position holds one of the row's real tokens
    tokens: list[list[int]]  # per row: its real tokens, in order
    images: list[list[EncodedImage]]  # per row: the images whose tokens are cached


def cache_rows(
    cache, layout, valid, requests: Sequence[GenerationRequest], generated: torch.Tensor, stop_ids: Sequence[int]
) -> CachedBatch:
    """Bookkeeping after a turn: ``layout``/``valid`` cover the fed prompt, ``generated`` holds the
    sampled tokens (the last one was never fed, so it is not cached)."""
    fed = generated[:, :-1]
    real = torch.ones_like(fed, dtype=torch.long)
    for row in range(fed.shape[0]):
        hits = [i for i, token in enumerate(generated[row].tolist()) if token in stop_ids]
        if hits:
            real[row, hits[0] + 1 :] = 0
    layout = torch.cat([layout, fed], dim=1)
    valid = torch.cat([valid, real.to(valid)], dim=1)
    tokens = [r.token_ids + fed[i][real[i].bool()].tolist() for i, r in enumerate(requests)]
    return CachedBatch(cache, layout, valid, tokens, [list(r.images) for r in requests])


def distinct_prompts(
    requests: Sequence[GenerationRequest], image_token_id: int
) -> tuple[list[GenerationRequest], list[tuple[int, int, int]]] | None:
    """The distinct prompts among ``requests`` (same tokens, same image objects), each without its
    last token (a continuation must feed at least one), and each request's match on them in
    ``match``'s form (row, prefix length, images in it); None when no prompt repeats."""
    if any(len(r.token_ids) < 2 or r.token_ids[-1] == image_token_id for r in requests):
        return None
    rows: dict[tuple, int] = {}
    prompts, matches = [], []
    for request in requests:
        key = (tuple(request.token_ids), tuple(id(image) for image in request.images))
        if key not in rows:
            rows[key] = len(prompts)
            prompts.append(GenerationRequest(request.token_ids[:-1], request.images))
        matches.append((rows[key], len(request.token_ids) - 1, len(request.images)))
    return None if len(prompts) == len(requests) else (prompts, matches)


@torch.no_grad()
def prefill_prompts(model: Any, prompts: Sequence[GenerationRequest], ids: SpecialTokenIds) -> CachedBatch:
    """One forward over the prompts (left-padded), kept as a cache that requests continue."""
    batch = model_inputs(model, prompts, ids.pad, ids.image)
    positions = family_of(model).rope_positions(
        model, batch["input_ids"], batch["attention_mask"], ids.image, batch.get("image_grid_thw")
    )
    output = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    return CachedBatch(
        output.past_key_values,
        batch["input_ids"],
        batch["attention_mask"],
        [list(p.token_ids) for p in prompts],
        [list(p.images) for p in prompts],
    )


def _image_runs(tokens: list[int], image_token_id: int) -> list[tuple[int, int]]:
    runs, start = [], None
    for index, token in enumerate(tokens + [-1]):
        if token == image_token_id and start is None:
            start = index
        elif token != image_token_id and start is not None:
            runs.append((start, index))
            start = None
    return runs


def match(
    cached: CachedBatch, requests: Sequence[GenerationRequest], image_token_id: int
) -> list[tuple[int, int, int]] | None:
    """Per request: (cached row, reusable prefix length, cached images in it), or None when some
    request shares no useful prefix with any row."""
    matches = []
    for request in requests:
        best = (0, -1, 0)
        for row, tokens in enumerate(cached.tokens):
            limit = min(len(tokens), len(request.token_ids) - 1)
            common = 0
            while common < limit and tokens[common] == request.token_ids[common]:
                common += 1
            # Never split an image, and the images inside the prefix must be the same objects.
            images = 0
            for start, end in _image_runs(tokens, image_token_id):
                if end > common:
                    common = min(common, start)
                    break
                images += 1
            same_images = all(
                a is b for a, b in zip(cached.images[row][:images], request.images[:images], strict=False)
            )
            if same_images and common > best[0]:
                best = (common, row, images)
        if best[1] < 0:
            return None
        matches.append((best[1], best[0], best[2]))
    return matches


class NextTokenScores:
    """The scores the next token is drawn from: vision tokens suppressed, then the sampling warpers.
    Applied in a plain loop: ``LogitsProcessorList`` inspects every processor's signature on each
    call, a measurable share of a small model's decode step."""

    def __init__(self, sampling: SamplingConfig, seeds: list[int | None], suppressed: Sequence[int]) -> None:
        self.suppressed = torch.tensor(suppressed, dtype=torch.long)
        self.warpers: list[LogitsProcessor] = []
        # Whether the next token is the argmax (greedy, or Gumbel-seeded sampling)
        self.argmax = True
        if sampling.greedy:
            return
        if all(seed is not None for seed in seeds):
            self.warpers.append(SeededGumbelSampling(seeds, sampling))  # type: ignore[arg-type]
            return
        self.argmax = False
        self.warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0:
            self.warpers.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(sampling.top_p))

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        scores = logits.float().index_fill(-1, self.suppressed.to(logits.device), float("-inf"))
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        return scores


@torch.no_grad()
def continue_from_cache(
    model: Any,
    cached: CachedBatch,
    requests: Sequence[GenerationRequest],
    matches: list[tuple[int, int, int]],
    sampling: SamplingConfig,
    ids: SpecialTokenIds,
) -> tuple[torch.Tensor, CachedBatch, int]:
    """Generate continuations of ``requests`` on top of the cached rows; returns the generated
    tokens (B, N), the new cache bookkeeping and the number of prefilled tokens."""
    device = cached.layout.device
    rows = torch.tensor([row for row, _, _ in matches], device=device)
    cache = cached.cache
    cache.reorder_cache(rows)
    layout, valid = cached.layout[rows], torch.zeros_like(cached.layout[rows])
    new_segments, new_images, rope_images = [], [], []
    for index, ((row, common, images), request) in enumerate(zip(matches, requests, strict=True)):
        kept = cached.valid[row].nonzero().flatten()[:common]
        valid[index, kept] = 1
        new_segments.append(request.token_ids[common:])
        new_images += request.images[images:]
        rope_images += request.images
    width = max(len(s) for s in new_segments)
    new_ids = torch.full((len(requests), width), ids.pad, dtype=torch.long, device=device)
    new_mask = torch.zeros_like(new_ids)
    for index, segment in enumerate(new_segments):
        new_ids[index, width - len(segment) :] = torch.tensor(segment, device=device)
        new_mask[index, width - len(segment) :] = 1
    full_ids, full_mask = torch.cat([layout, new_ids], 1), torch.cat([valid, new_mask], 1)
    grids = torch.stack([image.grid_thw for image in rope_images]).to(device)
    family = family_of(model)
    positions = family.rope_positions(model, full_ids, full_mask, ids.image, grids)
    # The rollouts of a group that asked share one encoded high-resolution image
    inputs = family.image_inputs(model, new_images)
    output = model(
        input_ids=new_ids,
        attention_mask=full_mask,
        position_ids=positions[:, :, layout.shape[1] :],
        past_key_values=cache,
        use_cache=True,
        **inputs,
    )
    next_scores = NextTokenScores(sampling, [r.seed for r in requests], ids.vision)
    next_positions = positions[:, :, -1:] + 1
    running, mask, logits = full_ids, full_mask, output.logits[:, -1]
    finished = torch.zeros(len(requests), dtype=torch.bool, device=device)
    stop = torch.tensor(ids.stop, device=device)
    generated = []
    for step in range(sampling.max_new_tokens):
        scores = next_scores(running, logits)
        token = scores.argmax(-1) if next_scores.argmax else torch.multinomial(torch.softmax(scores, -1), 1).squeeze(1)
        token = torch.where(finished, torch.full_like(token, ids.pad), token)
        generated.append(token)
        running = torch.cat([running, token[:, None]], 1)
        finished |= torch.isin(token, stop)
        if finished.all() or step == sampling.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        output = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_positions,
            past_key_values=cache,
            use_cache=True,
        )
        next_positions = next_positions + 1
        logits = output.logits[:, -1]
    tokens = torch.stack(generated, 1)
    continued = cache_rows(cache, full_ids, full_mask, requests, tokens, ids.stop)
    return tokens, continued, int(new_mask.sum())
