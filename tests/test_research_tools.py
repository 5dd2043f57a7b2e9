"""Data selection by dual-resolution rollouts and the prompt-sensitivity probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pytest

from conftest import ROOT, SMALL_RESOLUTION, TOOL_TURN, ScriptedEngine, answer_turn, load_prompt
from visionthink.data import SampleDataset
from visionthink.episode import EpisodeBuilder
from visionthink.reward.judges import Judge, Verdict
from visionthink.rollout import EpisodeDriver, RolloutConfig
from visionthink.selection.dual_resolution import SelectionConfig, balanced, label, score_shards, summary, write_dataset
from visionthink.selection.prompt_probe import probe


class WordJudge(Judge):
    """Correct exactly when the prediction is the word "right"."""

    def _judge(self, items):
        return [Verdict(item.prediction == "right", "word") for item in items]


@pytest.fixture(scope="module")
def worded_root(tmp_path_factory):
    """Synthetic data whose label questions all need the full resolution (no wide-striped labels),
    so the scripted models below can tell the need from the question's words, as these tools'
    tests need; the task where only the image tells is the miniature's (tests/test_reproduce.py)."""
    from visionthink.data import SyntheticConfig, write_synthetic

    config = SyntheticConfig(coarse_kinds=("colour",), splits={"train": 24})
    return write_synthetic(tmp_path_factory.mktemp("worded"), config)


def resolution_aware(tokenizer):
    """Right at full resolution; at low resolution right only on questions that do not need it."""

    def script(request):
        full = request.images[0].grid_thw.prod().item() // 4 == 64
        digit = "small label" in tokenizer.decode(request.token_ids[-40:])
        return answer_turn("right" if full or not digit else "wrong")

    return script


def test_labels_follow_the_paper_thresholds():
    assert label(8, 8, 8, 6) == "low_res_solvable"
    assert (
        label(1, 7, 8, 6) == "needs_high_res" and label(2, 7, 8, 6) == "ambiguous" and label(7, 8, 8, 6) == "ambiguous"
    )


def test_selection_labels_balances_writes_and_resumes(tmp_path, processor, worded_root):
    dataset = SampleDataset(worded_root / "train")
    builder = EpisodeBuilder(processor, load_prompt("general_qa"), SMALL_RESOLUTION)
    engine = ScriptedEngine(processor.tokenizer, resolution_aware(processor.tokenizer))
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=4))
    config = SelectionConfig(rollouts=4, margin=3, shard_size=10)
    rows = score_shards(dataset, driver, WordJudge(), config, tmp_path / "shards")
    for row in rows:
        sample = dataset.load(row["index"])
        expected = "needs_high_res" if sample.use_tool else "low_res_solvable"
        assert row["label"] == expected and row["high_correct"] == 4
    calls = len(engine.calls)
    assert score_shards(dataset, driver, WordJudge(), config, tmp_path / "shards") == rows
    assert len(engine.calls) == calls  # every shard was read back, nothing recomputed
    chosen = balanced(rows, per_class=5, seed=0)
    assert (
        sum(r["label"] == "needs_high_res" for r in chosen)
        == sum(r["label"] == "low_res_solvable" for r in chosen)
        == 5
    )
    written = datasets.load_from_disk(str(write_dataset(dataset, chosen, tmp_path / "selected")))
    assert len(written) == 10 and {"images", "problem", "original_answer", "data_source", "info"} <= set(
        written.column_names
    )
    for row, record in zip(chosen, written, strict=True):
        assert record["info"]["use_tool"] == (row["label"] == "needs_high_res")
        assert (record["info"]["low_correct"], record["info"]["high_correct"]) == (
            row["low_correct"],
            row["high_correct"],
        )
    report = summary(rows, 4)
    assert sum(report["classes"].values()) == len(rows) and report["skipped"] == 0
    assert report["difference_histogram"]["4"] == report["classes"]["needs_high_res"]


def test_selection_skips_and_counts_unreadable_images(tmp_path, processor):
    rows = {"images": [{"bytes": b"broken", "path": None}], "problem": ["q"], "original_answer": ["a"]}
    features = datasets.Features(
        {"images": datasets.Image(), "problem": datasets.Value("string"), "original_answer": datasets.Value("string")}
    )
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "bad"))
    builder = EpisodeBuilder(processor, load_prompt("general_qa"), SMALL_RESOLUTION)
    driver = EpisodeDriver(ScriptedEngine(processor.tokenizer, lambda r: answer_turn("x")), builder, RolloutConfig())
    result = score_shards(SampleDataset(tmp_path / "bad"), driver, WordJudge(), SelectionConfig(), tmp_path / "shards")
    assert summary(result, 8)["skipped"] == 1 and "not a readable image" in result[0]["skipped"]


def test_probe_reports_call_ratio_format_and_accuracy_by_label(processor, worded_root):
    dataset = SampleDataset(worded_root / "train")
    samples = [dataset.load(i) for i in range(len(dataset))]
    builder = EpisodeBuilder(processor, load_prompt("agent"), SMALL_RESOLUTION)

    def agent_like(request):
        needs = "small label" in processor.tokenizer.decode(request.token_ids[-40:])
        return TOOL_TURN if needs and len(request.images) == 1 else answer_turn("right")

    driver = EpisodeDriver(ScriptedEngine(processor.tokenizer, agent_like), builder, RolloutConfig())
    from visionthink.rollout import SamplingConfig

    result = probe(driver, samples[:8], WordJudge(), SamplingConfig(max_new_tokens=8), rollouts=2, seed=0)
    assert result["resize_call_ratio/needs_high_res"] == 1.0 and result["resize_call_ratio/low_res_enough"] == 0.0
    assert result["format_valid_ratio"] == 1.0 and result["accuracy"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("script", ["select_data.py", "probe_prompts.py"])
def test_entry_points_run_on_the_tiny_model(tmp_path, script):
    common = [
        f"paths.outputs_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.synthetic.splits={train: 12, val: 6, test: 4}",
        "run_name=t",
    ]
    extra = {
        "select_data.py": [
            "data.train.limit=12",
            "selection.rollouts=2",
            "selection.max_new_tokens=8",
            "selection.shard_size=6",
        ],
        "probe_prompts.py": ["probe.samples=4", "probe.rollouts=2", "probe.max_new_tokens=8"],
    }[script]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *common, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if script == "select_data.py":
        report = json.loads((tmp_path / "select" / "t" / "summary.json").read_text())
        assert report["samples"] == 12 and (tmp_path / "select" / "t" / "count_difference.png").exists()
    else:
        results = json.loads((tmp_path / "probe" / "t" / "all" / "results.json").read_text())
        assert set(results) == {"agent", "simple_resize", "simple_think_resize"}
        assert (tmp_path / "probe" / "t" / "all" / "prompts.png").exists()
