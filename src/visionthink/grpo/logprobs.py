"""Per-token log-probabilities of whole multi-turn trajectories under a policy.

Each forward pass right-pads a micro-batch of trajectories, gives the model their images in
sequence order (each image object through the vision tower once) and computes the positions
once over each whole sequence, as the model's family does (``visionthink.models.family``; for
Qwen2.5-VL the 3-D M-RoPE positions of the model's own ``get_rope_index``).

The G rollouts of a group start from one prompt (its image included). When a micro-batch holds
several rollouts of a prompt, the prompt runs through the model once and its KV cache, still in
the autograd graph, is shared by the rollouts' continuations: the vision tower and the prompt's
tokens are computed once instead of G times, and autograd sums their gradients over the G uses.
HF layers drop the cache under gradient checkpointing, so there every trajectory runs whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from visionthink.episode.builder import Segment
from visionthink.models.family import continues_from_shared_caches, family_of, model_inputs
from visionthink.models.sharding import is_sharded
from visionthink.rollout.engine import GenerationRequest
from visionthink.rollout.trajectory import Trajectory


def forward_inputs(
    model: Any, trajectories: Sequence[Trajectory], pad_id: int, image_token_id: int
) -> dict[str, torch.Tensor]:
    requests = [GenerationRequest(t.token_ids, t.images) for t in trajectories]
    batch = model_inputs(model, requests, pad_id, image_token_id, padding_side="right")
    if "image_grid_thw" in batch:
        batch["position_ids"] = family_of(model).rope_positions(
            model, batch["input_ids"], batch["attention_mask"], image_token_id, batch["image_grid_thw"]
        )
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


@dataclass
class NextTokenLogits:
    """Logits (N, S, V) predicting ``targets`` (N, S); row i's first target is token
    ``offsets[i] + 1`` of its trajectory and ``lengths[i]`` of its S targets are real."""

    logits: torch.Tensor
    targets: torch.Tensor
    offsets: list[int]
    lengths: list[int]


def whole_sequence_logits(
    model: Any, trajectories: Sequence[Trajectory], pad_id: int, image_token_id: int
) -> NextTokenLogits:
    batch = forward_inputs(model, trajectories, pad_id, image_token_id)
    logits = model(**batch, use_cache=False).logits[:, :-1]
    lengths = [len(t.token_ids) - 1 for t in trajectories]
    return NextTokenLogits(logits, batch["input_ids"][:, 1:], [0] * len(trajectories), lengths)


def shared_prompts(trajectories: Sequence[Trajectory]) -> tuple[list[Segment], list[int]] | None:
    """The distinct prompts of a micro-batch and each trajectory's index among them; None when
    sharing gains nothing (every prompt is used once) or a trajectory has nothing after its prompt."""
    distinct: dict[int, Segment] = {}
    for trajectory in trajectories:
        distinct.setdefault(id(trajectory.episode.prompt), trajectory.episode.prompt)
    if len(distinct) == len(trajectories) or any(
        len(t.token_ids) <= len(t.episode.prompt.token_ids) for t in trajectories
    ):
        return None
    index = {key: position for position, key in enumerate(distinct)}
    return list(distinct.values()), [index[id(t.episode.prompt)] for t in trajectories]


def shared_prompt_logits(
    model: Any,
    trajectories: Sequence[Trajectory],
    prompts: list[Segment],
    rows: list[int],
    pad_id: int,
    image_token_id: int,
) -> NextTokenLogits:
    """Each prompt once (left-padded, so its last token's logits predict the first generated
    token), then every trajectory's continuation (right-padded) over its prompt's KV cache."""
    family = family_of(model)
    device = next(model.parameters()).device
    prompt_batch = model_inputs(
        model, [GenerationRequest(p.token_ids, p.images) for p in prompts], pad_id, image_token_id
    )
    continuations = [
        GenerationRequest(t.token_ids[len(p.token_ids) :], t.images[len(p.images) :])
        for t, p in zip(trajectories, (prompts[r] for r in rows), strict=True)
    ]
    continuation_ids = family.pack_requests(continuations, pad_id, image_token_id, padding_side="right")
    continuation_ids = {k: v.to(device) for k, v in continuation_ids.items()}
    index = torch.tensor(rows, device=device)
    full_ids = torch.cat([prompt_batch["input_ids"][index], continuation_ids["input_ids"]], 1)
    full_mask = torch.cat([prompt_batch["attention_mask"][index], continuation_ids["attention_mask"]], 1)
    grids = torch.stack([image.grid_thw for t in trajectories for image in t.images]).to(device)
    positions = family.rope_positions(model, full_ids, full_mask, image_token_id, grids)
    prompt_width = prompt_batch["input_ids"].shape[1]
    first_use = torch.tensor([rows.index(p) for p in range(len(prompts))], device=device)
    prompt_out = model(
        **prompt_batch, position_ids=positions[:, first_use, :prompt_width], use_cache=True, logits_to_keep=1
    )
    cache = prompt_out.past_key_values
    cache.reorder_cache(index)  # one cache row per trajectory; autograd sums the rows' gradients
    continuation_out = model(
        input_ids=continuation_ids["input_ids"],
        attention_mask=full_mask,
        position_ids=positions[:, :, prompt_width:],
        past_key_values=cache,
        use_cache=True,
        **family.image_inputs(model, [image for c in continuations for image in c.images]),
    )
    logits = torch.cat([prompt_out.logits[index], continuation_out.logits[:, :-1]], 1)
    offsets = [len(prompts[r].token_ids) - 1 for r in rows]
    lengths = [len(c.token_ids) for c in continuations]
    return NextTokenLogits(logits, continuation_ids["input_ids"], offsets, lengths)


def next_token_logits(
    model: Any, trajectories: Sequence[Trajectory], pad_id: int, image_token_id: int
) -> NextTokenLogits:
    # Asked of the layers, which is where HF keeps the flag, under any wrapper (PEFT, FSDP)
    checkpointing = any(getattr(module, "gradient_checkpointing", False) for module in model.modules())
    # A sharded model's forward passes gather weights from all ranks: one pass per micro-batch,
    # through every block (the vision tower included), the same on every rank. A recurrent layer's
    # state cannot continue a shared prompt's cache.
    whole = checkpointing or is_sharded(model) or not continues_from_shared_caches(model)
    shared = None if whole else shared_prompts(trajectories)
    if shared is None:
        return whole_sequence_logits(model, trajectories, pad_id, image_token_id)
    return shared_prompt_logits(model, trajectories, *shared, pad_id, image_token_id)


def place(values: torch.Tensor, predicted: NextTokenLogits, width: int) -> torch.Tensor:
    """Per-target values (N, S) at their trajectories' token positions (N, width), zeros elsewhere."""
    rows = [
        torch.nn.functional.pad(row[:length], (offset, width - offset - length))
        for row, offset, length in zip(values, predicted.offsets, predicted.lengths, strict=True)
    ]
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
    Positions inside a shared prompt (never in the loss) hold 0.

    Logits are divided by the sampling temperature so the log-probs are those of the
    distribution the rollouts were drawn from.
    """
    predicted = next_token_logits(model, trajectories, pad_id, image_token_id)
    width = max(len(t.token_ids) for t in trajectories) - 1
    mask = torch.zeros(len(trajectories), width, dtype=torch.long)
    for row, trajectory in enumerate(trajectories):
        mask[row, : len(trajectory.loss_mask) - 1] = torch.tensor(trajectory.loss_mask[1:])
    logits = predicted.logits
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = place(selective_log_softmax(logits, predicted.targets), predicted, width)
    mask = mask.to(logprobs.device)
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = place(entropy_from_logits(logits), predicted, width)
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
