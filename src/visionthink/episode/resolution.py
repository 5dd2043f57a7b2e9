"""The resolution policy: the low-resolution first view and the high-resolution tool result.

The high view is the original image bounded to ``[min_pixels, max_pixels]`` (released loader:
512*512 .. 2048*2048, LANCZOS). The low view halves each side of the high view (1/4 of the
pixels) with ``downsample_filter``: LANCZOS as released, or a box (area) filter, which averages
each 2x2 block exactly: LANCZOS rings along sharp edges, and those ringing traces can leak detail
that the low view should not hold (the synthetic labels). Visual-token counts use transformers' ``smart_resize`` with the processor's own pixel
bounds, so they equal the number of ``<|image_pad|>`` tokens the processor emits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from visionthink.errors import InputError

# Qwen2-VL-style processors reject images whose long side exceeds 200x the short side.
MAX_ASPECT_RATIO = 200
FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageGeometryError(InputError):
    """An image the model's processor cannot take (too small, or too elongated)."""


@dataclass(frozen=True)
class View:
    """One image as the model sees it."""

    image: Image.Image
    visual_tokens: int

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass(frozen=True)
class Views:
    low: View
    high: View


@dataclass(frozen=True)
class ResolutionPolicy:
    min_pixels: int = 512 * 512
    max_pixels: int = 2048 * 2048
    downsample_factor: int = 2
    # PIL resampling filter of the low view: lanczos (released code) | box | bilinear | bicubic
    downsample_filter: str = "lanczos"
    # The processor's own floor. It must not exceed the low view's pixels, or the processor
    # would upscale the low view and the 1/4 saving would vanish.
    processor_min_pixels: int = 56 * 56
    # The processor's patch geometry (Qwen2.5-VL: 14 px patches, 2x2 merged into one token);
    # EpisodeBuilder takes both from the checkpoint's processor.
    patch_size: int = 14
    merge_size: int = 2

    def __post_init__(self) -> None:
        if self.downsample_factor < 1:
            raise ValueError(f"resolution.downsample_factor must be >= 1, got {self.downsample_factor}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"resolution needs 0 < min_pixels <= max_pixels, got {self.min_pixels} and {self.max_pixels}"
            )
        if self.processor_min_pixels > self.max_pixels:
            raise ValueError("resolution.processor_min_pixels must not exceed max_pixels")
        if self.downsample_filter not in FILTERS:
            raise ValueError(
                f"resolution.downsample_filter must be one of {sorted(FILTERS)}, got {self.downsample_filter!r}"
            )

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def processor_size(self) -> dict[str, int]:
        """Pixel bounds for ``Qwen2VLImageProcessorPil(size=...)``."""
        return {"shortest_edge": self.processor_min_pixels, "longest_edge": self.max_pixels}

    def visual_tokens(self, width: int, height: int) -> int:
        """The number of ``<|image_pad|>`` tokens the processor emits for an image of this size."""
        resized_h, resized_w = smart_resize(
            height, width, factor=self.factor, min_pixels=self.processor_min_pixels, max_pixels=self.max_pixels
        )
        return (resized_h // self.factor) * (resized_w // self.factor)

    def check(self, image: Image.Image) -> None:
        width, height = image.size
        if min(width, height) < self.factor:
            raise ImageGeometryError(
                f"image is {width}x{height} px; the model needs at least {self.factor} px per side",
                "Drop the sample or pad the image",
            )
        if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
            raise ImageGeometryError(
                f"image is {width}x{height} px, an aspect ratio above {MAX_ASPECT_RATIO}:1 that the processor rejects",
                "Crop or pad the image",
            )

    def high_view(self, image: Image.Image) -> View:
        """The original image, scaled (area-preserving aspect) into ``[min_pixels, max_pixels]``."""
        self.check(image)
        width, height = image.size
        pixels = width * height
        if pixels > self.max_pixels or pixels < self.min_pixels:
            bound = self.max_pixels if pixels > self.max_pixels else self.min_pixels
            scale = math.sqrt(bound / pixels)
            width, height = max(1, int(width * scale)), max(1, int(height * scale))
            image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
        return View(image=image, visual_tokens=self.visual_tokens(width, height))

    def low_view(self, high: View) -> View:
        width, height = high.size
        width = max(1, width // self.downsample_factor)
        height = max(1, height // self.downsample_factor)
        image = high.image.resize((width, height), resample=FILTERS[self.downsample_filter])
        return View(image=image, visual_tokens=self.visual_tokens(width, height))

    def views(self, image: Image.Image) -> Views:
        high = self.high_view(image)
        return Views(low=self.low_view(high), high=high)
