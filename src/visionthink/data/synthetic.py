"""A deterministic synthetic VisionThink dataset, written in the released format.

Every image holds large coloured shapes and, in its bottom-right corner, a small label with
one digit of a 3x5 cell font. Each cell is 2x2 pixels holding two dark pixels: on the main
diagonal where the glyph is inked, on the anti-diagonal elsewhere. At full resolution the digit
is a clear texture boundary; halving each side averages every cell to the same grey, so the
digit is gone at 1/4 resolution while the large shapes (colour, kind, count) survive. Each
sample is labelled ``info.use_tool`` by construction.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

COLOURS = {"red": (215, 45, 45), "green": (40, 160, 70), "blue": (45, 85, 215), "yellow": (225, 190, 30)}
SHAPES = ("circle", "square", "triangle")
COUNTS = (1, 2, 3, 4)
DIGIT_GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}
QUESTIONS = {
    "colour": "What colour is the large shape? Answer with one word.",
    "shape": "What kind of shape is the large shape: circle, square or triangle?",
    "count": "How many large circles are in the image? Answer with a number.",
    "digit": "What digit is printed in the small label in the bottom-right corner? Answer with a number.",
}
FINE_KINDS = ("digit",)
COARSE_KINDS = ("colour", "shape", "count")
DATA_SOURCE = "visionthink_synthetic"


@dataclass
class SyntheticConfig:
    """Size and mix of the synthetic set; `make data` writes it with these defaults."""

    size: int = 224
    # Share of questions that need the high-resolution image.
    fine_fraction: float = 0.5
    splits: dict[str, int] = field(default_factory=lambda: {"train": 512, "val": 64, "test": 128})
    seed: int = 0


def glyph_origin(size: int) -> tuple[int, int]:
    """Top-left pixel of the 6x10-pixel glyph: even coordinates (cells align with 2x downsampling)
    inside a single 14-pixel patch of a ``size``-pixel image."""
    return size - 22, size - 26


def label_box(size: int) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the small label around the glyph."""
    left, top = glyph_origin(size)
    return left - 2, top - 2, left + 8, top + 12


def draw_digit(draw: ImageDraw.ImageDraw, digit: str, left: int, top: int) -> None:
    ink = (20, 20, 20)
    for row, bits in enumerate(DIGIT_GLYPHS[digit]):
        for column, bit in enumerate(bits):
            x, y = left + 2 * column, top + 2 * row
            if bit == "1":
                draw.point([(x, y), (x + 1, y + 1)], fill=ink)
            else:
                draw.point([(x + 1, y), (x, y + 1)], fill=ink)


def render(size: int, scene: str, colour: str, shape: str, count: int, digit: str, rng: random.Random) -> Image.Image:
    background = tuple(rng.randint(225, 245) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    free = size - 40  # keep the shapes clear of the label corner
    fill = COLOURS[colour]
    if scene == "count":
        radius = size // 11
        centres: list[tuple[int, int]] = []
        while len(centres) < count:
            x, y = rng.randint(radius, free - radius), rng.randint(radius, free - radius)
            if all(math.dist((x, y), c) > 2.3 * radius for c in centres):
                centres.append((x, y))
        for x, y in centres:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    else:
        half = rng.randint(size // 6, size // 4)
        x, y = rng.randint(half, free - half), rng.randint(half, free - half)
        if shape == "circle":
            draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
        elif shape == "square":
            draw.rectangle((x - half, y - half, x + half, y + half), fill=fill)
        else:
            draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=fill)
    draw.rectangle(label_box(size), fill=(255, 255, 255))
    draw_digit(draw, digit, *glyph_origin(size))
    return image


def make_sample(rng: random.Random, size: int, fine: bool) -> dict:
    kind = rng.choice(FINE_KINDS if fine else COARSE_KINDS)
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    count, digit = rng.choice(COUNTS), rng.choice(list(DIGIT_GLYPHS))
    scene = "count" if kind == "count" else ("shape" if kind in ("colour", "shape") else rng.choice(["count", "shape"]))
    if scene == "count":
        shape = "circle"
    answer = {"colour": colour, "shape": shape, "count": str(count), "digit": digit}[kind]
    image = render(size, scene, colour, shape, count, digit, rng)
    return {
        "images": image,
        "problem": "<image>" + QUESTIONS[kind],
        "original_answer": answer,
        "data_source": f"{DATA_SOURCE}/{kind}",
        "info": {"tgt_width": size // 2, "tgt_height": size // 2, "use_tool": fine},
    }


def generate_split(count: int, config: SyntheticConfig, split_seed: int) -> datasets.Dataset:
    rng = random.Random(split_seed)
    fine_count = round(count * config.fine_fraction)
    flags = [True] * fine_count + [False] * (count - fine_count)
    rng.shuffle(flags)
    rows = [make_sample(rng, config.size, fine) for fine in flags]
    features = datasets.Features(
        {
            "images": datasets.Image(),
            "problem": datasets.Value("string"),
            "original_answer": datasets.Value("string"),
            "data_source": datasets.Value("string"),
            "info": {
                "tgt_width": datasets.Value("int32"),
                "tgt_height": datasets.Value("int32"),
                "use_tool": datasets.Value("bool"),
            },
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def write_synthetic(root: str | Path, config: SyntheticConfig | None = None) -> Path:
    """Write every split as a ``save_to_disk`` folder under ``root`` (skips splits that exist)."""
    config = config or SyntheticConfig()
    root = Path(root)
    for index, (split, count) in enumerate(sorted(config.splits.items())):
        target = root / split
        if (target / "state.json").exists():
            continue
        with _quiet_datasets():
            generate_split(count, config, split_seed=config.seed * 1000 + index).save_to_disk(str(target))
    return root


@contextmanager
def _quiet_datasets():
    """datasets prints a progress bar per shard; a few hundred small images need none."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def vocabulary_lines() -> list[str]:
    """The task's words, for training the tiny model's tokenizer."""
    return list(QUESTIONS.values()) + list(COLOURS) + list(SHAPES) + [str(c) for c in COUNTS] + list(DIGIT_GLYPHS)
