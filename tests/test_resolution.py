"""The resolution policy: 1/4-pixel low view, bounded high view, token counts equal to the processor's."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from visionthink.episode import ImageGeometryError, ResolutionPolicy

SIZES = [(224, 224), (301, 199), (29, 29), (33, 517), (1000, 31), (5000, 4000), (8000, 60), (640, 480), (97, 1013)]


def image_pad_count(processor, image) -> int:
    batch = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt")
    return int((batch["input_ids"] == processor.image_token_id).sum())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bounds", [(56 * 56, 448 * 448), (512 * 512, 2048 * 2048)])
def test_token_counts_equal_the_processor_image_pads(size, bounds, tiny_path):
    from visionthink.models import load_processor

    policy = ResolutionPolicy(min_pixels=bounds[0], max_pixels=bounds[1])
    processor = load_processor(tiny_path, policy.processor_size())
    views = policy.views(Image.new("RGB", size, "white"))
    assert views.low.visual_tokens == image_pad_count(processor, views.low.image)
    assert views.high.visual_tokens == image_pad_count(processor, views.high.image)


def test_low_view_halves_each_side_of_the_high_view():
    policy = ResolutionPolicy(min_pixels=56 * 56, max_pixels=448 * 448)
    views = policy.views(Image.new("RGB", (448, 448)))
    assert views.high.size == (448, 448) and views.low.size == (224, 224)
    assert views.low.visual_tokens * 4 == views.high.visual_tokens == 256


def test_high_view_is_the_original_within_the_pixel_bounds():
    policy = ResolutionPolicy(min_pixels=512 * 512, max_pixels=2048 * 2048)
    original = Image.new("RGB", (800, 600))
    assert policy.high_view(original).image is original
    huge = policy.high_view(Image.new("RGB", (6000, 4000)))
    assert huge.size[0] * huge.size[1] <= 2048 * 2048
    assert abs(huge.size[0] / huge.size[1] - 1.5) < 0.01
    small = policy.high_view(Image.new("RGB", (100, 50)))
    assert small.size[0] * small.size[1] >= 512 * 512 * 0.99


def test_images_qwen_cannot_take_are_rejected_with_the_fix():
    policy = ResolutionPolicy()
    with pytest.raises(ImageGeometryError, match="at least 28 px.*Drop the sample or pad"):
        policy.views(Image.new("RGB", (27, 300)))
    with pytest.raises(ImageGeometryError, match="aspect ratio.*Crop or pad"):
        policy.views(Image.new("RGB", (30, 6100)))


def test_processor_floor_must_not_exceed_the_ceiling():
    with pytest.raises(ValueError, match="processor_min_pixels"):
        ResolutionPolicy(min_pixels=100, max_pixels=1000, processor_min_pixels=2000)


def test_the_synthetic_low_view_keeps_no_trace_of_the_label():
    """A probe on the label's pixels: with the box filter the two stripe orientations give the
    very same low view, while LANCZOS rings along the stripes and tells them apart."""
    import random

    from PIL import ImageChops

    from conftest import load_config_node
    from visionthink.data.synthetic import render, stripes_box

    def low_label(policy, orientation):
        image = render(224, "shape", "red", "circle", 1, ("stripes", orientation), random.Random(0))
        low = policy.low_view(policy.high_view(image)).image
        return low.crop(tuple(side // 2 for side in stripes_box(224)))

    synthetic = load_config_node("resolution", "synthetic")
    assert synthetic.downsample_filter == "box"
    horizontal, vertical = low_label(synthetic, "horizontal"), low_label(synthetic, "vertical")
    assert ImageChops.difference(horizontal, vertical).getbbox() is None
    lanczos = ResolutionPolicy(**{**vars(synthetic), "downsample_filter": "lanczos"})
    assert ImageChops.difference(low_label(lanczos, "horizontal"), low_label(lanczos, "vertical")).getbbox()


def test_an_unknown_filter_is_refused():
    with pytest.raises(ValueError, match="downsample_filter"):
        ResolutionPolicy(downsample_filter="nearest-ish")


def test_episodes_count_tokens_with_the_checkpoints_patch_geometry(processor, agent_prompt, samples):
    """A processor with 16 px patches (as Qwen3-VL's): the episode's counts follow it, not the
    policy's Qwen2.5-VL defaults."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from conftest import SMALL_RESOLUTION
    from visionthink.episode import EpisodeBuilder
    from visionthink.models.processor import ImageOnlyQwen2_5_VLProcessor

    sixteen = ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(patch_size=16, size=SMALL_RESOLUTION.processor_size()),
        tokenizer=processor.tokenizer,
        chat_template=processor.chat_template,
    )
    sample = dataclasses.replace(samples[0], image=Image.new("RGB", (448, 448)))
    episode = EpisodeBuilder(sixteen, agent_prompt, SMALL_RESOLUTION).build(sample)
    assert episode.first_view.visual_tokens == 49  # 224 px: 7 x 7 tokens of 32 px (8 x 8 of 28 px)
    assert episode.first_view.visual_tokens == image_pad_count(sixteen, episode.first_view.image)
    assert episode.prompt.token_ids.count(sixteen.image_token_id) == episode.first_view.visual_tokens
