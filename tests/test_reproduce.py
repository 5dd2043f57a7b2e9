"""`make reproduce` in a few steps: every stage runs, the report is written from the outputs, a
rerun skips finished stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from conftest import ROOT
from visionthink.models import ModelConfig, load_policy
from visionthink.reproduce.report import ZOOM_SECTION, kept_section, write_section

pytestmark = pytest.mark.slow

FAST = [
    "inits=[0,1]", "seeds=[0]", "data.train=48", "data.val=4", "data.test=8", "grpo.steps=2",
    'train_overrides=["data.batch_size=2","rollout.group_size=2","rollout.sampling.max_new_tokens=16",'
    '"rollout.val_sampling.max_new_tokens=16","trainer.val_check_interval=2"]', "eval.max_new_tokens=16", "theta_sweep.thetas=[0.3]",
    "theta_sweep.steps=1",
    'base.overrides=["trainer.max_steps=2","data.batch_size=4","pretrain.report_samples=4","pretrain.max_new_tokens=8",'
    '"data.synthetic.splits={train: 16, val: 4, test: 8}"]',
]  # fmt: skip


def test_fast_reproduction_runs_every_stage_and_renders_the_report(tmp_path):
    report = tmp_path / "docs" / "reproduction.md"
    # The zoom reproduction's section of an earlier report is kept
    write_section(report, ZOOM_SECTION, ["The zoom claims."])
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
    assert kept_section(report, ZOOM_SECTION) == [ZOOM_SECTION[0], "The zoom claims.", ZOOM_SECTION[1]]
    for heading in ("## What reproduced", "### Initialisation 0", "### Initialisation 1", "## Setup",
                    "## The base models", "## Resize-call ratio during training", "## Accuracy and visual tokens",
                    "## Theta sweep"):  # fmt: skip
        assert heading in text, heading
    # Every variant from the first initialisation, the paper penalty from the others
    for variant in ("paper", "no_penalty", "flat_penalty"):
        assert f"| i0 {variant} s0 |" in text
    assert "| i1 paper s0 |" in text and "| i1 no_penalty s0 |" not in text
    for figure in ("resize_ratio", "base", "theta"):
        assert (report.parent / "figures" / f"reproduction_{figure}.png").read_bytes()[:4] == b"\x89PNG"
    assert text.count("Reproduced") + text.count("Not reproduced") == 6
    # The theta sweep is read on the test split: each sweep run has its own adaptive evaluation
    sweep = json.loads((tmp_path / "outputs" / "eval" / "miniature-i0-s0-eval-theta-0.3" / "results.json").read_text())
    assert list(sweep["synthetic"]) == ["adaptive"]
    ratio = sweep["synthetic"]["adaptive"]["resize_ratio"]
    assert f"| 0 | {100 * ratio:.1f}% |" in text

    # The base stage of each initialisation: a save_pretrained folder that loads, and what it reads
    # per question kind and need (full and 1/4 resolution, the agent prompt's resize ratio), as
    # JSON and in MLflow.
    assert (tmp_path / "outputs" / "pretrain" / "miniature-i1-base" / "perception.json").exists()
    base = tmp_path / "outputs" / "pretrain" / "miniature-i0-base"
    perception = json.loads((base / "perception.json").read_text())
    reported = {"full", "low", "resize_ratio", "resized", "direct", "broken_calls", "tool_calls/resize"}
    assert {"full", "low", "resize_ratio"} <= set(perception) <= reported
    groups = {"colour/low_res_enough", "stripes/needs_high_res", "stripes/low_res_enough"}
    assert all(perception[name] and set(perception[name]) <= groups for name in ("full", "low", "resize_ratio"))
    assert all(0.0 <= value <= 1.0 for by_kind in perception.values() for value in by_kind.values())
    policy = load_policy(ModelConfig(name_or_path=str(base / "model")))
    assert sum(p.numel() for p in policy.parameters()) == sum(
        p.numel() for p in load_policy(ModelConfig()).parameters()
    )
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs(
        [client.get_experiment_by_name("visionthink-pretrain").experiment_id],
        filter_string="attributes.run_name = 'miniature-i0-base'",
    )
    group = next(iter(perception["full"]))
    assert run.data.metrics[f"pretrain/full/{group}"] == perception["full"][group]

    outputs = sorted(p for p in (tmp_path / "outputs").rglob("*") if p.is_file() and "reproduce" not in p.parts)
    written = {p: p.stat().st_mtime_ns for p in outputs if p.suffix in (".json", ".ckpt", ".safetensors")}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert written and all(p.stat().st_mtime_ns == mtime for p, mtime in written.items())  # every stage skipped


ZOOM_FAST = [
    "seeds=[0]", "data.train=32", "data.val=4", "data.test=8", "grpo.steps=2", "eval.max_new_tokens=16",
    'train_overrides=["data.batch_size=2","rollout.group_size=2","rollout.sampling.max_new_tokens=16",'
    '"rollout.val_sampling.max_new_tokens=16","trainer.val_check_interval=2"]',
    'base.overrides=["trainer.max_steps=2","data.batch_size=4","pretrain.report_samples=4","pretrain.max_new_tokens=8",'
    '"pretrain.grounding_fraction=0.5","data.synthetic.splits={train: 16, val: 4, test: 8}"]',
]  # fmt: skip


def test_the_zoom_reproduction_writes_its_section_and_keeps_the_rest_of_the_report(tmp_path):
    report = tmp_path / "docs" / "reproduction.md"
    report.parent.mkdir(parents=True)
    report.write_text("# VisionThink in miniature: reproduction report\n\nThe resize claims.\n")
    command = [
        sys.executable, str(ROOT / "src" / "reproduce.py"), "--config-name", "reproduce_zoom",
        f"paths.outputs_dir={tmp_path / 'outputs'}", f"report={report}", *ZOOM_FAST,
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    for _ in range(2):  # the second run skips every stage and rewrites the section in place
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    text = report.read_text()
    assert text.startswith("# VisionThink in miniature: reproduction report\n\nThe resize claims.\n")
    assert text.count(ZOOM_SECTION[0]) == text.count(ZOOM_SECTION[1]) == 1
    assert "## The zoom tool in miniature" in text
    assert text.count("Reproduced") + text.count("Not reproduced") == 3
    # Both policies from each initialisation's own bases
    for init in (0, 1):
        for variant in ("zoom", "resize_only"):
            results = json.loads(
                (
                    tmp_path / "outputs" / "eval" / f"miniature-zoom-i{init}-s0-eval-{variant}" / "results.json"
                ).read_text()
            )
            figures = results["synthetic"]["adaptive"]
            assert f"| {variant} i{init} s0 | {figures['score']:.1f} |" in text
    # The resize-only policy is evaluated with the resize tool only
    commands = json.loads(
        (tmp_path / "outputs" / "reproduce" / "miniature-zoom" / "stages" / "stages.json").read_text()
    )
    assert " tool=resize " in commands["i0-s0-eval-resize_only"]["command"] + " "
    assert " tool=resize_zoom " in commands["i0-s0-eval-zoom"]["command"] + " "
    assert (report.parent / "figures" / "reproduction_zoom_tools.png").read_bytes()[:4] == b"\x89PNG"
    # The base of the zoom miniature is a Qwen3-VL that learned where the label is (grounding traces)
    base = tmp_path / "outputs" / "pretrain" / "miniature-zoom-i0-base"
    assert json.loads((base / "model" / "config.json").read_text())["model_type"] == "qwen3_vl"
    # The resize-only policy's own base
    assert (tmp_path / "outputs" / "pretrain" / "miniature-zoom-i0-base-resize_only" / "perception.json").exists()
