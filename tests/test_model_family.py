"""Model families: a checkpoint finds its family by model type; nothing else names one."""

from __future__ import annotations

import ast
import json
import shutil
from functools import partial

import pytest
import torch

from conftest import ROOT
from visionthink.errors import InputError
from visionthink.models import ModelConfig, load_policy
from visionthink.models.family import FAMILY_MODULES, family_of
from visionthink.training.optim import build_optimizer


def test_only_the_models_package_imports_a_family_module():
    family_modules = set(FAMILY_MODULES.values())
    importers = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        if path.parent.name == "models" and path.parent.parent.name == "visionthink":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            importers += [f"{path.relative_to(ROOT)}: {name}" for name in names if name in family_modules]
    assert importers == []


def test_a_second_model_type_loads_and_trains_through_its_family(qwen2_vl_path):
    policy = load_policy(ModelConfig(), qwen2_vl_path)
    assert type(policy).__name__ == "Qwen2VLForConditionalGeneration"
    assert family_of(policy).__name__ == FAMILY_MODULES["qwen2_vl"]
    optimizer = build_optimizer(partial(torch.optim.AdamW, lr=1.0), policy, vision_lr_scale=0.5)
    groups = {group["name"]: group for group in optimizer.param_groups}
    vision = {id(p) for p in groups["vision"]["params"]}
    assert groups["vision"]["lr"] == 0.5
    assert vision == {id(p) for name, p in policy.named_parameters() if name.startswith("model.visual.")}


def test_a_model_type_without_a_family_is_refused_with_what_to_do(qwen2_vl_path, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(qwen2_vl_path, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "a_new_vlm"}))
    with pytest.raises(InputError, match=r"'a_new_vlm' model.*FAMILY_MODULES"):
        load_policy(ModelConfig(), str(folder))
