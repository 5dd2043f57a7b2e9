"""What a new user hits, tried from the command line as they run it: their own data with bad
rows under DataLoader workers, and wrong config values."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT, SMOKE_RUN, start_up_error
from train_runs import environment, history, mlflow_run


def local_data(tmp_path):
    """A jsonl of 8 usable rows and 4 bad ones (lines 3, 6, 9, 12 of the file)."""
    Image.new("RGB", (224, 224), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (10, 10), "blue").save(tmp_path / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    good = {"image": "red.png", "question": "What colour is it?", "answer": "red"}
    bad = [
        {"image": "broken.png", "question": "q", "answer": "a"},
        {"image": "missing.png", "question": "q", "answer": "a"},
        {"image": "tiny.png", "question": "q", "answer": "a"},
        {"image": "red.png", "question": "", "answer": "a"},
    ]
    rows = []
    for index in range(4):
        rows += [good, good, bad[index]]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def train(tmp_path, *overrides):
    command = [
        sys.executable, str(ROOT / "src" / "train.py"), *SMOKE_RUN, "run_name=mine",
        f"paths.outputs_dir={tmp_path / 'outputs'}", f"paths.data_dir={tmp_path / 'data'}", *overrides,
    ]  # fmt: skip
    return subprocess.run(command, env=environment(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bad_rows_under_two_workers_are_skipped_named_and_counted_once(tmp_path):
    data = local_data(tmp_path)
    result = train(
        tmp_path, "data=local", f"data.train.path={data}", "data.val=null", "data.num_workers=2", "data.batch_size=4",
        "trainer.max_steps=3", "optimized_metrics=[]", "rollout.sampling.max_new_tokens=8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for line in (3, 6, 9, 12):
        assert output.count(f"(row {line} of {data})") == 1, (line, output[-3000:])
    client, (run,) = mlflow_run(tmp_path, "mine")
    assert max(history(client, run.info.run_id, "system/data/skipped_samples").values()) == 4
    # The progress bar carries what a user watches
    flat = " ".join(output.split())  # the bar wraps its metrics over lines
    for key in ("reward", "acc", "resize", "vis_tokens", "step_s"):
        assert re.search(rf"\b{key}: [0-9.]+", flat), (key, output[-2000:])
    assert "srun" not in output  # Lightning's hint for machines with SLURM installed is filtered


@pytest.mark.slow
def test_raise_mode_stops_with_one_line_naming_the_row(tmp_path):
    data = local_data(tmp_path)
    result = train(tmp_path, "data=local", f"data.train.path={data}", "data.val=null", "data.num_workers=2",
                   "data.batch_size=12", "data.on_bad_sample=raise", "trainer.max_steps=1")  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"of {data})" in line


def start_up_line(tmp_path, capsys, monkeypatch, *overrides):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return start_up_error(capsys, monkeypatch, "train.py", *SMOKE_RUN, "run_name=mine",
                          f"paths.outputs_dir={tmp_path / 'outputs'}", f"paths.data_dir={tmp_path / 'data'}",
                          *overrides)  # fmt: skip


@pytest.mark.parametrize(
    "override,expected",
    [
        ("data.batch_size=0", "data.batch_size=0 is not allowed. Use an integer >= 1"),
        ("reward.penalty_theta=abc", "reward.penalty_theta='abc' is not allowed. Use a number in [0.0, 1.0]"),
        ("rollout.group_size=1", "rollout.group_size=1 is not allowed. Use an integer >= 2"),
        ("optim.optimizer.lr=-1", "optim.optimizer.lr=-1 is not allowed"),
    ],
)
def test_a_bad_value_stops_at_start_up_with_one_line_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, override, expected
):
    assert start_up_line(tmp_path, capsys, monkeypatch, override).startswith(f"error: {expected}")
    assert not (tmp_path / "outputs" / "runs" / "mine").exists()
    assert not (tmp_path / "outputs" / "mlflow.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_tool_the_prompt_cannot_offer_stops_at_start_up_with_one_line(tmp_path, capsys, monkeypatch):
    last = start_up_line(tmp_path, capsys, monkeypatch, "prompt=simple_resize", "tool=zoom")
    assert (
        last.startswith("error: prompt 'simple_resize' asks for the image with the <resize> tag")
        and "tool=resize" in last
    )
    assert not (tmp_path / "outputs" / "runs" / "mine").exists()
