"""Evaluation and inference end to end: outputs, accounting, resume, adapters, bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import datasets
import mlflow
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from conftest import ROOT, compose_train, start_up_error
from visionthink.evaluation.runner import evaluate, result_key
from visionthink.models import ModelConfig, load_policy
from visionthink.models.loading import load_trained_policy

MODES_KEYS = ("score", "resize_ratio", "visual_tokens", "visual_token_ratio", "seconds", "samples")


def eval_config(tmp_path, synthetic_root, *overrides, synthetic=True):
    base = [f"paths.outputs_dir={tmp_path / 'outputs'}", "eval.max_new_tokens=12", "eval.batch_size=4", "run_name=t"]
    if synthetic:
        base += [f"benchmark.synthetic.path={synthetic_root / 'train'}", "benchmark.synthetic.limit=8"]
    return compose_train(base + list(overrides), config_name="eval")


def test_synthetic_evaluation_writes_results_table_and_plot(tmp_path, synthetic_root):
    results = evaluate(eval_config(tmp_path, synthetic_root))
    out = tmp_path / "outputs" / "eval" / "t"
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    for mode in ("adaptive", "full", "low"):
        figures = saved["synthetic"][mode]
        assert all(key in figures for key in MODES_KEYS) and figures["samples"] == 8
        assert {"decision_precision", "decision_recall", "oracle_visual_tokens", "oracle_gap"} <= set(figures)
        assert {"score/needs_high_res", "score/low_res_enough"} <= set(figures)
    # Exact figures from the resolution policy: 224 px -> 64 tokens, 112 px -> 16.
    assert saved["synthetic"]["full"]["visual_tokens"] == 64.0
    assert saved["synthetic"]["low"]["visual_tokens"] == 16.0
    assert saved["synthetic"]["low"]["visual_token_ratio"] == 0.25
    table = (out / "table.md").read_text().splitlines()
    assert table[0].startswith("| mode | synthetic") and [row.split("|")[1].strip() for row in table[2:]] == [
        "full",
        "low",
        "adaptive",
    ]
    assert (out / "score_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"


def test_the_adaptive_mode_runs_with_the_zoom_tool_and_counts_tokens_by_source(tmp_path, synthetic_root):
    cfg = eval_config(tmp_path, synthetic_root, "eval.modes=[adaptive]", "tool=resize_zoom", "eval.max_turns=3")
    assert [tool.name for tool in instantiate(cfg.prompts.adaptive).tools] == ["resize_image", "image_zoom_in_tool"]
    figures = evaluate(cfg)["synthetic"]["adaptive"]
    assert figures["visual_tokens/first_view"] == 16.0
    spent = sum(figures.get(f"visual_tokens/{source}", 0.0) for source in ("first_view", "resize", "zoom"))
    assert spent == pytest.approx(figures["visual_tokens"])
    # Another tool set is another setting: its results are not taken for these
    resize_only = eval_config(tmp_path, synthetic_root, "eval.modes=[adaptive]", "eval.max_turns=3")
    assert result_key(resize_only, "synthetic", "adaptive") != result_key(cfg, "synthetic", "adaptive")


def test_finished_benchmarks_are_not_recomputed_unless_a_setting_changed(tmp_path, synthetic_root):
    cfg = eval_config(tmp_path, synthetic_root, "eval.modes=[low]")
    evaluate(cfg)
    partial = tmp_path / "outputs" / "eval" / "t" / "partial" / "synthetic__low.json"

    def mark():  # a recomputation overwrites the marker
        saved = json.loads(partial.read_text())
        saved["figures"]["score"] = 123.0
        partial.write_text(json.dumps(saved))

    mark()
    assert evaluate(cfg)["synthetic"]["low"]["score"] == 123.0
    base = load_policy(ModelConfig())
    torch.save({"state_dict": {f"policy.{k}": v for k, v in base.state_dict().items()}}, tmp_path / "c.ckpt")
    changes = ["benchmark.synthetic.limit=4", "eval.max_new_tokens=8", f"checkpoint={tmp_path / 'c.ckpt'}",
               "prompt@prompts.low=agent"]  # fmt: skip
    for change in changes:
        mark()
        figures = evaluate(eval_config(tmp_path, synthetic_root, "eval.modes=[low]", change))["synthetic"]["low"]
        assert figures["score"] != 123.0, change
    # The key resolves interpolations against the whole config (the default benchmark path does).
    default_paths = compose_train([f"paths.data_dir={tmp_path}"], config_name="eval")
    assert result_key(default_paths, "synthetic", "low") != result_key(cfg, "synthetic", "low")
    # The same checkpoint file rewritten (a longer training run saved over it) counts as another one.
    cfg = eval_config(tmp_path, synthetic_root, "eval.modes=[low]", f"checkpoint={tmp_path / 'c.ckpt'}")
    evaluate(cfg)
    mark()
    torch.save({"state_dict": {f"policy.{k}": v for k, v in base.state_dict().items()}}, tmp_path / "c.ckpt")
    assert evaluate(cfg)["synthetic"]["low"]["score"] != 123.0


def test_a_training_checkpoint_replaces_the_weights(tmp_path, synthetic_root):
    base = load_policy(ModelConfig())
    state = {f"policy.{k}": v + 0.01 if k.endswith("lm_head.weight") else v for k, v in base.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "c.ckpt")
    cfg = eval_config(tmp_path, synthetic_root, f"checkpoint={tmp_path / 'c.ckpt'}")
    _, policy, _ = load_trained_policy(
        instantiate(cfg.model), cfg.get("checkpoint"), instantiate(cfg.resolution).processor_size()
    )
    assert torch.allclose(policy.lm_head.weight, base.lm_head.weight + 0.01)


def lmms_pope_parquet(path, bad_image=False):
    def png(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    rows = {
        "question_id": ["1", "2", "3"],
        "question": ["Is there a dog?", "Is there a cat?", "Is there a car?"],
        "answer": ["yes", "no", "no"],
        "image": [
            {"bytes": png("red"), "path": None},
            {"bytes": b"broken" if bad_image else png("blue"), "path": None},
            {"bytes": png("green"), "path": None},
        ],
        "category": ["random", "random", "adversarial"],
    }
    features = datasets.Features(
        {k: datasets.Value("string") for k in rows if k != "image"} | {"image": datasets.Image()}
    )
    path.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path / "test-00000.parquet"))


def test_lmms_eval_layout_adapter(tmp_path, synthetic_root):
    lmms_pope_parquet(tmp_path / "benchmarks" / "POPE" / "test")
    overrides = ("benchmark=pope", f"paths.data_dir={tmp_path}", "eval.modes=[full]")
    cfg = eval_config(tmp_path, synthetic_root, *overrides, synthetic=False)
    figures = evaluate(cfg)["pope"]["full"]
    assert figures["samples"] == 3 and {"pope/f1", "pope/accuracy", "pope/yes_ratio"} <= set(figures)
    assert figures["score"] == figures["pope/f1"]


def run_cli(script, *args, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_evaluate_cli_logs_one_mlflow_run(tmp_path, synthetic_root):
    result = run_cli(
        "evaluate.py", f"paths.outputs_dir={tmp_path}", f"benchmark.synthetic.path={synthetic_root / 'train'}",
        "benchmark.synthetic.limit=4", "eval.max_new_tokens=8", "run_name=cli",
        env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("visionthink-eval").experiment_id])
    assert run.data.metrics["synthetic/low/visual_token_ratio"] == 0.25
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "results.json",
        "table.md",
        "score_vs_tokens.png",
    }


@pytest.mark.parametrize(
    "args,message",
    [
        (["checkpoint=/nowhere/last.ckpt"], "checkpoint /nowhere/last.ckpt does not exist"),
        (["benchmark.synthetic.limit=0"], "has no samples"),
        (["benchmark.synthetic.path=/nowhere"], "data path /nowhere does not exist"),
        (["benchmark.synthetic.columns.question=prompt"], "no column for 'question'; expected one of ['prompt']"),
    ],
)
def test_evaluate_cli_bad_input_exits_non_zero_and_writes_nothing(
    tmp_path, synthetic_root, capsys, monkeypatch, args, message
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    line = start_up_error(capsys, monkeypatch, "evaluate.py", f"paths.outputs_dir={tmp_path}",
                          f"paths.data_dir={tmp_path}", f"benchmark.synthetic.path={synthetic_root / 'train'}",
                          "run_name=bad", *args)  # fmt: skip
    assert message in line
    assert not (tmp_path / "eval").exists()


def test_evaluate_cli_names_a_corrupt_image(tmp_path, capsys, monkeypatch):
    lmms_pope_parquet(tmp_path / "benchmarks" / "POPE" / "test", bad_image=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    line = start_up_error(capsys, monkeypatch, "evaluate.py", f"paths.outputs_dir={tmp_path}",
                          f"paths.data_dir={tmp_path}", "benchmark=pope", "run_name=bad")  # fmt: skip
    assert "sample 2" in line and "not a readable image" in line
    assert not (tmp_path / "eval" / "bad" / "results.json").exists()


def test_infer_cli_names_a_missing_image(tmp_path, capsys, monkeypatch):
    line = start_up_error(capsys, monkeypatch, "infer.py", f"image={tmp_path / 'none.png'}", "question=q")
    assert "does not exist" in line


@pytest.mark.slow
def test_infer_cli(tmp_path, samples):
    samples[0].image.save(tmp_path / "q.png")
    result = run_cli(
        "infer.py", f"image={tmp_path / 'q.png'}", "question=What colour is it?", "json=true", "max_new_tokens=8"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["visual_tokens"]["first_view"] == 16 and report["visual_tokens"]["always_high_res"] == 64
    assert len(report["turns"]) >= 1 and "used_high_res" in report
