"""Rollouts with transformers' ``generate`` (CPU and single GPU).

Every call continues a batch of sequences, left-padded, with the images of all sequences
concatenated in order, as the model's family packs them (for Qwen2.5-VL, ``mm_token_type_ids``
lets it compute its 3-D M-RoPE positions over each whole multi-turn, multi-image sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList

from visionthink.models.family import continues_from_shared_caches, family_of, model_inputs
from visionthink.rollout.engine import GenerationRequest, GenerationResult, SamplingConfig
from visionthink.rollout.kv_cache import (
    CachedBatch,
    cache_rows,
    continue_from_cache,
    distinct_prompts,
    match,
    prefill_prompts,
)
from visionthink.rollout.seeding import SeededGumbelSampling


class TransformersRolloutEngine:
    """Generates with the policy module itself, so trained weights are live without a sync.

    Requests that repeat a prompt (the rollouts of a group) prefill it once and continue from its
    KV cache. With ``reuse_kv_cache``, each call keeps its KV cache and a following call whose
    requests continue the cached sequences (the second turn of an episode) prefills only the new
    tokens (``visionthink.rollout.kv_cache``). ``end_episodes`` drops the cache. A family with
    recurrent layers does neither: every request is prefilled whole."""

    def __init__(self, model: Any, tokenizer: Any, reuse_kv_cache: bool = False):
        self.model = model
        self.ids = family_of(model).special_token_ids(tokenizer)
        self.shares_caches = continues_from_shared_caches(model)
        self.reuse_kv_cache = reuse_kv_cache and self.shares_caches
        self._cached: CachedBatch | None = None
        # Tokens run through the model as prompt (prefill), and prompt tokens served from the cache.
        self.prefill_tokens = 0
        self.reused_tokens = 0

    def generation_config(self, sampling: SamplingConfig) -> GenerationConfig:
        # Every field is set explicitly: transformers fills unset ones from the checkpoint's
        # generation_config.json (Qwen ships top_k=1, repetition_penalty=1.05), which would
        # silently change the sampling distribution GRPO assumes.
        common = dict(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=list(self.ids.stop),
            pad_token_id=self.ids.pad,
            suppress_tokens=list(self.ids.vision),
            repetition_penalty=1.0,
            num_beams=1,
            # The KV cache comes back too, for turn-2 reuse.
            return_dict_in_generate=True,
        )
        if sampling.greedy:
            # Greedy decoding ignores top_k; its default value draws no "not valid" warning
            return GenerationConfig(do_sample=False, temperature=1.0, top_p=1.0, top_k=50, **common)
        return GenerationConfig(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, **common
        )

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        if not requests:
            return []
        was_training = self.model.training
        self.model.eval()
        try:
            cached = self._cached if self.reuse_kv_cache else None
            matches = match(cached, requests, self.ids.image) if cached is not None else None
            shared = distinct_prompts(requests, self.ids.image) if self.shares_caches and matches is None else None
            if shared is not None:
                prompts, matches = shared
                self._cached = prefill_prompts(self.model, prompts, self.ids)
                self.prefill_tokens += int(self._cached.valid.sum())
            generated = (
                self._generate(requests, sampling) if matches is None else self._continue(requests, matches, sampling)
            )
            if not self.reuse_kv_cache:
                self._cached = None
        finally:
            self.model.train(was_training)
        return [self._cut(ids) for ids in generated.tolist()]

    def _generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> torch.Tensor:
        batch = model_inputs(self.model, requests, self.ids.pad, self.ids.image, share_images=False)
        config, processors = self.generation_config(sampling), []
        seeds = [request.seed for request in requests]
        if not sampling.greedy and all(seed is not None for seed in seeds):
            # Per-request noise streams: greedy decoding over Gumbel-noised logits is sampling.
            config = self.generation_config(SamplingConfig(greedy=True, max_new_tokens=sampling.max_new_tokens))
            processors = [SeededGumbelSampling(seeds, sampling)]
        output = self.model.generate(
            **batch,
            generation_config=config,
            logits_processor=LogitsProcessorList(processors),
        )
        self.prefill_tokens += int(batch["attention_mask"].sum())
        prompt_length = batch["input_ids"].shape[1]
        generated = output.sequences[:, prompt_length:]
        self._cached = None
        if self.reuse_kv_cache:
            self._cached = cache_rows(
                output.past_key_values,
                batch["input_ids"],
                batch["attention_mask"],
                requests,
                generated,
                self.ids.stop,
            )
        return generated

    def _continue(self, requests, matches, sampling: SamplingConfig) -> torch.Tensor:
        generated, self._cached, prefilled = continue_from_cache(
            self.model, self._cached, requests, matches, sampling, self.ids
        )
        self.prefill_tokens += prefilled
        self.reused_tokens += sum(common for _, common, _ in matches)
        return generated

    def end_episodes(self) -> None:
        """Drop the cached turn (called by the driver when its episodes are done)."""
        self._cached = None

    def _cut(self, ids: list[int]) -> GenerationResult:
        for index, token in enumerate(ids):
            if token in self.ids.stop:
                return GenerationResult(token_ids=ids[: index + 1], stopped=True)
        return GenerationResult(token_ids=ids, stopped=False)
