"""The image tools a model may call, and the image each call brings back.

A prompt declares its tools as ``ToolSpec``s (``conf/tool/``); each spec's ``kind`` names the
class here that executes it:

- ``resize`` (VisionThink's): the whole image again at full resolution.
- ``zoom`` (DeepEyes, Mini-o3, veRL's image zoom-in tool): a region of the full-resolution image,
  given as ``bbox_2d = [x1, y1, x2, y2]`` in the coordinates of the first image the model saw.
  The model family decides the convention: absolute pixels of the image as the processor resized
  it (Qwen2.5-VL grounds that way) or 0-1000 of its width and height (Qwen3-VL).

A call its tool cannot execute (an empty box, a second resize) raises ``ToolError``: the rollout
answers with an error turn the model can recover from, and the format reward is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image

if TYPE_CHECKING:
    from visionthink.episode.builder import Episode
    from visionthink.episode.prompts import ToolSpec

BoxCoordinates = Literal["pixels", "relative_1000"]
BOX_COORDINATES = ("pixels", "relative_1000")
# Where an image of a trajectory came from; the metrics count visual tokens by source.
FIRST_VIEW = "first_view"


class ToolError(ValueError):
    """A well-formed call its tool cannot execute; the message goes back to the model."""


@dataclass(frozen=True)
class ResizeTool:
    spec: ToolSpec
    source = "resize"

    def image(self, episode: Episode, arguments: dict[str, Any], shown: list[str]) -> Image.Image:
        if self.source in shown:
            raise ToolError("the full-resolution image is already shown above")
        return episode.high_view.image

    def region(self, episode: Episode, arguments: dict[str, Any]) -> tuple[int, int, int, int]:
        """The box of the full-resolution image the call shows: all of it."""
        return (0, 0, *episode.high_view.image.size)

    def cache_key(self, arguments: dict[str, Any]) -> tuple:
        # Every rollout of a group gets the same full-resolution image: encoded once per episode
        return (self.spec.name,)


@dataclass(frozen=True)
class ZoomTool:
    spec: ToolSpec
    coordinates: BoxCoordinates
    # The processor's patch and merge sizes: the image the model saw is a whole number of patches,
    # and a crop spans whole merged patches (patch * merge pixels) on each side, at least one.
    patch_size: int
    merge_size: int
    source = "zoom"

    def image(self, episode: Episode, arguments: dict[str, Any], shown: list[str]) -> Image.Image:
        return episode.high_view.image.crop(self.region(episode, arguments))

    def region(self, episode: Episode, arguments: dict[str, Any]) -> tuple[int, int, int, int]:
        """The box of the full-resolution image the call shows."""
        full = episode.high_view.image.size
        return self.full_resolution_box(arguments["bbox_2d"], seen_size(episode, self.patch_size), full)

    def cache_key(self, arguments: dict[str, Any]) -> tuple:
        return (self.spec.name, *arguments["bbox_2d"])

    def first_view_box(self, region: list[int], seen: tuple[int, int], original: tuple[int, int]) -> list[int]:
        """The box a call names for ``region`` (pixels of the original image), in this convention:
        what a teacher trace writes to zoom on a known region."""
        width, height = (1000, 1000) if self.coordinates == "relative_1000" else seen
        scale_x, scale_y = width / original[0], height / original[1]
        left, top, right, bottom = region
        return [
            math.floor(left * scale_x),
            math.floor(top * scale_y),
            math.ceil(right * scale_x),
            math.ceil(bottom * scale_y),
        ]

    def full_resolution_box(
        self, box: list[float], seen: tuple[int, int], full: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """``box`` (in the first view's coordinates) on the full-resolution image, clamped to it
        and enlarged around its centre to whole merged patches per side (at least one), so that
        the processor takes the crop as it is instead of resampling it."""
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            raise ToolError(f"the box {list(box)} is empty: give [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
        width, height = (1000, 1000) if self.coordinates == "relative_1000" else seen
        scale_x, scale_y = full[0] / width, full[1] / height
        left, right = max(0.0, x1 * scale_x), min(float(full[0]), x2 * scale_x)
        top, bottom = max(0.0, y1 * scale_y), min(float(full[1]), y2 * scale_y)
        if not (left < right and top < bottom):
            limits = "0-1000" if self.coordinates == "relative_1000" else f"{width}x{height} px"
            raise ToolError(f"the box {list(box)} lies outside the image ({limits})")
        unit = self.patch_size * self.merge_size
        left, right = enlarge(left, right, unit, full[0])
        top, bottom = enlarge(top, bottom, unit, full[1])
        return left, top, right, bottom


ImageTool = ResizeTool | ZoomTool


def enlarge(low: float, high: float, unit: int, limit: int) -> tuple[int, int]:
    """Whole-pixel bounds covering ``[low, high]``, widened around their centre to a multiple of
    ``unit`` (at most ``limit``) and moved back inside ``[0, limit]``; ``limit`` is never below
    ``unit`` (the resolution policy checks it)."""
    low, high = math.floor(low), math.ceil(high)
    width = min(limit, max(unit, math.ceil((high - low) / unit) * unit))
    if width != high - low:
        centre = (low + high) / 2
        low = min(max(0, round(centre - width / 2)), limit - width)
        high = low + width
    return low, high


def seen_size(episode: Episode, patch_size: int) -> tuple[int, int]:
    """Width and height of the first image as the processor resized it (whole patches)."""
    _, rows, columns = (int(n) for n in episode.prompt.images[0].grid_thw)
    return columns * patch_size, rows * patch_size


def build_tools(
    specs: tuple[ToolSpec, ...], coordinates: BoxCoordinates | None, patch_size: int, merge_size: int
) -> dict[str, ImageTool]:
    """The executable tool of each declared spec, by the name the model calls it with.
    ``coordinates``: the box convention of the model family (None: the processor declares none)."""
    tools: dict[str, ImageTool] = {}
    for spec in specs:
        if spec.kind == "resize":
            tools[spec.name] = ResizeTool(spec)
            continue
        convention = coordinates if spec.coordinates == "auto" else spec.coordinates
        if convention is None:
            raise ValueError(
                f"tool {spec.name!r}: the processor declares no box convention; "
                f"set the tool's coordinates to one of {', '.join(BOX_COORDINATES)}"
            )
        tools[spec.name] = ZoomTool(spec, convention, patch_size, merge_size)
    return tools
