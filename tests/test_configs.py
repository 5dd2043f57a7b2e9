"""Every shipped config composes, and every component config instantiates."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from conftest import CONF_DIR

GROUPS = {
    group.name: sorted(p.stem for p in group.glob("*.yaml"))
    for group in CONF_DIR.iterdir()
    if group.is_dir() and group.name not in ("hydra", "hparams_search", "experiment")
}
INSTANTIATED = ("model", "prompt", "resolution", "rollout", "reward", "judge", "grpo")


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/visionthink-test-output"
    return cfg


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_group_option_composes_and_instantiates(group, option):
    cfg = compose_train([f"{group}={option}"])
    assert cfg[group] is not None
    if group in INSTANTIATED:
        assert instantiate(cfg[group]) is not None


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    for group in INSTANTIATED:
        instantiate(cfg[group])


def test_default_run_is_the_cpu_tiny_synthetic_experiment():
    cfg = compose_train([])
    assert cfg.model.name_or_path is None and cfg.model.tiny is not None
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.data.train.path.endswith("data/synthetic/train")
    assert cfg.prompt.name == "agent"
    assert cfg.judge._target_.endswith("RuleJudge")
    assert cfg.reward.penalty_theta == 0.2


def test_real_checkpoint_configs_need_no_remote_code():
    for name in ("qwen2_5_vl_7b", "qwen2_5_vl_3b"):
        model = instantiate(compose_train([f"model={name}"]).model)
        assert model.name_or_path.startswith("Qwen/Qwen2.5-VL-")
        assert model.tiny is None and model.dtype == "bfloat16"
