"""Data selection by dual-resolution rollouts (paper 3.5).

Every sample is answered K times at temperature 1 from the 1/4-resolution view and K times from
the full-resolution view, without the tool; a judge scores each answer. A sample is
``low_res_solvable`` when both resolutions are right K/K, ``needs_high_res`` when the
full-resolution count exceeds the low-resolution count by at least ``margin``, else
``ambiguous``. Work is written shard by shard, so a restart skips finished shards.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visionthink.data.readers import SampleDataset
from visionthink.data.sample import SampleError
from visionthink.evaluation.report import write_atomic
from visionthink.reward.judges.base import Judge
from visionthink.reward.scoring import judge_trajectories
from visionthink.rollout.driver import EpisodeDriver
from visionthink.rollout.engine import SamplingConfig
from visionthink.rollout.seeding import mix_seed

log = logging.getLogger(__name__)
CLASSES = ("low_res_solvable", "needs_high_res", "ambiguous")


@dataclass(frozen=True)
class SelectionConfig:
    # Rollouts per resolution (the paper: 8)
    rollouts: int = 8
    # needs_high_res when high-res correct count - low-res correct count >= margin (the paper: 6)
    margin: int = 6
    # Samples per shard (the unit of resumption)
    shard_size: int = 64
    # Samples of each class in the selected dataset (the paper: 10K + 10K); null: all of them
    per_class: int | None = None
    temperature: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0


def label(low_correct: int, high_correct: int, rollouts: int, margin: int) -> str:
    if low_correct == rollouts and high_correct == rollouts:
        return "low_res_solvable"
    if high_correct - low_correct >= margin:
        return "needs_high_res"
    return "ambiguous"


def count_correct(
    driver: EpisodeDriver, judge: Judge, samples: Sequence[Any], mode: str, config: SelectionConfig, extraction: str
) -> list[int]:
    sampling = SamplingConfig(temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    episodes = [driver.builder.build(sample, mode) for sample in samples]
    seed = mix_seed(config.seed, mode)
    trajectories = driver.run(episodes, sampling, group_size=config.rollouts, seed=seed)
    verdicts = judge_trajectories(trajectories, judge, extraction)
    counts = [0] * len(samples)
    for trajectory, verdict in zip(trajectories, verdicts, strict=True):
        counts[trajectory.group] += bool(verdict.correct)
    return counts


def score_shards(
    dataset: SampleDataset,
    driver: EpisodeDriver,
    judge: Judge,
    config: SelectionConfig,
    shard_dir: Path,
    extraction: str = "lenient",
) -> list[dict[str, Any]]:
    """Rows {index, sample_id, data_source, low_correct, high_correct, label} for every readable
    sample, plus {index, sample_id, skipped} for the others; finished shards are read back."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    starts = range(0, len(dataset), config.shard_size)
    for shard, start in enumerate(tqdm(starts, desc="selecting", unit="shard")):
        path = shard_dir / f"shard_{shard:05d}.json"
        if path.exists():
            rows += json.loads(path.read_text())
            continue
        samples, shard_rows = [], []
        for index in range(start, min(start + config.shard_size, len(dataset))):
            try:
                sample = dataset.load(index)
                driver.builder.resolution.check(sample.image)
            except (SampleError, ValueError) as error:
                log.warning("skipping %s", error)
                shard_rows.append({"index": index, "sample_id": dataset.sample_id(index), "skipped": str(error)})
                continue
            samples.append((index, sample))
        if samples:
            low = count_correct(driver, judge, [s for _, s in samples], "low", config, extraction)
            high = count_correct(driver, judge, [s for _, s in samples], "full", config, extraction)
            for (index, sample), lo, hi in zip(samples, low, high, strict=True):
                shard_rows.append(
                    {
                        "index": index,
                        "sample_id": sample.sample_id,
                        "data_source": sample.data_source,
                        "low_correct": lo,
                        "high_correct": hi,
                        "label": label(lo, hi, config.rollouts, config.margin),
                    }
                )
        write_atomic(path, json.dumps(shard_rows))
        rows += shard_rows
    return rows


def balanced(rows: list[dict[str, Any]], per_class: int | None, seed: int) -> list[dict[str, Any]]:
    """Up to ``per_class`` rows of each of the two usable classes, as many of each as the rarer allows."""
    import random

    groups = {name: [r for r in rows if r.get("label") == name] for name in ("low_res_solvable", "needs_high_res")}
    take = min(len(g) for g in groups.values())
    if per_class is not None:
        take = min(take, per_class)
    chosen = []
    for name, group in groups.items():
        chosen += random.Random(mix_seed(seed, name)).sample(group, take)
    return sorted(chosen, key=lambda r: r["index"])


def write_dataset(dataset: SampleDataset, chosen: list[dict[str, Any]], target: Path) -> Path:
    """The chosen rows of the source in the released VisionThink layout, ``info.use_tool`` set from
    the label and the counts kept (``info.low_correct``, ``info.high_correct``)."""
    import datasets

    from visionthink.data.synthetic import FEATURES

    records = []
    for row in chosen:
        sample = dataset.load(row["index"])
        records.append(
            {
                "images": sample.image,
                "problem": sample.question,
                "original_answer": sample.answer,
                "data_source": sample.data_source,
                "info": {
                    "tgt_width": sample.image.width // 2,
                    "tgt_height": sample.image.height // 2,
                    "use_tool": row["label"] == "needs_high_res",
                    "low_correct": row["low_correct"],
                    "high_correct": row["high_correct"],
                },
            }
        )
    features = FEATURES.copy()
    features["info"] = {
        **FEATURES["info"],
        "low_correct": datasets.Value("int32"),
        "high_correct": datasets.Value("int32"),
    }
    columns = {name: [record[name] for record in records] for name in features}
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).save_to_disk(str(target))
    return target


def summary(rows: list[dict[str, Any]], rollouts: int) -> dict[str, Any]:
    scored = [r for r in rows if "label" in r]
    by_source: dict[str, dict[str, int]] = {}
    for row in scored:
        source = by_source.setdefault(row["data_source"], dict.fromkeys(CLASSES, 0))
        source[row["label"]] += 1
    differences = [r["high_correct"] - r["low_correct"] for r in scored]
    return {
        "samples": len(rows),
        "skipped": len(rows) - len(scored),
        "classes": {name: sum(r["label"] == name for r in scored) for name in CLASSES},
        "by_source": by_source,
        "difference_histogram": {str(d): differences.count(d) for d in range(-rollouts, rollouts + 1)},
    }


def plot_differences(histogram: dict[str, int], margin: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    keys = sorted(histogram, key=int)
    axis.bar([int(k) for k in keys], [histogram[k] for k in keys], color="C0")
    axis.axvline(margin - 0.5, color="C3", linestyle="--", label=f"needs high res (>= {margin})")
    axis.set_xlabel("correct at full resolution - correct at 1/4 resolution")
    axis.set_ylabel("samples")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
