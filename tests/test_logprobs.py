"""Log-probs of batched two-image trajectories equal a fresh forward of each concatenated sequence."""

from __future__ import annotations

import torch

from conftest import TOOL_TURN, answer_turn
from visionthink.grpo import logprobs as logprobs_module
from visionthink.grpo.logprobs import shared_prompt_logits, shared_prompts, token_logprobs, trajectory_logprobs
from visionthink.models.family import continues_from_shared_caches
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig


def fresh_logprobs(model, processor, trajectory):
    """Forward one sequence the plain way: the processor encodes the images, the model finds its own positions."""
    images = [image.image for image in trajectory.images]
    pixel = processor.image_processor(images=images, return_tensors="pt")
    input_ids = torch.tensor([trajectory.token_ids])
    mm = (input_ids == processor.image_token_id).int()
    with torch.no_grad():
        logits = model(
            input_ids=input_ids,
            pixel_values=pixel["pixel_values"],
            image_grid_thw=pixel["image_grid_thw"],
            mm_token_type_ids=mm,
        ).logits[0, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, input_ids[0, 1:, None]).squeeze(-1)


def test_batched_logprobs_match_fresh_forwards(builder, samples, scripted, model, processor):
    # Two-image trajectories of different lengths (so the batch is padded) plus a one-image one.
    long_answer = answer_turn("the digit in the small label is seven")
    engine = scripted(lambda r: TOOL_TURN if len(r.images) == 1 else answer_turn("7"))
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1))
    trajectories = driver.run([builder.build(s) for s in samples[:2]], SamplingConfig())
    direct = EpisodeDriver(scripted(lambda r: long_answer), builder, RolloutConfig(group_size=1))
    trajectories += direct.run([builder.build(samples[2])], SamplingConfig())
    assert [len(t.images) for t in trajectories] == [2, 2, 1]
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id
    with torch.no_grad():
        batched, mask = token_logprobs(model, trajectories, pad_id, image_id)
    for row, trajectory in enumerate(trajectories):
        expected = fresh_logprobs(model, processor, trajectory)
        assert torch.allclose(batched[row, : len(expected)], expected, atol=1e-4)
        assert mask[row].sum().item() == trajectory.generated_tokens
    per_trajectory = trajectory_logprobs(model, trajectories, pad_id, image_id, micro_batch_size=2)
    for row, values in enumerate(per_trajectory):
        assert torch.allclose(values, batched[row, : values.numel()], atol=1e-5)


def test_metric_only_entropy_stays_out_of_the_graph(builder, samples, scripted, model, processor):
    driver = EpisodeDriver(scripted(lambda r: answer_turn("red")), builder, RolloutConfig(group_size=1))
    trajectories = driver.run([builder.build(samples[0])], SamplingConfig())
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id
    for entropy_grad in (True, False):
        logprobs, _, entropy = token_logprobs(model, trajectories, pad_id, image_id, with_entropy=True,
                                             entropy_grad=entropy_grad)  # fmt: skip
        assert logprobs.requires_grad and entropy.requires_grad is entropy_grad
        assert torch.all(entropy >= 0)


def test_a_shared_prompt_gives_the_same_logprobs_and_gradients(samples, scripted, family, monkeypatch):
    """Rollouts of one prompt in a micro-batch share its forward pass (vision tower and prompt
    tokens once); log-probs, entropy and gradients equal those of each trajectory on its own. A
    family with recurrent layers runs every trajectory whole instead (the images still once)."""
    model, builder, processor = family.model, family.builder, family.processor
    shared_passes = []
    monkeypatch.setattr(logprobs_module, "shared_prompt_logits",
                        lambda *a, **k: shared_passes.append(1) or shared_prompt_logits(*a, **k))  # fmt: skip
    long_answer = answer_turn("the digit in the small label is seven")

    def script(request):
        if len(request.images) > 1:
            return answer_turn("7")
        return [TOOL_TURN, TOOL_TURN, answer_turn("red"), long_answer][request.seed % 4]

    driver = EpisodeDriver(scripted(script), builder, RolloutConfig(group_size=4))
    trajectories = driver.run([builder.build(s) for s in samples[:2]], SamplingConfig(), seed=5)
    # Two prompts, four rollouts each, of different lengths, some with a second image, and rollouts
    # of one group sharing that image (encoded once for the continuations)
    assert shared_prompts(trajectories) is not None
    assert len({len(t.token_ids) for t in trajectories}) > 2 and {len(t.images) for t in trajectories} == {1, 2}
    high_res = [id(t.images[1]) for t in trajectories if len(t.images) == 2]
    assert len(set(high_res)) < len(high_res)
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id
    parameters = [p for p in model.parameters() if p.requires_grad]

    def weighted(logprobs, entropy, mask):
        # Position-dependent weights: a log-prob placed one token off changes the loss.
        weights = torch.arange(1, logprobs.shape[-1] + 1, dtype=logprobs.dtype) * mask
        return (logprobs * weights).sum() + 0.1 * (entropy * weights).sum()

    model.zero_grad()
    shared, mask, entropy = token_logprobs(model, trajectories, pad_id, image_id, temperature=0.7, with_entropy=True)
    assert bool(shared_passes) == continues_from_shared_caches(model), "the path the family allows ran"
    weighted(shared, entropy, mask).backward()
    shared_grads = [p.grad.clone() for p in parameters]
    model.zero_grad()
    for row, trajectory in enumerate(trajectories):
        alone, alone_mask, alone_entropy = token_logprobs(
            model, [trajectory], pad_id, image_id, temperature=0.7, with_entropy=True
        )
        width = alone.shape[1]
        assert torch.equal(alone_mask[0], mask[row, :width])
        kept = alone_mask[0].bool()
        assert torch.allclose(shared[row, :width][kept], alone[0][kept], atol=1e-5)
        assert torch.allclose(entropy[row, :width][kept], alone_entropy[0][kept], atol=1e-5)
        weighted(alone, alone_entropy, alone_mask).backward()
    vision = [name for name, p in model.named_parameters() if p.requires_grad and ".visual." in f".{name}"]
    assert vision, "the vision tower takes part in the comparison"
    # To 1e-5 of the gradient's scale (sums over thousands of float32 terms, in another order); the
    # Gated DeltaNet's chunked reference kernel (cumulative decays through exponentials, chunks that
    # hold padding in a batch) to 1e-4
    scale = 1e-5 if continues_from_shared_caches(model) else 1e-4
    for (name, p), shared_grad in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), shared_grads,
                                      strict=True):  # fmt: skip
        assert (shared_grad - p.grad).abs().max() <= scale * p.grad.abs().max() + 1e-7, name
    model.zero_grad()


def test_activation_checkpointing_runs_every_trajectory_whole(builder, samples, scripted, processor, tiny_path):
    """HF layers drop the KV cache under activation checkpointing; the shared prompt is not used there."""
    from visionthink.models import ModelConfig, load_policy

    model = load_policy(ModelConfig(gradient_checkpointing=True), tiny_path).train()
    driver = EpisodeDriver(scripted(lambda r: answer_turn("red")), builder, RolloutConfig(group_size=2))
    trajectories = driver.run([builder.build(samples[0])], SamplingConfig())
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id
    logprobs, mask = token_logprobs(model, trajectories, pad_id, image_id)
    model.gradient_checkpointing_disable()
    expected, _ = token_logprobs(model, trajectories[:1], pad_id, image_id)
    assert torch.allclose(logprobs[0][mask[0].bool()], expected[0][mask[0].bool()], atol=1e-5)
