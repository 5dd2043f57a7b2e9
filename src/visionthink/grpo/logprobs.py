"""Per-token log-probabilities of whole multi-turn trajectories under a policy.

Each forward pass right-pads a micro-batch of trajectories, concatenates their images'
``pixel_values`` rows in sequence order (so rows always match ``image_grid_thw``), and computes
the 3-D M-RoPE positions once over each whole sequence with the model's own ``get_rope_index``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visionthink.models.qwen import pack_requests, rope_model
from visionthink.rollout.engine import GenerationRequest
from visionthink.rollout.trajectory import Trajectory


def forward_inputs(
    model: Any, trajectories: Sequence[Trajectory], pad_id: int, image_token_id: int
) -> dict[str, torch.Tensor]:
    requests = [GenerationRequest(t.token_ids, t.images) for t in trajectories]
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in pack_requests(requests, pad_id, image_token_id, padding_side="right").items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        position_ids, _ = rope_model(model).get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"],
            attention_mask=batch["attention_mask"],
        )
        batch["position_ids"] = position_ids
    return batch


def selective_log_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits).gather(targets)`` one row at a time, to keep memory at (T, V)."""
    rows = [
        row.float().gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row.float(), dim=-1)
        for row, tgt in zip(logits, targets, strict=True)
    ]
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the softmax, one row at a time."""
    rows = []
    for row in logits:
        row = row.float()
        rows.append(torch.logsumexp(row, dim=-1) - (torch.softmax(row, dim=-1) * row).sum(-1))
    return torch.stack(rows)


def token_logprobs(
    model: Any,
    trajectories: Sequence[Trajectory],
    pad_id: int,
    image_token_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs of each next token and the loss mask over those targets, both (N, T-1), plus
    the per-token entropy when ``with_entropy`` (outside the autograd graph unless
    ``entropy_grad``: a metric-only entropy would otherwise cost a (T, V) softmax in backward).

    Logits are divided by the sampling temperature so the log-probs are those of the
    distribution the rollouts were drawn from.
    """
    batch = forward_inputs(model, trajectories, pad_id, image_token_id)
    mask = torch.zeros_like(batch["input_ids"])
    for row, trajectory in enumerate(trajectories):
        mask[row, : len(trajectory.loss_mask)] = torch.tensor(trajectory.loss_mask)
    logits = model(**batch, use_cache=False).logits[:, :-1]
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = selective_log_softmax(logits, batch["input_ids"][:, 1:])
    mask = mask[:, 1:].to(logprobs.device)
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits)
        return logprobs, mask, entropy
    return logprobs, mask


@torch.no_grad()
def trajectory_logprobs(
    model: Any,
    trajectories: Sequence[Trajectory],
    pad_id: int,
    image_token_id: int,
    micro_batch_size: int,
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """Per-trajectory 1-D log-probs (length ``len(token_ids) - 1``), without gradients."""
    results: list[torch.Tensor] = []
    for start in range(0, len(trajectories), micro_batch_size):
        chunk = trajectories[start : start + micro_batch_size]
        logprobs, _ = token_logprobs(model, chunk, pad_id, image_token_id, temperature)
        results += [row[: len(t.token_ids) - 1].detach() for row, t in zip(logprobs, chunk, strict=True)]
    return results


def pad_rows(rows: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros(len(rows), length, dtype=rows[0].dtype, device=rows[0].device)
    for index, row in enumerate(rows):
        out[index, : row.numel()] = row
    return out
