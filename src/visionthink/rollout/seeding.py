"""Rollouts that do not depend on batch composition, rank or world size.

Each trajectory's turn is sampled from its own noise stream, seeded by (run seed, step, sample
id, rollout index, turn). Sampling uses the Gumbel-max trick on the temperature/top-k/top-p
filtered logits: ``argmax(logits / T + Gumbel noise)`` is an exact draw from ``softmax(logits / T)``,
and greedy decoding over the noised logits yields it. So a sample gets the same rollout whether
it is generated alone, in a batch of 64, or on rank 3 of 8 (up to floating-point ties).
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from visionthink.rollout.engine import SamplingConfig


def mix_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededGumbelSampling(LogitsProcessor):
    """Turns greedy decoding into per-row seeded sampling (append after the default processors)."""

    def __init__(self, seeds: list[int], sampling: SamplingConfig):
        self.seeds = seeds
        # Noise is keyed by the index of the generated token, not by the (padded) sequence length.
        self.prompt_length: int | None = None
        # One CPU generator, reseeded per row and token: the noise is the same on every device
        self.generator = torch.Generator()
        self.warpers = [TemperatureLogitsWarper(sampling.temperature)]
        if sampling.top_k > 0:
            self.warpers.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(sampling.top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        position = input_ids.shape[1] - self.prompt_length
        uniform = torch.empty(scores.shape, dtype=torch.float32)
        for row, seed in enumerate(self.seeds):
            self.generator.manual_seed(mix_seed(seed, position))
            torch.rand(scores.shape[1], generator=self.generator, out=uniform[row])
        noise = -torch.log(-torch.log(uniform.clamp_(1e-10, 1.0 - 1e-7)))
        return scores + noise.to(scores.device, scores.dtype)
