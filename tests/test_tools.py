"""The zoom tool beside resize: box mapping in both conventions, clamping and enlarging, errors
the model can recover from, multi-call episodes and the token accounting per source."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from conftest import SMALL_RESOLUTION, TOOL_TURN, answer_turn, load_prompt
from visionthink.episode import EpisodeBuilder
from visionthink.episode.parser import ToolCall
from visionthink.episode.prompts import PromptSpec
from visionthink.episode.tools import ToolError, ZoomTool
from visionthink.evaluation.scoring import Record, accounting
from visionthink.grpo.logprobs import token_logprobs
from visionthink.metrics.rollouts import rollout_metrics, zoom_hits
from visionthink.reward.judges.base import Verdict
from visionthink.reward.penalty import penalty_control
from visionthink.reward.scoring import RewardConfig, score_trajectories
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig, TransformersRolloutEngine
from visionthink.rollout.engine import GenerationRequest

SAMPLING = SamplingConfig(max_new_tokens=24)


def zoom_turn(box) -> str:
    call = json.dumps({"name": "image_zoom_in_tool", "arguments": {"bbox_2d": box}})
    return f"<think>\nThe label is small.\n</think>\n<tool_call>\n{call}\n</tool_call>"


def zoom(coordinates: str) -> ZoomTool:
    return ZoomTool(spec=None, coordinates=coordinates, patch_size=14, merge_size=2)


@pytest.mark.parametrize(
    "coordinates,box,expected",
    [
        # The whole first view (112x112 px as the processor saw it) is the whole 224x224 original
        ("pixels", [0, 0, 112, 112], (0, 0, 224, 224)),
        ("relative_1000", [0, 0, 1000, 1000], (0, 0, 224, 224)),
        # Its top-right quarter, in each convention
        ("pixels", [56, 0, 112, 56], (112, 0, 224, 112)),
        ("relative_1000", [500, 0, 1000, 500], (112, 0, 224, 112)),
        # Beyond the image: clamped to it (then widened to whole merged patches: 64 -> 84 px)
        ("pixels", [-30, 80, 500, 400], (0, 140, 224, 224)),
        ("relative_1000", [800, -5, 2000, 250], (168, 0, 224, 56)),
        # Fractions round outwards (20.6-80.4 -> 20-81), then 61 px widen to 84 around the centre
        ("pixels", [10.3, 20.6, 40.2, 50.9], (8, 30, 92, 114)),
    ],
)
def test_a_box_maps_onto_the_full_resolution_image_clamped(coordinates, box, expected):
    assert zoom(coordinates).full_resolution_box(box, (112, 112), (224, 224)) == expected


def test_a_box_widens_to_whole_merged_patches_around_its_centre_and_inside_the_image():
    """The processor then takes the crop as it is: no resampling of the detail asked for."""
    tool = zoom("pixels")
    assert tool.full_resolution_box([50, 50, 51, 51], (112, 112), (224, 224)) == (87, 87, 115, 115)
    # At the corner the enlarged box is moved back inside
    assert tool.full_resolution_box([111, 111, 112, 112], (112, 112), (224, 224)) == (196, 196, 224, 224)
    for box in ([3, 7, 50, 33], [0.5, 0.5, 111.5, 20]):
        left, top, right, bottom = tool.full_resolution_box(box, (112, 112), (224, 224))
        assert (right - left) % 28 == 0 and (bottom - top) % 28 == 0


@pytest.mark.parametrize(
    "box,message",
    [([50, 50, 40, 60], "is empty"), ([10, 10, 10, 20], "is empty"), ([200, 200, 300, 300], "outside the image")],
)
def test_an_empty_box_or_one_outside_the_image_is_a_tool_error(box, message):
    with pytest.raises(ToolError, match=message):
        zoom("pixels").full_resolution_box(box, (112, 112), (224, 224))


def test_the_family_decides_the_convention(zoom_builder, family):
    """Qwen2.5-VL grounds in pixels of the image it saw, Qwen3-VL and Qwen3.5 in 0-1000."""
    assert zoom_builder.tools["image_zoom_in_tool"].coordinates == "pixels"
    builder = EpisodeBuilder(family.processor, load_prompt("agent", "zoom"), SMALL_RESOLUTION)
    expected = "relative_1000" if family.name in ("qwen3_vl", "qwen3_5") else "pixels"
    assert builder.tools["image_zoom_in_tool"].coordinates == expected


def test_the_default_tool_keeps_the_paper_s_prompt_and_zoom_adds_its_declaration(agent_prompt):
    both = load_prompt("agent", "resize_zoom")
    assert [t.name for t in agent_prompt.tools] == ["resize_image"]
    assert [t.name for t in both.tools] == ["resize_image", "image_zoom_in_tool"]
    assert both.system_text().startswith(agent_prompt.system_text().split("\n</tools>")[0])
    declaration = json.loads(both.tools[1].declaration())["function"]
    # The environment's side (kind, response, coordinates) is never shown to the model
    assert set(declaration) == {"name_for_human", "name", "description", "parameters", "args_format"}
    compact = load_prompt("agent_compact", "resize_zoom")
    assert json.loads(compact.tools[0].declaration())["function"]["description"] == (
        "Show the image at its original resolution."
    )


def test_a_tag_prompt_refuses_a_zoom_tool_in_one_line():
    with pytest.raises(ValueError, match="which can only resize. Offer the zoom tool with a json-protocol prompt"):
        PromptSpec("tag", "tag", "", "<image>{question}", "<image>", tools=load_prompt("agent", "zoom").tools)


def test_a_zoom_brings_the_region_at_full_resolution_for_fewer_tokens(zoom_builder, samples):
    episode = zoom_builder.build(samples[0])
    call = ToolCall("", "image_zoom_in_tool", {"bbox_2d": [56, 0, 112, 56]}, None)
    segment = zoom_builder.tool_response(episode, call)
    (image,) = segment.images
    assert image.image.size == (112, 112)
    assert list(image.image.getdata()) == list(episode.high_view.image.crop((112, 0, 224, 112)).getdata())
    assert image.visual_tokens == 16 < zoom_builder.tool_response(episode).images[0].visual_tokens == 64
    # One encoding per episode and box, shared by the group's rollouts
    assert zoom_builder.tool_response(episode, call) is segment
    assert "The zoomed-in region is shown below" in zoom_builder.processor.tokenizer.decode(segment.token_ids)


def test_a_multi_call_episode_records_each_image_s_source_and_tokens(zoom_builder, samples, scripted):
    script = {1: zoom_turn([56, 0, 112, 56]), 2: TOOL_TURN, 3: answer_turn("7")}
    engine = scripted(lambda request: script[len(request.images)])
    config = RolloutConfig(group_size=2, max_turns=3, max_images=3)
    trajectories = EpisodeDriver(engine, zoom_builder, config).run([zoom_builder.build(samples[0])], SAMPLING)
    for trajectory in trajectories:
        assert trajectory.end_reason == "answer" and len(trajectory.turns) == 3
        assert trajectory.image_sources == ["first_view", "zoom", "resize"]
        assert [trajectory.visual_tokens_from(s) for s in ("first_view", "zoom", "resize")] == [16, 16, 64]
        assert trajectory.tool_visual_tokens == 80 and trajectory.used_high_res
        pads = trajectory.token_ids.count(zoom_builder.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
        assert pads == trajectory.visual_tokens == 96
    metrics = rollout_metrics(trajectories, tool_sources=["resize", "zoom"])
    assert metrics["tool_calls/zoom"] == metrics["tool_calls/resize"] == 1.0
    assert metrics["visual_tokens/zoom"] == 16 and metrics["visual_tokens/first_view"] == 16


def test_zoom_on_target_counts_the_crops_that_hold_the_label(zoom_builder, samples, scripted):
    sample = samples[0]
    # The synthetic label's box in the original image's pixels: its bottom-right corner
    sample = replace(sample, info={**sample.info, "label_box": [152, 152, 216, 216]})
    trajectories = []
    for box in ([56, 56, 112, 112], [0, 0, 56, 56]):  # the bottom-right quarter, then the top-left
        engine = scripted(lambda request, box=box: zoom_turn(box) if len(request.images) == 1 else answer_turn("7"))
        driver = EpisodeDriver(engine, zoom_builder, RolloutConfig(group_size=1))
        trajectories += driver.run([zoom_builder.build(sample)], SAMPLING)
    assert [t.turns[0].region for t in trajectories] == [(112, 112, 224, 224), (0, 0, 112, 112)]
    assert zoom_hits(trajectories) == [1.0, 0.0]
    assert rollout_metrics(trajectories, tool_sources=["resize", "zoom"])["zoom_on_target"] == 0.5
    # Evaluation splits each tool's share by need: here the zooms were on a label that needed it
    needing = [replace(t, episode=replace(t.episode, sample=replace(sample, use_tool=True))) for t in trajectories]
    figures = accounting([Record(t, "7", Verdict(True, "")) for t in needing], seconds=1.0)
    assert figures["tool_calls/zoom/needs_high_res"] == 1.0 and figures["zoom_on_target"] == 0.5
    # A resize shows the whole image; a sample without a label box has no target
    resized = EpisodeDriver(scripted(lambda r: TOOL_TURN if len(r.images) == 1 else answer_turn("7")), zoom_builder,
                            RolloutConfig(group_size=1)).run([zoom_builder.build(sample)], SAMPLING)  # fmt: skip
    assert resized[0].turns[0].region == (0, 0, 224, 224) and zoom_hits(resized) == []
    unlabelled = replace(sample, info={})
    assert zoom_hits(EpisodeDriver(engine, zoom_builder, RolloutConfig(group_size=1)).run(
        [zoom_builder.build(unlabelled)], SAMPLING)) == []  # fmt: skip


@pytest.mark.parametrize(
    "bad,reason",
    [
        (zoom_turn([50, 50, 40, 60]), "is empty"),
        (zoom_turn([1, 2, 3]), "invalid arguments for image_zoom_in_tool"),
        (zoom_turn("everywhere"), "invalid arguments for image_zoom_in_tool"),
    ],
)
def test_a_bad_box_gets_an_error_turn_the_model_recovers_from_and_loses_the_format_reward(
    bad, reason, zoom_builder, samples, scripted, tokenizer
):
    engine = scripted(lambda r: answer_turn("7") if "ERROR" in tokenizer.decode(r.token_ids) else bad)
    (trajectory,) = EpisodeDriver(engine, zoom_builder, RolloutConfig(group_size=1)).run(
        [zoom_builder.build(samples[0])], SAMPLING
    )
    assert trajectory.end_reason == "answer" and trajectory.image_sources == ["first_view"]
    assert reason in tokenizer.decode(trajectory.token_ids) and trajectory.broken_tool_calls == 1
    (score,) = score_trajectories([trajectory], [Verdict(True, "")], zoom_builder.prompt, RewardConfig())
    assert score.format == 0.0 and score.accuracy == 1.0


def test_a_second_resize_is_refused_with_an_error_turn(builder, samples, scripted, tokenizer):
    engine = scripted(lambda r: answer_turn("7") if "already shown" in tokenizer.decode(r.token_ids) else TOOL_TURN)
    config = RolloutConfig(group_size=1, max_turns=3, max_images=3)
    (trajectory,) = EpisodeDriver(engine, builder, config).run([builder.build(samples[0])], SAMPLING)
    assert trajectory.image_sources == ["first_view", "resize"] and trajectory.end_reason == "answer"
    assert trajectory.turns[1].tool_error == "the full-resolution image is already shown above"


def test_token_pricing_charges_what_each_call_brought_back_and_keeps_the_lucky_guess_penalty():
    used, correct, tokens = [True, True, False, False], [True, True, True, False], [64, 16, 0, 0]
    assert penalty_control(
        used, correct, theta=0.2, mode="tokens", tool_visual_tokens=tokens, visual_token_rate=0.01
    ) == pytest.approx([0.64, 0.16, 0.0, 0.0])
    # r = 1/3 < theta 0.5: the direct answers were lucky guesses and lose the direct penalty
    assert penalty_control(
        used, correct, theta=0.5, mode="tokens", tool_visual_tokens=tokens, visual_token_rate=0.01
    ) == pytest.approx([0.64, 0.16, 0.1, 0.1])
    with pytest.raises(ValueError, match="tool_visual_tokens per rollout"):
        penalty_control(used, correct, theta=0.2, mode="tokens")


def three_image_request(builder, episode, first_turn_ids: list[int], tokenizer) -> GenerationRequest:
    """Turn 1's ids, then a zoom call and a resize call with their images: a three-image context."""
    end = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    zoom = builder.tool_response(episode, ToolCall("", "image_zoom_in_tool", {"bbox_2d": [0, 56, 56, 112]}, None))
    resize = builder.tool_response(episode)
    resize_call = tokenizer(TOOL_TURN, add_special_tokens=False)["input_ids"] + end
    ids = episode.prompt.token_ids + first_turn_ids + zoom.token_ids + resize_call + resize.token_ids
    return GenerationRequest(ids, episode.prompt.images + zoom.images + resize.images)


def test_a_third_turn_reuses_the_cache_and_generates_as_a_fresh_prefill(zoom_builder, samples, model, tokenizer):
    episodes = [zoom_builder.build(s) for s in samples[:2]]
    greedy = SamplingConfig(greedy=True, max_new_tokens=12)
    reusing = TransformersRolloutEngine(model, tokenizer, reuse_kv_cache=True)
    call = tokenizer(zoom_turn([0, 56, 56, 112]), add_special_tokens=False)["input_ids"]
    call += [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    reusing.generate([GenerationRequest(e.prompt.token_ids, e.prompt.images) for e in episodes], greedy)
    requests = [three_image_request(zoom_builder, e, call, tokenizer) for e in episodes]
    reused = reusing.generate(requests, greedy)
    fresh = TransformersRolloutEngine(model, tokenizer, reuse_kv_cache=False).generate(requests, greedy)
    assert [r.token_ids for r in reused] == [r.token_ids for r in fresh]
    assert [len(r.images) for r in requests] == [3, 3]


def test_the_logprobs_of_a_zoom_episode_equal_a_fresh_forward(zoom_builder, samples, scripted, model, processor):
    from test_logprobs import fresh_logprobs

    script = {1: zoom_turn([56, 0, 112, 56]), 2: TOOL_TURN, 3: answer_turn("7")}
    engine = scripted(lambda request: script[len(request.images)])
    config = RolloutConfig(group_size=1, max_turns=3, max_images=3)
    trajectories = EpisodeDriver(engine, zoom_builder, config).run(
        [zoom_builder.build(s) for s in samples[:2]], SAMPLING
    )
    pad_id, image_id = processor.tokenizer.pad_token_id, processor.image_token_id
    with torch.no_grad():
        batched, mask = token_logprobs(model, trajectories, pad_id, image_id)
    for row, trajectory in enumerate(trajectories):
        assert len(trajectory.images) == 3
        expected = fresh_logprobs(model, processor, trajectory)
        assert torch.allclose(batched[row, : len(expected)], expected, atol=1e-4)
        assert mask[row].sum().item() == trajectory.generated_tokens
