"""The stages of the miniature reproduction, each a run of one of the entry points.

A stage is a command line plus the file that proves it finished; a finished stage is skipped, so
``make reproduce`` resumes after a kill. A stage is finished only with the settings it ran with:
each records a fingerprint of its composed config and of the stages whose outputs it reads, and
one whose recipe (a config file, an override) or input changed since is run again, its old
outputs removed. Every entry point logs its own MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visionthink.paths import PROJECT_ROOT

log = logging.getLogger(__name__)
# The config each entry point composes (conf/<name>.yaml)
CONFIG_OF = {"pretrain.py": "pretrain", "train.py": "train", "evaluate.py": "eval"}


@dataclass(frozen=True)
class Stage:
    name: str
    script: str
    overrides: list[str]
    # The file the stage writes last; when it exists, the stage is done.
    output: Path


@dataclass(frozen=True)
class Recipe:
    """The training recipe every GRPO stage runs (``experiment=<cfg.experiment>`` and
    ``cfg.train_overrides`` on train.yaml, as `make train` composes it), and what the base stage,
    the data and the report take from it."""

    overrides: list[str]
    prompt: str
    batch_size: int
    group_size: int
    lr: float
    val_every: int
    fine_fraction: float
    fine_kinds: list[str]
    coarse_kinds: list[str]
    # The tools the agent prompt offers (conf/tool/), and where the label sits
    tool: str = "resize"
    label_corner: str = "bottom_right"


def load_recipe(cfg: Any) -> Recipe:
    """Compose train.yaml with the reproduction's experiment (inside the running Hydra app)."""
    from hydra import compose

    overrides = [f"experiment={cfg.experiment}", *cfg.train_overrides]
    train = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    synthetic = train.data.synthetic
    return Recipe(
        overrides=overrides, prompt=train.prompt.name, batch_size=train.data.batch_size,
        group_size=train.rollout.group_size, lr=train.optim.optimizer.lr, val_every=train.trainer.val_check_interval,
        fine_fraction=synthetic.fine_fraction, fine_kinds=list(synthetic.fine_kinds),
        coarse_kinds=list(synthetic.coarse_kinds), tool=train.hydra.runtime.choices.tool,
        label_corner=synthetic.label_corner,
    )  # fmt: skip


def data_dir(cfg: Any) -> Path:
    return Path(cfg.paths.outputs_dir) / "reproduce" / cfg.name / "data"


def write_data(cfg: Any, recipe: Recipe) -> None:
    """The VisionThink splits every stage reads (the base stage writes its own, other images)."""
    from visionthink.data.synthetic import SyntheticConfig, write_synthetic

    splits = {"train": cfg.data.train, "val": cfg.data.val, "test": cfg.data.test}
    write_synthetic(data_dir(cfg) / "synthetic", SyntheticConfig(
        fine_fraction=recipe.fine_fraction, fine_kinds=tuple(recipe.fine_kinds),
        coarse_kinds=tuple(recipe.coarse_kinds), splits=splits, label_corner=recipe.label_corner))  # fmt: skip


def run_name(cfg: Any, stage: str, seed: int | None = None, init: int | None = None) -> str:
    """Every run's name, shared with the report: <name>-i<init>-base, <name>-i<init>-s<seed>-grpo-paper, ..."""
    parts = [cfg.name] + ([f"i{init}"] if init is not None else []) + ([f"s{seed}"] if seed is not None else [])
    return "-".join([*parts, stage])


def base_model(cfg: Any, init: int, variant: str = "") -> Path:
    """The base stage's model: the shared one, or a variant's own (``variant``)."""
    stage = f"base-{variant}" if variant else "base"
    return Path(cfg.paths.outputs_dir) / "pretrain" / run_name(cfg, stage, init=init) / "model"


def base_stage(cfg: Any, init: int, overrides: list[str], variant: str = "") -> Stage:
    """The base stage (src/pretrain.py) of an initialisation: the shared one, or a variant's."""
    model = base_model(cfg, init, variant)
    name = f"i{init}-base" + (f"-{variant}" if variant else "")
    return Stage(name, "pretrain.py", overrides + [f"run_name={model.parent.name}"], model.parent / "perception.json")


def variants_of(cfg: Any, init: int) -> list[str]:
    """The GRPO variants run from an initialisation: all of them from the first, those named in
    ``every_init`` from the others."""
    return list(cfg.variants) if init == cfg.inits[0] else [v for v in cfg.variants if v in cfg.every_init]


def plan(cfg: Any, recipe: Recipe) -> list[Stage]:
    """For every initialisation its base stage and the base's evaluation, then for every seed the
    GRPO variants and their evaluations; the theta sweep (and its evaluations) from the first
    initialisation."""
    outputs = Path(cfg.paths.outputs_dir)
    kinds = [
        f"data.synthetic.coarse_kinds=[{','.join(recipe.coarse_kinds)}]",
        f"data.synthetic.fine_kinds=[{','.join(recipe.fine_kinds)}]",
        f"data.synthetic.label_corner={recipe.label_corner}",
    ]
    splits = f"data.synthetic.splits={{train: {cfg.data.train}, val: {cfg.data.val}, test: {cfg.data.test}}}"
    stages = []
    for init in cfg.inits:
        shared = [
            f"paths.outputs_dir={outputs}", f"paths.data_dir={data_dir(cfg)}", f"model={cfg.model}",
            f"model.tiny.seed={init}",
        ]  # fmt: skip
        base = base_model(cfg, init)
        base_overrides = shared + [f"prompt={recipe.prompt}", "seed=0", *kinds, *cfg.base.overrides]
        stages.append(base_stage(cfg, init, base_overrides + [f"tool={recipe.tool}"]))
        evaluation = shared + [
            f"model.name_or_path={base}", f"prompt@prompts.adaptive={recipe.prompt}", f"tool={recipe.tool}",
            f"eval.max_new_tokens={cfg.eval.max_new_tokens}",
        ]  # fmt: skip
        stages.append(evaluate_stage(cfg, run_name(cfg, "eval-base", init=init), evaluation, outputs))
        for seed in cfg.seeds:
            # The recipe first: the model, paths and sizes of the reproduction override it
            grpo = recipe.overrides + shared + [
                splits, f"seed={seed}", "callbacks.model_checkpoint.every_n_train_steps=5",
            ]  # fmt: skip
            for variant in variants_of(cfg, init):
                run = run_name(cfg, f"grpo-{variant}", seed, init)
                # A variant that offers other tools starts from its own base, trained with them (a
                # base knows the prompt it saw: offered one tool less, the shared base never calls)
                tools = [o for o in cfg.variants[variant] if o.startswith("tool=")]
                variant_base = base
                if tools:
                    variant_base = base_model(cfg, init, variant)
                    if seed == cfg.seeds[0]:
                        stages.append(base_stage(cfg, init, base_overrides + tools, variant))
                stages.append(
                    Stage(
                        f"i{init}-s{seed}-grpo-{variant}",
                        "train.py",
                        grpo
                        + [
                            f"model.name_or_path={variant_base}",
                            f"run_name={run}",
                            f"trainer.max_steps={cfg.grpo.steps}",
                            *cfg.variants[variant],
                        ],
                        outputs / "runs" / run / "final_metrics.json",
                    )  # fmt: skip
                )
                # ... and is evaluated with them
                overrides = [o for o in evaluation if not (tools and o.startswith(("tool=", "model.name_or_path=")))]
                overrides += [f"model.name_or_path={variant_base}", *tools] if tools else []
                stages.append(trained_evaluation_stage(cfg, f"eval-{variant}", run, seed, init, overrides, outputs))
            if init != cfg.inits[0]:
                continue
            for theta in cfg.theta_sweep.thetas:
                run = run_name(cfg, f"theta-{theta}", seed, init)
                stages.append(
                    Stage(
                        f"i{init}-s{seed}-theta-{theta}",
                        "train.py",
                        grpo
                        + [
                            f"model.name_or_path={base}",
                            f"run_name={run}",
                            f"trainer.max_steps={cfg.theta_sweep.steps}",
                            "reward.penalty_mode=paper",
                            f"reward.penalty_theta={theta}",
                        ],  # fmt: skip
                        outputs / "runs" / run / "final_metrics.json",
                    )
                )
                # The sweep is read on the test split, as every other claim: the 16-64 validation
                # questions move the resize ratio in steps too coarse for the span it is held to
                stages.append(
                    trained_evaluation_stage(
                        cfg,
                        f"eval-theta-{theta}",
                        run,
                        seed,
                        init,
                        evaluation,
                        outputs,
                        extra=("eval.modes=[adaptive]",),
                    )
                )
    return stages


def trained_evaluation_stage(
    cfg: Any, stage: str, trained_run: str, seed: int, init: int, overrides: list[str], outputs: Path,
    extra: tuple[str, ...] = (),
) -> Stage:  # fmt: skip
    """The evaluation of a GRPO run's last checkpoint, named ``<name>-i<init>-s<seed>-<stage>``;
    ``extra`` overrides follow the checkpoint's."""
    checkpoint = outputs / "runs" / trained_run / "checkpoints" / "last.ckpt"
    overrides = overrides + [f"seed={seed}", f"checkpoint={checkpoint}", *extra]
    return evaluate_stage(cfg, run_name(cfg, stage, seed, init), overrides, outputs)


def evaluate_stage(cfg: Any, run: str, overrides: list[str], outputs: Path) -> Stage:
    return Stage(
        run.removeprefix(f"{cfg.name}-"), "evaluate.py", overrides + [f"run_name={run}"],
        outputs / "eval" / run / "results.json",
    )  # fmt: skip


def settings(stage: Stage) -> str:
    """The config the stage's entry point composes from its overrides, as YAML (interpolations
    unresolved: the run's clock and folders do not change it). Inside a Hydra app."""
    from hydra import compose
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(compose(config_name=CONFIG_OF[stage.script], overrides=stage.overrides))


def reads(stage: Stage, earlier: Stage) -> bool:
    """Whether ``stage`` reads what ``earlier`` wrote (its folder, or a path inside it)."""
    folder = str(earlier.output.parent)
    return any(value == folder or value.startswith(folder + "/") for value in _values(stage.overrides))


def _values(overrides: list[str]) -> list[str]:
    return [override.split("=", 1)[1] for override in overrides if "=" in override]


def fingerprints(stages: list[Stage], settings_of: Callable[[Stage], str] = settings) -> dict[str, str]:
    """Each stage's fingerprint: a digest of its settings and of the fingerprints of the earlier
    stages it reads, so that a changed base makes its GRPO runs and their evaluations stale too."""
    prints: dict[str, str] = {}
    for index, stage in enumerate(stages):
        inputs = [prints[earlier.name] for earlier in stages[:index] if reads(stage, earlier)]
        text = "\n".join([settings_of(stage), *inputs])
        prints[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return prints


def run_stages(stages: list[Stage], log_dir: Path, prints: dict[str, str]) -> list[dict[str, Any]]:
    """Run the stages not done yet with these fingerprints (``fingerprints``), in order; returns
    what each did (or found)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    record = log_dir / "stages.json"
    done = json.loads(record.read_text()) if record.exists() else {}
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for stage in tqdm(stages, desc="reproduce", unit="stage"):
        if stage.output.exists():
            if done.get(stage.name, {}).get("fingerprint") == prints[stage.name]:
                continue
            # Ran with other settings or inputs (or before fingerprints were recorded): its
            # checkpoints and results would be reported as this recipe's
            log.warning("stage %s ran with other settings or inputs than now: removing %s and running it again",
                        stage.name, stage.output.parent)  # fmt: skip
            shutil.rmtree(stage.output.parent)
        command = [sys.executable, str(PROJECT_ROOT / "src" / stage.script), *stage.overrides]
        started = time.perf_counter()
        with (log_dir / f"{stage.name}.log").open("w") as stage_log:
            result = subprocess.run(command, env=env, stdout=stage_log, stderr=subprocess.STDOUT)
        if result.returncode != 0 or not stage.output.exists():
            raise RuntimeError(
                f"stage {stage.name} failed (exit {result.returncode}); see {log_dir / (stage.name + '.log')}"
            )
        done[stage.name] = {"command": " ".join(["python", f"src/{stage.script}", *stage.overrides]),
                            "seconds": time.perf_counter() - started, "fingerprint": prints[stage.name]}  # fmt: skip
        record.write_text(json.dumps(done, indent=2))
    return [dict(name=s.name, **done[s.name]) for s in stages]
