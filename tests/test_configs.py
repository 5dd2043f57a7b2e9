"""Every shipped config composes, and every component config instantiates."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from conftest import CONF_DIR, compose_train

GROUPS = {
    group.name: sorted(p.stem for p in group.glob("*.yaml"))
    for group in CONF_DIR.iterdir()
    # judge_prompt is composed into judge configs (judge.prompt); benchmark belongs to eval.yaml, and
    # mlflow to the entry configs that log without Lightning (composed in their own test)
    if group.is_dir()
    and group.name not in ("hydra", "hparams_search", "experiment", "judge_prompt", "benchmark", "mlflow")
}
INSTANTIATED = ("model", "prompt", "resolution", "rollout", "reward", "judge", "grpo")


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_group_option_composes_and_instantiates(group, option, monkeypatch):
    # API judges read their key from the environment at construction.
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key")
    cfg = compose_train([f"{group}={option}"])
    assert cfg[group] is not None
    if group in INSTANTIATED:
        assert instantiate(cfg[group]) is not None


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "model" / "lora").glob("*.yaml")))
def test_every_lora_option_composes_into_every_model(option):
    from visionthink.models.lora import LoraSettings

    for model in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        settings = instantiate(compose_train([f"model={model}", f"model/lora={option}"]).model).lora
        assert isinstance(settings, LoraSettings) and settings.enabled == (option != "full_weights"), model


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    for group in INSTANTIATED:
        instantiate(cfg[group])


def test_default_run_is_the_miniature_from_the_tiny_base_model():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train")  # without the tests' smaller settings
    assert cfg.model.name_or_path is None and cfg.model.tiny is not None and cfg.model.tiny_base == []
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.data.train.path.endswith("data/synthetic/train")
    assert cfg.prompt.name == "agent_compact"
    assert cfg.data.batch_size == 8 and cfg.rollout.group_size == 8
    assert cfg.judge._target_.endswith("RuleJudge")
    # The paper's theta; an unneeded request costs the miniature more than the paper's 0.1
    assert cfg.reward.penalty_theta == 0.2 and cfg.reward.high_res_penalty == 0.3
    paper = compose_train(["experiment=visionthink_7b"]).reward
    assert (paper.penalty_theta, paper.high_res_penalty) == (0.2, 0.1)


def test_real_checkpoint_configs_need_no_remote_code():
    for name in ("qwen2_5_vl_7b", "qwen2_5_vl_3b", "qwen2_vl_7b"):
        model = instantiate(compose_train([f"model={name}"]).model)
        assert model.name_or_path.startswith(("Qwen/Qwen2.5-VL-", "Qwen/Qwen2-VL-"))
        # fp32 master weights: trainer.precision=bf16-mixed computes in bf16
        assert model.tiny is None and model.dtype == "float32"


@pytest.mark.parametrize("benchmark", sorted(p.stem for p in (CONF_DIR / "benchmark").glob("*.yaml")))
def test_every_benchmark_composes_into_the_eval_config(benchmark):
    from visionthink.evaluation.scoring import METRICS

    cfg = compose_train([f"benchmark={benchmark}"], config_name="eval")
    (spec,) = cfg.benchmark.values()
    assert spec.metric in METRICS
    assert instantiate(spec.columns) is not None


ENTRY_OVERRIDES = {"infer": ["image=x.png", "question=q"], "sweep_report": ["study=s"]}


@pytest.mark.parametrize("entry", sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
def test_every_entry_point_config_composes_and_keeps_its_own_values(entry):
    """A value an entry config sets in its own file must survive composition: with `_self_`
    before the groups, a group's default would silently replace it."""
    from omegaconf import OmegaConf

    cfg = compose_train(ENTRY_OVERRIDES.get(entry, []), config_name=entry)
    own = OmegaConf.load(CONF_DIR / f"{entry}.yaml")
    for key in ("defaults", "hydra"):
        own.pop(key, None)

    def leaves(node, prefix=""):
        for key, value in node.items_ex(resolve=False) if hasattr(node, "items_ex") else node.items():
            path = f"{prefix}{key}"
            if OmegaConf.is_dict(value) and len(value):
                yield from leaves(value, path + ".")
            else:
                yield path, value

    for path, value in leaves(own):
        if value == "???":  # mandatory: given on the command line
            continue
        composed = OmegaConf.select(cfg, path, throw_on_resolution_failure=False)
        expected = OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value
        if OmegaConf.is_config(composed):
            composed = OmegaConf.to_container(composed, resolve=False)
        if isinstance(expected, str) and "${" in expected:
            composed = OmegaConf.to_container(cfg, resolve=False)
            for part in path.split("."):
                composed = composed[part]
        assert composed == expected, f"{entry}.yaml sets {path}={expected!r}, composed to {composed!r}"


# Groups whose default option is the framework's own default: its yaml repeats the dataclass's
# defaults (with comments) and must not drift from them. The model, data and resolution options
# chosen by train.yaml are the miniature's, while their dataclasses default to the paper's values;
# so is its GRPO option (grpo/miniature.yaml, on top of grpo/default.yaml, checked here).
DATACLASS_DEFAULT_GROUPS = ("grpo", "rollout", "reward")


def field_defaults(cls, instance=None) -> dict:
    """A dataclass's defaults by field name; for a field holding a dataclass, its default instance."""
    import dataclasses

    if instance is not None:
        return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    defaults = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def disagreements(node, defaults: dict, path: str) -> list[str]:
    """Where a config node's values differ from the dataclass defaults it repeats."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    found = []
    for key in node:
        if key == "_target_" or key not in defaults:
            continue
        value, default = node[key], defaults[key]
        if isinstance(value, DictConfig):
            if dataclasses.is_dataclass(default):
                found += disagreements(value, field_defaults(type(default), default), f"{path}.{key}")
            continue
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if value != (list(default) if isinstance(default, tuple) else default):
            found.append(f"{path}.{key}: yaml {value!r}, dataclass {default!r}")
    return found


@pytest.mark.parametrize("group", DATACLASS_DEFAULT_GROUPS)
def test_default_options_repeat_the_dataclass_defaults(group):
    import dataclasses

    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import _locate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # The groups' own files, without the default experiment's recipe or the tests' smaller settings
        node = compose(config_name="train", overrides=["~experiment", "grpo=default"])[group]
    cls = _locate(node._target_)
    assert dataclasses.is_dataclass(cls)
    assert not disagreements(node, field_defaults(cls), group)


# Values the default run sets apart from the code's defaults, on purpose: the model, the resolution
# policy and GRPO default to the paper's in code and to the miniature's in train.yaml.
DEPARTURES = {
    "model": "the paper's model in code", "resolution": "the paper's pixel bounds in code",
    "grpo": "the miniature's recipe (grpo/miniature.yaml; grpo/default.yaml repeats the code's)",
    "prompt": "a prompt's tools are its text, not a default", "data.val.limit": "the validation split's own size",
    "rollout.val_sampling.greedy": "SamplingConfig serves both; validation decodes greedily",
    "rollout.sampling.max_new_tokens": "the miniature's traces (experiment/miniature.yaml)",
    "rollout.val_sampling.max_new_tokens": "the miniature's traces (experiment/miniature.yaml)",
    "rollout.sampling.temperature": "the tiny model's tool call holds below 1 (experiment/miniature.yaml)",
    "reward.high_res_penalty": "the tiny base's noisy direct answers (experiment/miniature.yaml)",
}  # fmt: skip


def code_defaults(target: str) -> dict:
    """The defaults of a config target of ours: a dataclass's fields or a callable's keyword defaults."""
    import dataclasses
    import inspect

    from hydra._internal.utils import _locate

    located = _locate(target)
    if dataclasses.is_dataclass(located):
        return field_defaults(located)
    parameters = inspect.signature(located).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def targets(node, path: str = ""):
    """Every node of a composed config with a `_target_` of this project, by its path."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return
    if str(node.get("_target_", "")).startswith("visionthink."):
        yield path, node
    for key in node:
        yield from targets(node._get_node(key), f"{path}.{key}" if path else str(key))


def test_every_option_of_the_default_run_repeats_the_code_defaults_it_sets():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train")
    found = []
    for path, node in targets(cfg):
        if path.split(".")[0] in DEPARTURES:
            continue
        found += [
            d for d in disagreements(node, code_defaults(node._target_), path) if d.split(":")[0] not in DEPARTURES
        ]
    assert not found, found


def test_make_train_and_make_reproduce_run_one_recipe():
    """The miniature's recipe is written once (conf/experiment/miniature.yaml): the default run
    composes it, and the reproduction's GRPO stages name it instead of repeating its values."""
    from hydra import compose, initialize_config_dir

    from visionthink.reproduce.stages import load_recipe, plan

    recipe_keys = ("data.batch_size=", "rollout.group_size=", "optim.optimizer.lr=", "grpo=", "prompt=",
                   "rollout.sampling.", "trainer.val_check_interval=", "data.synthetic.fine_fraction=")  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        train = compose(config_name="train")
        reproduce = compose(config_name="reproduce", overrides=["paths.outputs_dir=/tmp/unused"])
        recipe = load_recipe(reproduce)
        stages = plan(reproduce, recipe)
    grpo_stages = [stage for stage in stages if stage.script == "train.py"]
    assert grpo_stages and all("experiment=miniature" in stage.overrides for stage in grpo_stages)
    repeated = [o for stage in grpo_stages for o in stage.overrides if o.startswith(recipe_keys)]
    assert repeated == []
    assert (recipe.batch_size, recipe.group_size, recipe.lr, recipe.prompt) == (
        train.data.batch_size,
        train.rollout.group_size,
        train.optim.optimizer.lr,
        train.prompt.name,
    )


def test_the_zoom_reproduction_trains_each_tool_set_from_a_base_that_saw_it():
    """make reproduce-zoom: the resize-only variant gets its own base (trained with tool=resize),
    its GRPO and evaluation start from it; the zoom variant shares the recipe's base. Each stage's
    fingerprint follows the base it reads, not the other one."""
    from hydra import compose, initialize_config_dir

    from visionthink.reproduce.stages import load_recipe, plan, reads

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="reproduce_zoom", overrides=["paths.outputs_dir=/out"])
        recipe = load_recipe(cfg)
        stages = {stage.name: stage for stage in plan(cfg, recipe)}
    assert (recipe.tool, recipe.label_corner) == ("resize_zoom", "random")
    for init in cfg.inits:
        base = {"zoom": f"i{init}-base", "resize_only": f"i{init}-base-resize_only"}
        assert "tool=resize_zoom" in stages[base["zoom"]].overrides
        assert "tool=resize" in stages[base["resize_only"]].overrides
        for seed in cfg.seeds:
            for variant, tool in (("zoom", "resize_zoom"), ("resize_only", "resize")):
                grpo, evaluation = stages[f"i{init}-s{seed}-grpo-{variant}"], stages[f"i{init}-s{seed}-eval-{variant}"]
                for stage in (grpo, evaluation):
                    assert [o for o in stage.overrides if o.startswith("model.name_or_path=")] == [
                        f"model.name_or_path=/out/pretrain/miniature-zoom-{base[variant]}/model"
                    ]
                tools = [o for o in evaluation.overrides if o.startswith("tool=")]
                assert tools == [f"tool={tool}"]
                assert [name for name, stage in stages.items() if reads(grpo, stage)] == [base[variant]]
                assert reads(evaluation, grpo)
    assert sum(stage.script == "pretrain.py" for stage in stages.values()) == 2 * len(cfg.inits)
