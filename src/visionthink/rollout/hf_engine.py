"""Rollouts with transformers' ``generate`` (CPU and single GPU).

Every call continues a batch of sequences, left-padded, with the images of all sequences
concatenated in order; ``mm_token_type_ids`` lets Qwen2.5-VL compute its 3-D M-RoPE positions
over each whole multi-turn, multi-image sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList

from visionthink.rollout.engine import GenerationRequest, GenerationResult, SamplingConfig
from visionthink.rollout.seeding import SeededGumbelSampling

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def pack_requests(
    requests: Sequence[GenerationRequest], pad_id: int, image_token_id: int, padding_side: str = "left"
) -> dict[str, torch.Tensor]:
    """Pad token ids into one batch and gather the images' ``pixel_values`` rows in sequence order."""
    length = max(len(r.token_ids) for r in requests)
    input_ids = torch.full((len(requests), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(requests), length), dtype=torch.long)
    for row, request in enumerate(requests):
        ids = torch.tensor(request.token_ids, dtype=torch.long)
        span = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span], attention_mask[row, span] = ids, 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": (input_ids == image_token_id).int() * attention_mask.int(),
    }
    images = [image for request in requests for image in request.images]
    if images:
        batch["pixel_values"] = torch.cat([image.pixel_values for image in images])
        batch["image_grid_thw"] = torch.stack([image.grid_thw for image in images])
    return batch


class TransformersRolloutEngine:
    """Generates with the policy module itself, so trained weights are live without a sync."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.pad_id = tokenizer.pad_token_id
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.stop_ids = token_ids(tokenizer, STOP_TOKENS)
        self.suppressed_ids = token_ids(tokenizer, VISION_TOKENS)

    def generation_config(self, sampling: SamplingConfig) -> GenerationConfig:
        # Every field is set explicitly: transformers fills unset ones from the checkpoint's
        # generation_config.json (Qwen ships top_k=1, repetition_penalty=1.05), which would
        # silently change the sampling distribution GRPO assumes.
        common = dict(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            suppress_tokens=self.suppressed_ids,
            repetition_penalty=1.0,
            num_beams=1,
        )
        if sampling.greedy:
            return GenerationConfig(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, **common)
        return GenerationConfig(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, **common
        )

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        if not requests:
            return []
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in pack_requests(requests, self.pad_id, self.image_token_id).items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        config, processors = self.generation_config(sampling), []
        seeds = [request.seed for request in requests]
        if not sampling.greedy and all(seed is not None for seed in seeds):
            # Per-request noise streams: greedy decoding over Gumbel-noised logits is sampling.
            config = self.generation_config(SamplingConfig(greedy=True, max_new_tokens=sampling.max_new_tokens))
            processors = [SeededGumbelSampling(seeds, sampling)]
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(
                **batch, generation_config=config, logits_processor=LogitsProcessorList(processors)
            )
        finally:
            self.model.train(was_training)
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        return [self._cut(ids) for ids in new_tokens]

    def _cut(self, ids: list[int]) -> GenerationResult:
        for index, token in enumerate(ids):
            if token in self.stop_ids:
                return GenerationResult(token_ids=ids[: index + 1], stopped=True)
        return GenerationResult(token_ids=ids, stopped=False)
