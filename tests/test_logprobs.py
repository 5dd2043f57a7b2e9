"""Log-probs of batched two-image trajectories equal a fresh forward of each concatenated sequence."""

from __future__ import annotations

import torch

from conftest import TOOL_TURN, answer_turn
from visionthink.grpo.logprobs import token_logprobs, trajectory_logprobs
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
