"""Small benchmark files in the column layout of lmms-lab's ChartQA and POPE, with images we draw
(no download): the local copies `chartqa_local` and `pope_local` read, and conf/benchmark's
chartqa and pope read too."""

from __future__ import annotations

import random
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

COLOURS = {"red": (215, 45, 45), "green": (40, 160, 70), "blue": (45, 85, 215)}


def bar_chart(values: list[int], rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (224, 224), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    width = 200 // len(values)
    for index, value in enumerate(values):
        left = 12 + index * width
        draw.rectangle((left, 200 - 2 * value, left + width - 8, 200), fill=rng.choice(list(COLOURS.values())))
        draw.text((left, 204), str(value), fill=(0, 0, 0))
    return image


def write_chartqa(folder: Path, count: int, seed: int = 0) -> Path:
    """ChartQA's test layout: type, question, answer, image."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        values = [rng.randint(5, 90) for _ in range(3)]
        rows.append(
            {
                "type": "human_test" if index % 2 else "augmented_test",
                "question": "What is the value of the tallest bar?",
                "answer": str(max(values)),
                "image": bar_chart(values, rng),
            }
        )
    features = datasets.Features(
        {name: datasets.Value("string") for name in ("type", "question", "answer")} | {"image": datasets.Image()}
    )
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "test-00000.parquet"))
    return folder


def write_pope(folder: Path, count: int, seed: int = 0) -> Path:
    """POPE's test layout: id, question_id, question, answer (yes/no), image_source, image, category."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        drawn, asked = rng.choice(["circle", "square"]), rng.choice(["circle", "square"])
        image = Image.new("RGB", (224, 224), (235, 235, 235))
        draw = ImageDraw.Draw(image)
        box = (60, 60, 160, 160)
        (draw.ellipse if drawn == "circle" else draw.rectangle)(box, fill=rng.choice(list(COLOURS.values())))
        rows.append(
            {
                "id": str(index),
                "question_id": str(index + 1),
                "question": f"Is there a {asked} in the image?",
                "answer": "yes" if drawn == asked else "no",
                "image_source": f"drawn_{index}",
                "image": image,
                "category": ("adversarial", "popular", "random")[index % 3],
            }
        )
    names = ("id", "question_id", "question", "answer", "image_source", "category")
    features = datasets.Features({name: datasets.Value("string") for name in names} | {"image": datasets.Image()})
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "test-00000.parquet"))
    return folder
