"""A deterministic synthetic VisionThink dataset, written in the released format.

Every image holds large coloured shapes and, in its bottom-right corner, a small label drawn in
1-pixel texture: either fine stripes (horizontal, vertical or diagonal) or a digit of a 3x5 cell font whose
inked cells carry the main-diagonal and whose blank cells the anti-diagonal of 2x2 pixel blocks.
Every aligned 2x2 block of a label holds exactly two dark pixels, so halving each side turns any
label into the same flat grey: the label's content is gone at 1/4 resolution, while the large
shapes (colour, kind, count) survive. Questions about the shapes are answerable at low
resolution; questions about the label are not.

The stripes question is also asked of labels with wide stripes (``wide_stripes`` in
``coarse_kinds``): the same sentence, but stripes of ``WIDE_STRIPE`` pixels stay stripes at 1/4
resolution, so only the image says whether the full resolution is needed. Each sample is labelled
``info.use_tool`` by construction, and ``info.label_box`` holds the label's pixel box.

With ``label_corner: random`` the label sits in any of the four corners and the questions do not
say which: a zoom must find it (the zoom tool's miniature, docs/method.md).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

from visionthink.errors import InputError

log = logging.getLogger(__name__)

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
    "stripes": "Are the fine stripes in the small label in the bottom-right corner horizontal, vertical or diagonal?",
    "digit": "What digit is printed in the small label in the bottom-right corner? Answer with a number.",
}
# The label questions when the label may sit in any corner
WHEREVER = {
    "stripes": "Are the fine stripes in the small label horizontal, vertical or diagonal?",
    "digit": "What digit is printed in the small label? Answer with a number.",
}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
FINE_KINDS = ("stripes", "digit")
# wide_stripes asks the stripes question of a label still readable at 1/4 resolution
COARSE_KINDS = ("colour", "shape", "count", "wide_stripes")
# Three ways, so that a guess from the low view is right a third of the time (a 1-pixel diagonal
# is a checkerboard: two dark pixels in every aligned 2x2 block, as for the other two)
STRIPES = ("horizontal", "vertical", "diagonal")
DATA_SOURCE = "visionthink_synthetic"
# The released VisionThink layout
FEATURES = {
    "images": datasets.Image(),
    "problem": datasets.Value("string"),
    "original_answer": datasets.Value("string"),
    "data_source": datasets.Value("string"),
    "info": {
        "tgt_width": datasets.Value("int32"),
        "tgt_height": datasets.Value("int32"),
        "use_tool": datasets.Value("bool"),
        "label_box": datasets.Sequence(datasets.Value("int32"), length=4),
    },
}


@dataclass
class SyntheticConfig:
    """Size and mix of the synthetic set (`make data` and `make train` use conf/data/synthetic.yaml's)."""

    size: int = 224
    # Share of questions that need the high-resolution image.
    fine_fraction: float = 0.3
    # Label questions to ask: stripes (3 answers) and/or digit (10 answers; a 0.8M-parameter model
    # does not learn to read them within the miniature's budget, see docs/miniature.md)
    fine_kinds: tuple[str, ...] = ("stripes",)
    # Questions answerable at low resolution: colour, shape, count, and wide_stripes (the stripes
    # question of a label with wide stripes, readable at 1/4)
    coarse_kinds: tuple[str, ...] = ("colour", "wide_stripes")
    splits: dict[str, int] = field(default_factory=lambda: {"train": 512, "val": 64, "test": 128})
    seed: int = 0
    # Where the label sits: bottom_right (the questions say so) or random (any corner, unsaid)
    label_corner: str = "bottom_right"

    def __post_init__(self) -> None:
        if self.label_corner not in ("bottom_right", "random"):
            raise ValueError(f"data.synthetic.label_corner must be bottom_right or random, got {self.label_corner!r}")


CELL = 4  # pixels per glyph cell side; even, so 2x downsampling blocks tile it
STRIPE_LABEL = 64  # pixels per side of the striped label
# Stripe width of a wide label: 2 pixels at 1/4 resolution, as readable there as 1-pixel stripes
# are at full resolution
WIDE_STRIPE = 8


def corner_origin(size: int, corner: str, width: int, height: int) -> tuple[int, int]:
    """Top-left pixel of a ``width`` x ``height`` box 8 px in from ``corner``, at even coordinates
    (blocks align with 2x downsampling)."""
    left = 8 if corner.endswith("left") else size - width - 8
    top = 8 if corner.startswith("top") else size - height - 8
    return left, top


def glyph_origin(size: int, corner: str = "bottom_right") -> tuple[int, int]:
    """Top-left pixel of the glyph (3 x 5 cells)."""
    return corner_origin(size, corner, 3 * CELL, 5 * CELL)


def label_box(size: int, corner: str = "bottom_right") -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the small digit label around the glyph."""
    left, top = glyph_origin(size, corner)
    return left - 2, top - 2, left + 3 * CELL + 2, top + 5 * CELL + 2


def stripes_box(size: int, corner: str = "bottom_right") -> tuple[int, int, int, int]:
    """Pixel box of the striped label, at even coordinates."""
    left, top = corner_origin(size, corner, STRIPE_LABEL, STRIPE_LABEL)
    return left, top, left + STRIPE_LABEL, top + STRIPE_LABEL


def draw_stripes(draw: ImageDraw.ImageDraw, orientation: str, box: tuple[int, int, int, int], width: int = 1) -> None:
    left, top, right, bottom = box
    for y in range(top, bottom):
        for x in range(left, right):
            offset = {"horizontal": y - top, "vertical": x - left, "diagonal": x - left + y - top}[orientation]
            draw.point((x, y), fill=(20, 20, 20) if (offset // width) % 2 == 0 else (255, 255, 255))


def draw_digit(draw: ImageDraw.ImageDraw, digit: str, left: int, top: int) -> None:
    ink = (20, 20, 20)
    for row, bits in enumerate(DIGIT_GLYPHS[digit]):
        for column, bit in enumerate(bits):
            for dy in range(0, CELL, 2):
                for dx in range(0, CELL, 2):
                    x, y = left + CELL * column + dx, top + CELL * row + dy
                    if bit == "1":
                        draw.point([(x, y), (x + 1, y + 1)], fill=ink)
                    else:
                        draw.point([(x + 1, y), (x, y + 1)], fill=ink)


def render(
    size: int,
    scene: str,
    colour: str,
    shape: str,
    count: int,
    label: tuple[str, str],
    rng: random.Random,
    corner: str = "bottom_right",
) -> Image.Image:
    """``label`` is ("digit", "7"), ("stripes", "horizontal") or ("wide_stripes", "vertical")."""
    background = tuple(rng.randint(225, 245) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    free = size - STRIPE_LABEL - 12  # keep the shapes clear of the label
    # The shapes keep to the square diagonally opposite the label
    dx = size - free if corner.endswith("left") else 0
    dy = size - free if corner.startswith("top") else 0
    fill = COLOURS[colour]
    if scene == "count":
        radius = size // 11
        centres: list[tuple[int, int]] = []
        while len(centres) < count:
            x, y = rng.randint(radius, free - radius), rng.randint(radius, free - radius)
            if all(math.dist((x, y), c) > 2.3 * radius for c in centres):
                centres.append((x, y))
        for x, y in centres:
            x, y = x + dx, y + dy
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    else:
        half = rng.randint(size // 6, size // 4)
        x, y = rng.randint(half, free - half) + dx, rng.randint(half, free - half) + dy
        if shape == "circle":
            draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
        elif shape == "square":
            draw.rectangle((x - half, y - half, x + half, y + half), fill=fill)
        else:
            draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=fill)
    kind, value = label
    if kind == "digit":
        draw.rectangle(label_box(size, corner), fill=(255, 255, 255))
        draw_digit(draw, value, *glyph_origin(size, corner))
    else:
        draw_stripes(draw, value, stripes_box(size, corner), WIDE_STRIPE if kind == "wide_stripes" else 1)
    return image


def make_sample(
    rng: random.Random,
    size: int,
    fine: bool,
    fine_kinds: tuple[str, ...],
    coarse_kinds: tuple[str, ...],
    label_corner: str = "bottom_right",
) -> dict:
    # Drawn first and only when random, so that bottom_right sets keep their images
    corner = rng.choice(CORNERS) if label_corner == "random" else "bottom_right"
    kind = rng.choice(fine_kinds if fine else coarse_kinds)
    colour, shape, count = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(COUNTS)
    label_kind = kind if kind in (*FINE_KINDS, "wide_stripes") else rng.choice(fine_kinds)
    label = (label_kind, rng.choice(list(DIGIT_GLYPHS) if label_kind == "digit" else STRIPES))
    # Both stripes questions read the same: only the label's stripes say which needs the full image
    question = "stripes" if kind == "wide_stripes" else kind
    scene = "count" if kind == "count" else ("shape" if kind in ("colour", "shape") else rng.choice(["count", "shape"]))
    if scene == "count":
        shape = "circle"
    answer = {"colour": colour, "shape": shape, "count": str(count)}.get(kind, label[1])
    image = render(size, scene, colour, shape, count, label, rng, corner)
    box = label_box(size, corner) if label_kind == "digit" else stripes_box(size, corner)
    wording = WHEREVER if label_corner == "random" else QUESTIONS
    return {
        "images": image,
        "problem": "<image>" + wording.get(question, QUESTIONS[question]),
        "original_answer": answer,
        "data_source": f"{DATA_SOURCE}/{question}",
        "info": {"tgt_width": size // 2, "tgt_height": size // 2, "use_tool": fine, "label_box": list(box)},
    }


def generate_split(count: int, config: SyntheticConfig, split_seed: int) -> datasets.Dataset:
    rng = random.Random(split_seed)
    fine_count = round(count * config.fine_fraction)
    flags = [True] * fine_count + [False] * (count - fine_count)
    rng.shuffle(flags)
    for name, chosen, known in (
        ("fine_kinds", config.fine_kinds, FINE_KINDS),
        ("coarse_kinds", config.coarse_kinds, COARSE_KINDS),
    ):
        if not chosen or set(chosen) - set(known):
            raise ValueError(f"data.synthetic.{name} must be a non-empty subset of {known}, got {chosen}")
    kinds = (tuple(config.fine_kinds), tuple(config.coarse_kinds))
    rows = [make_sample(rng, config.size, fine, *kinds, config.label_corner) for fine in flags]
    return datasets.Dataset.from_list(rows, features=datasets.Features(FEATURES))


# Raised when the generator draws other images or questions from the same settings, so that
# splits written before are written again
GENERATOR_VERSION = 3
# Written beside the splits: the settings they were drawn with, and which splits this wrote
RECORD = "synthetic.json"


def generator_settings(config: SyntheticConfig) -> dict:
    """What decides a split's content, besides its size."""
    return {
        "version": GENERATOR_VERSION, "size": config.size, "fine_fraction": config.fine_fraction,
        "fine_kinds": list(config.fine_kinds), "coarse_kinds": list(config.coarse_kinds), "seed": config.seed,
        "label_corner": config.label_corner,
    }  # fmt: skip


def write_synthetic(root: str | Path, config: SyntheticConfig | None = None) -> Path:
    """Write every missing split as a ``save_to_disk`` folder under ``root``. A split written here
    before (``synthetic.json`` names it) is kept when its settings were these, whatever its size,
    and written again when they were others (another mix, seed or generator version): a config
    change never trains on the old questions. Folders this never wrote are never touched."""
    config = config or SyntheticConfig()
    root = Path(root)
    record_path = root / RECORD
    settings = generator_settings(config)
    record = read_record(record_path) if record_path.exists() else {"settings": settings, "splits": []}
    written = set(record["splits"])
    if record["settings"] != settings:
        for split in sorted(written):
            log.warning("writing the synthetic split %s again: it was drawn with other settings", root / split)
            shutil.rmtree(root / split, ignore_errors=True)
        written = set()
    for index, (split, count) in enumerate(sorted(config.splits.items())):
        target = root / split
        if (target / "state.json").exists():
            continue
        with _quiet_datasets():
            generate_split(count, config, split_seed=config.seed * 1000 + index).save_to_disk(str(target))
        written.add(split)
    if written:
        record_path.write_text(json.dumps({"settings": settings, "splits": sorted(written)}, indent=2))
    return root


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("splits"), list) and "settings" in record):
        raise InputError(
            f"{path} is not a record of the synthetic splits beside it (settings and splits)",
            "Delete it and the synthetic splits in that folder; they are written again on the next run",
        )
    return record


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
    words = list(COLOURS) + list(SHAPES) + [str(c) for c in COUNTS] + list(DIGIT_GLYPHS) + list(STRIPES)
    return list(QUESTIONS.values()) + words
