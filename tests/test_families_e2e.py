"""Every entry point on the newer model families' tiny models, as a user runs them: a LoRA training
run of the tiny Qwen3-VL (``model=tiny_qwen3_vl``) or Qwen3.5 (``model=tiny_qwen3_5``) exports a
merged folder of its family, and evaluate, infer, export and select_data take its checkpoint or
folder (Qwen2.5-VL's runs are in test_train_e2e.py, test_evaluate.py and test_research_tools.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from conftest import load_config_node, run_entry_point, tiny_family_path
from train_runs import run
from visionthink.models import ModelConfig, load_policy, load_processor
from visionthink.models.loading import load_trained_policy

pytestmark = pytest.mark.slow
MODEL_CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_5": "Qwen3_5ForConditionalGeneration"}


@pytest.mark.parametrize("family", sorted(MODEL_CLASSES))
def test_every_entry_point_runs_on_the_family_s_tiny_model(tmp_path, capsys, monkeypatch, family):
    """Training runs as a process; the other entry points, which run as processes on the tiny
    Qwen2.5-VL elsewhere in this tier, run in this one (their imports are what a process adds)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def entry_point(script: str, *args: str) -> str:
        code, stdout, stderr = run_entry_point(capsys, monkeypatch, script, f"model=tiny_{family}",
                                               f"paths.outputs_dir={tmp_path / 'outputs'}", *args)  # fmt: skip
        assert code == 0, stdout[-3000:] + stderr[-3000:]
        return stdout

    tiny_path = tiny_family_path(family)
    # The entropy bonus moves the adapters whatever the untrained model's rewards
    run(tmp_path, "run", f"model=tiny_{family}", "model.lora.rank=4", "grpo.entropy_coef=0.01",
        "optim.optimizer.lr=1e-2", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "callbacks.model_checkpoint.every_n_train_steps=2")  # fmt: skip
    folder = tmp_path / "outputs" / "runs" / "run"
    checkpoint = folder / "checkpoints" / "last.ckpt"
    exported = load_policy(ModelConfig(), str(folder / "model"))
    assert type(exported).__name__ == MODEL_CLASSES[family]
    assert (folder / "model" / "adapter" / "adapter_config.json").is_file()
    # The export is the checkpoint's adapters merged into the tiny model, and they moved it
    merged = load_trained_policy(ModelConfig(name_or_path=tiny_path), str(checkpoint), {})[1].state_dict()
    initial = load_policy(ModelConfig(), tiny_path).state_dict()
    assert all(torch.allclose(value, merged[name], atol=1e-6) for name, value in exported.state_dict().items())
    assert any(not torch.equal(merged[name], initial[name]) for name in initial)

    entry_point("export.py", f"checkpoint={checkpoint}", f"output={tmp_path / 'exported'}")
    assert json.loads((tmp_path / "exported" / "config.json").read_text())["model_type"] == family
    video = json.loads((tmp_path / "exported" / "video_preprocessor_config.json").read_text())
    assert video["video_processor_type"] == "Qwen3VLVideoProcessor" and video["patch_size"] == 16

    entry_point("evaluate.py", f"checkpoint={checkpoint}", f"paths.data_dir={tmp_path / 'data'}",
                "benchmark.synthetic.limit=4", "eval.max_new_tokens=8", "run_name=run")  # fmt: skip
    results = json.loads((tmp_path / "outputs" / "eval" / "run" / "results.json").read_text())["synthetic"]
    # Token counts follow the processor's 32 px units: the 112 px low view of a 224 px image is
    # rounded up to 128 px, 16 tokens against 49 (Qwen2.5-VL's 28 px units: 16 against 64)
    synthetic = replace(load_config_node("resolution", "synthetic"), patch_size=16)
    views = synthetic.views(Image.new("RGB", (224, 224)))
    assert (views.low.visual_tokens, views.high.visual_tokens) == (16, 49)
    assert results["low"]["visual_token_ratio"] == pytest.approx(16 / 49) and results["full"]["samples"] == 4

    image = tmp_path / "q.png"
    Image.new("RGB", (224, 224), (200, 40, 40)).save(image)
    report = json.loads(
        entry_point("infer.py", f"model.name_or_path={tmp_path / 'exported'}", f"image={image}",
                    "question=What colour is it?", "json=true", "max_new_tokens=8").strip().splitlines()[-1]
    )  # fmt: skip
    # 16 px patches: a visual token covers 32 x 32 px (Qwen2.5-VL: 28 x 28), whatever the resolution policy
    processor = load_processor(str(tmp_path / "exported"))
    assert processor.image_processor.patch_size * processor.image_processor.merge_size == 32
    assert report["visual_tokens"]["always_high_res"] == synthetic.views(Image.open(image)).high.visual_tokens

    entry_point("select_data.py", f"paths.data_dir={tmp_path / 'data'}", "data.train.limit=6",
                "selection.rollouts=2", "selection.max_new_tokens=8", "selection.shard_size=6", "run_name=run")  # fmt: skip
    assert json.loads((tmp_path / "outputs" / "select" / "run" / "summary.json").read_text())["samples"] == 6
