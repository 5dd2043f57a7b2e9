"""`make reproduce` in a few steps: every stage runs, the report is written from the outputs, a
rerun skips finished stages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

FAST = [
    "seeds=[0]", "data.train=48", "data.val=4", "data.test=8", "grpo.steps=2", "grpo.batch_size=2", "grpo.group_size=2",
    "grpo.max_new_tokens=16", "grpo.val_every=2", "eval.max_new_tokens=16", "theta_sweep.thetas=[0.3]",
    "theta_sweep.steps=1",
    'base.overrides=["trainer.max_steps=2","data.batch_size=4","pretrain.report_samples=4","pretrain.max_new_tokens=8",'
    '"data.synthetic.splits={train: 16, val: 4, test: 8}"]',
]  # fmt: skip


def test_fast_reproduction_runs_every_stage_and_renders_the_report(tmp_path):
    report = tmp_path / "docs" / "reproduction.md"
    command = [
        sys.executable,
        str(ROOT / "src" / "reproduce.py"),
        f"paths.outputs_dir={tmp_path / 'outputs'}",
        f"report={report}",
        *FAST,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    text = report.read_text()
    for heading in ("## What reproduced", "## Setup", "## The base model", "## Resize-call ratio during training",
                    "## Accuracy and visual tokens", "## Theta sweep"):  # fmt: skip
        assert heading in text, heading
    for variant in ("paper", "no_penalty", "flat_penalty"):
        assert f"| {variant} (seed 0) |" in text
    for figure in ("resize_ratio", "base", "theta"):
        assert (report.parent / "figures" / f"reproduction_{figure}.png").read_bytes()[:4] == b"\x89PNG"
    assert text.count("Reproduced") + text.count("Not reproduced") == 6

    outputs = sorted(p for p in (tmp_path / "outputs").rglob("*") if p.is_file() and "reproduce" not in p.parts)
    written = {p: p.stat().st_mtime_ns for p in outputs if p.suffix in (".json", ".ckpt", ".safetensors")}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert written and all(p.stat().st_mtime_ns == mtime for p, mtime in written.items())  # every stage skipped
