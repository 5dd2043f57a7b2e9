"""Data: released and generic formats, bad input, skip-and-count, the synthetic set."""

from __future__ import annotations

import io
import itertools
import json
import pickle

import datasets
import numpy as np
import pytest
from PIL import Image

from conftest import SMALL_RESOLUTION, compose_train
from visionthink.data import (
    ColumnMapping,
    DataFormatError,
    SampleDataset,
    SampleError,
    SyntheticConfig,
    write_synthetic,
)
from visionthink.data.batching import CollateSamples
from visionthink.data.datamodule import DataSource, VisionThinkDataModule
from visionthink.data.synthetic import (
    DIGIT_GLYPHS,
    QUESTIONS,
    STRIPES,
    generate_split,
    label_box,
    render,
    stripes_box,
)
from visionthink.errors import InputError


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_released_format_reads_from_save_to_disk_and_parquet(synthetic_root, tmp_path):
    from_disk = SampleDataset(synthetic_root / "train")
    sample = from_disk.load(0)
    assert sample.image.mode == "RGB" and sample.image.size == (224, 224)
    assert sample.question.startswith("<image>")
    assert sample.use_tool is sample.info["use_tool"]
    assert sample.data_source.startswith("visionthink_synthetic/")
    datasets.load_from_disk(str(synthetic_root / "train")).to_parquet(str(tmp_path / "train.parquet"))
    from_parquet = SampleDataset(tmp_path / "train.parquet")
    assert len(from_parquet) == len(from_disk)
    assert from_parquet.load(3).answer == from_disk.load(3).answer


def test_generic_jsonl_with_column_mapping_and_relative_image_paths(tmp_path):
    Image.new("RGB", (64, 48), "red").save(tmp_path / "a.png")
    rows = [{"img": "a.png", "q": "Colour?", "gt": ["red", "crimson"], "needs_zoom": False, "id": "x1"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    columns = ColumnMapping(
        image="img", question="q", answer="gt", data_source=None, info=None, use_tool="needs_zoom", sample_id="id"
    )
    sample = SampleDataset(tmp_path / "data.jsonl", columns).load(0)
    assert (sample.sample_id, sample.answer, sample.answers, sample.use_tool) == (
        "x1",
        "red",
        ("red", "crimson"),
        False,
    )
    assert sample.image.size == (64, 48)


def test_wrong_column_names_list_what_was_expected_and_found(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"picture": "a.png", "problem": "q", "answer": "a"}))
    with pytest.raises(
        DataFormatError,
        match=r"expected one of \['images'\], found \['picture', 'problem', 'answer'\].*columns.image",
    ):
        SampleDataset(tmp_path / "d.jsonl")


def test_missing_path_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DataFormatError, match="make data"):
        SampleDataset(tmp_path / "absent")


def write_rows(tmp_path, rows) -> SampleDataset:
    features = datasets.Features(
        {"images": datasets.Image(), "problem": datasets.Value("string"), "original_answer": datasets.Value("string")}
    )
    table = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]}, features=features)
    table.save_to_disk(str(tmp_path / "bad"))
    return SampleDataset(tmp_path / "bad", validate=SMALL_RESOLUTION.check)


def test_bad_samples_are_named_with_the_fix(tmp_path):
    ok = {"bytes": png_bytes(Image.new("RGB", (64, 64))), "path": None}
    rows = [
        {"images": {"bytes": b"not an image", "path": None}, "problem": "q", "original_answer": "a"},
        {
            "images": {"bytes": png_bytes(Image.new("RGB", (20, 20))), "path": None},
            "problem": "q",
            "original_answer": "a",
        },
        {"images": ok, "problem": "  <image> ", "original_answer": "a"},
        {"images": ok, "problem": "q", "original_answer": ""},
        {
            "images": {"bytes": png_bytes(Image.new("RGB", (30, 7000))), "path": None},
            "problem": "q",
            "original_answer": "a",
        },
        {"images": ok, "problem": "q", "original_answer": "a"},
    ]
    dataset = write_rows(tmp_path, rows)
    expected = ["not a readable image", "at least 28 px", "question is empty", "answer is empty", "aspect ratio"]
    for index, reason in enumerate(expected):
        with pytest.raises(SampleError) as error:
            dataset.load(index)
        assert f"sample bad:{index} (row {index + 1} of {tmp_path / 'bad'}): " in str(error.value)
        assert reason in str(error.value) and error.value.fix
        # Raised in a DataLoader worker, the error crosses a process boundary intact.
        assert str(pickle.loads(pickle.dumps(error.value))) == str(error.value)
    assert dataset.load(5).answer == "a"


@pytest.mark.parametrize("mode", ["P", "RGBA", "L", "LA", "I;16", "1", "CMYK"])
def test_any_image_mode_becomes_rgb_with_transparency_on_white(mode, tmp_path):
    image = (
        Image.new("RGBA", (40, 40), (255, 0, 0, 0)).convert(mode)
        if mode != "I;16"
        else Image.new("I;16", (40, 40), 300)
    )
    if mode == "P":
        image = Image.new("RGBA", (40, 40), (255, 0, 0, 0)).convert("P")
        image.info["transparency"] = 0
    path = tmp_path / ("x.tiff" if mode in ("I;16", "CMYK") else "x.png")
    image.save(path)
    (tmp_path / "d.jsonl").write_text(json.dumps({"images": path.name, "problem": "q", "answer": "a"}))
    sample = SampleDataset(tmp_path / "d.jsonl").load(0)
    assert sample.image.mode == "RGB" and sample.image.size == (40, 40)
    if mode == "RGBA":
        assert sample.image.getpixel((0, 0)) == (255, 255, 255)


def test_huge_images_are_scaled_down_to_max_pixels(tmp_path):
    Image.new("RGB", (6000, 5000), "blue").save(tmp_path / "big.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"images": "big.png", "problem": "q", "answer": "a"}))
    views = SMALL_RESOLUTION.views(SampleDataset(tmp_path / "d.jsonl").load(0).image)
    assert views.high.size[0] * views.high.size[1] <= SMALL_RESOLUTION.max_pixels


def test_training_skips_and_counts_bad_samples_and_raise_mode_stops(tmp_path):
    ok = {"bytes": png_bytes(Image.new("RGB", (64, 64))), "path": None}
    rows = [
        {"images": ok, "problem": "q", "original_answer": "a"},
        {"images": ok, "problem": "q", "original_answer": ""},
    ]
    dataset = write_rows(tmp_path, rows)
    batch = CollateSamples("skip")([dataset[0], dataset[1]])
    assert len(batch.samples) == 1 and len(batch.skipped) == 1
    assert batch.skipped[0].sample_id == "bad:1"
    raising = CollateSamples("raise")([dataset[0], dataset[1]])
    with pytest.raises(SampleError, match="answer is empty"):
        CollateSamples.check(raising)
    CollateSamples.check(batch)  # skip mode: nothing raised


def test_datamodule_yields_shuffled_seeded_batches(synthetic_root):
    def first_ids(seed):
        module = VisionThinkDataModule(
            DataSource(str(synthetic_root / "train")), batch_size=4, seed=seed, resolution=SMALL_RESOLUTION
        )
        module.setup()
        return [s.sample_id for s in next(iter(module.train_dataloader())).samples]

    assert first_ids(0) == first_ids(0)
    assert first_ids(0) != first_ids(1)


def test_synthetic_set_is_deterministic_and_labelled(tmp_path):
    config = SyntheticConfig(splits={"train": 40})
    a, b = generate_split(40, config, 7), generate_split(40, config, 7)
    assert a["original_answer"] == b["original_answer"] and a["problem"] == b["problem"]
    assert np.array_equal(np.asarray(a[0]["images"]), np.asarray(b[0]["images"]))
    fine = [row["info"]["use_tool"] for row in a]
    assert sum(fine) == round(40 * config.fine_fraction)
    for row in a:
        # The label questions that need the full resolution are the stripes of 1-px labels
        assert row["info"]["use_tool"] <= ("small label" in row["problem"])
    write_synthetic(tmp_path, config)
    assert (tmp_path / "train" / "state.json").exists()


def test_one_stripes_question_covers_both_needs_and_only_the_image_tells_them_apart():
    rows = list(generate_split(200, SyntheticConfig(), 3))
    stripes = [row for row in rows if row["data_source"].endswith("/stripes")]
    assert {row["problem"] for row in stripes} == {"<image>" + QUESTIONS["stripes"]}
    assert {row["info"]["use_tool"] for row in stripes} == {True, False}
    assert all(not row["info"]["use_tool"] for row in rows if row["data_source"].endswith("/colour"))
    assert {row["original_answer"] for row in stripes} == set(STRIPES)


def test_the_wide_label_is_read_at_low_resolution_and_the_fine_one_is_not():
    """A probe on the low view's label pixels: the direction its grey varies along. It reads the
    orientation of every wide label, while a fine label's low view is the same flat grey every way."""
    import random

    from conftest import load_config_node

    synthetic = load_config_node("resolution", "synthetic")  # the box filter the miniature uses

    def low_label(kind, orientation, seed):
        image = render(224, "shape", "red", "circle", 1, (kind, orientation), random.Random(seed))
        return np.asarray(synthetic.views(image).low.image.crop(tuple(v // 2 for v in stripes_box(224))), float)

    def probe(crop):
        """The direction along which the label's mean grey varies most."""
        grey = crop.mean(axis=2)
        diagonals = [np.diagonal(grey[:, ::-1], offset).mean() for offset in range(-grey.shape[0] + 1, grey.shape[1])]
        spread = {
            "horizontal": grey.mean(axis=1).std(),
            "vertical": grey.mean(axis=0).std(),
            "diagonal": np.std(diagonals),
        }
        return max(spread, key=spread.get)

    for seed in range(4):
        assert [probe(low_label("wide_stripes", o, seed)) for o in STRIPES] == list(STRIPES)
        fine = [low_label("stripes", o, seed) for o in STRIPES]
        assert all(np.abs(fine[0] - other).max() == 0 for other in fine[1:]) and fine[0].std() < 1


def test_splits_written_with_other_settings_are_written_again(tmp_path):
    write_synthetic(tmp_path, SyntheticConfig(splits={"train": 8}, coarse_kinds=("colour",)))
    before = datasets.load_from_disk(str(tmp_path / "train"))["data_source"]
    write_synthetic(tmp_path, SyntheticConfig(splits={"train": 16}, coarse_kinds=("colour",)))
    assert datasets.load_from_disk(str(tmp_path / "train"))["data_source"] == before  # same settings: kept
    write_synthetic(tmp_path, SyntheticConfig(splits={"train": 8}, coarse_kinds=("shape",)))
    assert not any(s.endswith("/colour") for s in datasets.load_from_disk(str(tmp_path / "train"))["data_source"])


@pytest.mark.parametrize("record", ['{"version": 1}', "not json", '{"settings": {}, "splits": "train"}'])
def test_an_unreadable_record_is_named_with_what_to_do(tmp_path, record):
    (tmp_path / "synthetic.json").write_text(record)
    with pytest.raises(InputError, match="synthetic.json is not a record") as error:
        write_synthetic(tmp_path, SyntheticConfig(splits={"train": 4}))
    assert "Delete it" in str(error.value)


def test_a_split_it_did_not_write_is_never_replaced(tmp_path):
    """A folder of the user's own data beside the synthetic splits (or before any record) stays."""
    own = generate_split(4, SyntheticConfig(coarse_kinds=("shape",)), 0)
    own.save_to_disk(str(tmp_path / "train"))
    write_synthetic(tmp_path, SyntheticConfig(splits={"train": 8, "val": 4}, coarse_kinds=("colour",)))
    write_synthetic(tmp_path, SyntheticConfig(splits={"train": 8, "val": 4}, coarse_kinds=("count",)))
    assert datasets.load_from_disk(str(tmp_path / "train"))["data_source"] == own["data_source"]
    assert all(
        s.endswith("/count") or "/stripes" in s for s in datasets.load_from_disk(str(tmp_path / "val"))["data_source"]
    )


@pytest.mark.parametrize(
    "kind,values,box",
    [("digit", list(DIGIT_GLYPHS), label_box(224)), ("stripes", list(STRIPES), stripes_box(224))],
)
def test_the_label_is_lost_at_low_resolution_but_clear_at_high(kind, values, box):
    """Low-res crops of every label are near-identical while the high-res crops differ."""
    import random

    crops_high, crops_low = [], []
    for value in values:
        views = SMALL_RESOLUTION.views(render(224, "shape", "red", "circle", 1, (kind, value), random.Random(0)))
        crops_high.append(np.asarray(views.high.image.crop(box), dtype=float) / 255)
        crops_low.append(np.asarray(views.low.image.crop(tuple(v // 2 for v in box)), dtype=float) / 255)
    high = min(np.abs(a - b).max() for a, b in itertools.combinations(crops_high, 2))
    low = max(np.abs(a - b).max() for a, b in itertools.combinations(crops_low, 2))
    assert high > 0.8  # every pair differs by nearly full contrast somewhere
    assert low < 0.2  # no pair differs by more than a faint ripple
    # ...while the large shapes survive: colour is still readable at low resolution.
    view = SMALL_RESOLUTION.views(render(224, "shape", "blue", "square", 1, (kind, values[0]), random.Random(0))).low
    assert max(np.asarray(view.image).reshape(-1, 3)[:, 2]) > 200


@pytest.mark.parametrize("corner", ["top_left", "top_right", "bottom_left", "bottom_right"])
def test_a_label_in_any_corner_is_lost_at_low_resolution_and_clear_of_the_shapes(corner):
    """The zoom tool's miniature: the label sits in any corner, still unreadable at 1/4, and the
    shapes keep to the opposite side, so the label box holds only the label."""
    import random

    box = stripes_box(224, corner)
    crops_low, crops_high = [], []
    for value in STRIPES:
        image = render(224, "count", "red", "circle", 4, ("stripes", value), random.Random(3), corner)
        views = SMALL_RESOLUTION.views(image)
        crops_high.append(np.asarray(views.high.image.crop(box), dtype=float) / 255)
        crops_low.append(np.asarray(views.low.image.crop(tuple(v // 2 for v in box)), dtype=float) / 255)
        pixels = {tuple(p) for p in np.asarray(image.crop(box)).reshape(-1, 3)}
        assert pixels == {(20, 20, 20), (255, 255, 255)}  # ink and paper only: no shape overlaps it
    assert min(np.abs(a - b).max() for a, b in itertools.combinations(crops_high, 2)) > 0.8
    assert max(np.abs(a - b).max() for a, b in itertools.combinations(crops_low, 2)) < 0.2


def test_random_corners_record_the_label_box_and_leave_the_corner_unsaid(tmp_path):
    split = write_synthetic(tmp_path, SyntheticConfig(splits={"train": 32}, label_corner="random")) / "train"
    rows = list(datasets.load_from_disk(str(split)))
    assert len({tuple(row["info"]["label_box"][:2]) for row in rows}) >= 3
    assert not any("corner" in row["problem"] for row in rows)
    default = list(
        datasets.load_from_disk(str(write_synthetic(tmp_path / "d", SyntheticConfig(splits={"train": 8})) / "train"))
    )
    assert {tuple(row["info"]["label_box"]) for row in default} <= {stripes_box(224)}
    assert all("bottom-right corner" in row["problem"] for row in default if "/stripes" in row["data_source"])


def take(sampler, count: int) -> list[list[int]]:
    """What a training loop does: exactly ``count`` batches from a fresh iterator, never one more."""
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_every_epoch_yields_all_its_batches_when_the_consumer_stops_at_the_last():
    from visionthink.data.sampler import GlobalBatchSampler

    sampler = GlobalBatchSampler(8, 4, seed=1)
    epochs = [take(sampler, len(sampler)) for _ in range(4)]
    for batches in epochs:
        assert sorted(i for batch in batches for i in batch) == list(range(8))
    assert len({tuple(map(tuple, batches)) for batches in epochs}) > 1  # reshuffled per epoch
    assert sampler.state_dict() == {"epoch": 3, "position": 2}


def test_resume_at_and_after_an_epoch_boundary_continues_with_the_next_batch():
    from visionthink.data.sampler import GlobalBatchSampler

    straight = GlobalBatchSampler(12, 4, seed=2)
    reference = [batch for _ in range(3) for batch in take(straight, len(straight))]
    for done in (3, 4, 5):  # at the boundary, and one batch after it
        first = GlobalBatchSampler(12, 4, seed=2)
        taken = take(first, 3) + (take(first, done - 3) if done > 3 else [])
        resumed = GlobalBatchSampler(12, 4, seed=2)
        resumed.load_state_dict(first.state_dict())
        rest = take(resumed, 3 - done % 3) if done % 3 else []
        following = take(resumed, len(resumed))
        assert taken + rest + following == reference[: len(taken + rest + following)], done


def test_a_loader_over_the_sampler_trains_every_epoch(synthetic_root):
    from torchdata.stateful_dataloader import StatefulDataLoader

    from visionthink.data.sampler import GlobalBatchSampler

    sampler = GlobalBatchSampler(8, 4, seed=0)
    loader = StatefulDataLoader(list(range(8)), batch_sampler=sampler)
    for _ in range(3):
        assert sorted(int(i) for batch in take(loader, len(loader)) for i in batch) == list(range(8))


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (8, 4)])
def test_num_workers_null_uses_the_spare_cpus(monkeypatch, cpus, workers):
    """`data=visionthink` ships `num_workers: null`: no more loader processes than the machine has."""
    import os

    from visionthink.data.datamodule import DataSource, VisionThinkDataModule

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert VisionThinkDataModule(DataSource("unused"), num_workers=None).num_workers == workers
    assert compose_train(["data=visionthink"]).data.num_workers is None
