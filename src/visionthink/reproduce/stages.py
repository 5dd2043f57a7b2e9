"""The stages of the miniature reproduction, each a run of one of the entry points.

A stage is a command line plus the file that proves it finished; a finished stage is skipped, so
``make reproduce`` resumes after a kill. Every entry point logs its own MLflow run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from visionthink.paths import PROJECT_ROOT


@dataclass(frozen=True)
class Stage:
    name: str
    script: str
    overrides: list[str]
    # The file the stage writes last; when it exists, the stage is done.
    output: Path


def plan(cfg: Any) -> list[Stage]:
    outputs = Path(cfg.paths.outputs_dir)
    name = cfg.name
    shared = [
        f"paths.outputs_dir={outputs}",
        f"paths.data_dir={outputs / 'reproduce' / name / 'data'}",
        f"model={cfg.model}",
        f"seed={cfg.seed}",
    ]
    data = [
        f"data.synthetic.splits={{train: {cfg.data.train}, val: {cfg.data.val}, test: {cfg.data.test}}}",
        f"data.synthetic.coarse_kinds=[{','.join(cfg.data.coarse_kinds)}]",
        f"data.synthetic.fine_kinds=[{','.join(cfg.data.fine_kinds)}]",
    ]
    sft_model = outputs / "sft" / f"{name}-sft" / "model"
    stages = [
        Stage(
            "sft",
            "sft.py",
            shared
            + data
            + [
                f"run_name={name}-sft",
                f"prompt={cfg.prompt}",
                f"trainer.max_epochs={cfg.sft.epochs}",
                f"data.batch_size={cfg.sft.batch_size}",
                f"optim.optimizer.lr={cfg.sft.lr}",
                f"sft.tool_fraction={cfg.sft.tool_fraction}",
                f"sft.plain_fraction={cfg.sft.plain_fraction}",
            ],  # fmt: skip
            sft_model / "config.json",
        )
    ]
    grpo = shared + data + [
        f"model.name_or_path={sft_model}", f"prompt={cfg.prompt}", f"data.batch_size={cfg.grpo.batch_size}",
        f"rollout.group_size={cfg.grpo.group_size}", f"optim.optimizer.lr={cfg.grpo.lr}",
        f"rollout.sampling.max_new_tokens={cfg.grpo.max_new_tokens}",
        f"rollout.val_sampling.max_new_tokens={cfg.grpo.max_new_tokens}",
        f"trainer.val_check_interval={cfg.grpo.val_every}", "callbacks.model_checkpoint.every_n_train_steps=5",
        *cfg.grpo.overrides,
    ]  # fmt: skip
    evaluation = shared + [
        f"model.name_or_path={sft_model}", f"prompt@prompts.adaptive={cfg.prompt}",
        f"eval.max_new_tokens={cfg.eval.max_new_tokens}",
    ]  # fmt: skip
    stages.append(
        Stage(
            "eval-sft",
            "evaluate.py",
            evaluation + [f"run_name={name}-eval-sft"],
            outputs / "eval" / f"{name}-eval-sft" / "results.json",
        )
    )
    for variant, overrides in cfg.variants.items():
        run = f"{name}-grpo-{variant}"
        stages.append(
            Stage(
                f"grpo-{variant}",
                "train.py",
                grpo + [f"run_name={run}", f"trainer.max_steps={cfg.grpo.steps}", *overrides],
                outputs / "runs" / run / "final_metrics.json",
            )  # fmt: skip
        )
        checkpoint = outputs / "runs" / run / "checkpoints" / "last.ckpt"
        stages.append(
            Stage(
                f"eval-{variant}",
                "evaluate.py",
                evaluation + [f"run_name={name}-eval-{variant}", f"checkpoint={checkpoint}"],
                outputs / "eval" / f"{name}-eval-{variant}" / "results.json",
            )  # fmt: skip
        )
    for theta in cfg.theta_sweep.thetas:
        run = f"{name}-theta-{theta}"
        stages.append(
            Stage(
                f"theta-{theta}",
                "train.py",
                grpo
                + [
                    f"run_name={run}",
                    f"trainer.max_steps={cfg.theta_sweep.steps}",
                    "reward.penalty_mode=paper",
                    f"reward.penalty_theta={theta}",
                ],
                outputs / "runs" / run / "final_metrics.json",
            )  # fmt: skip
        )
    return stages


def run_stages(stages: list[Stage], log_dir: Path) -> list[dict[str, Any]]:
    """Run the stages not done yet, in order; returns what each did (or found)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    record = log_dir / "stages.json"
    done = json.loads(record.read_text()) if record.exists() else {}
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for stage in tqdm(stages, desc="reproduce", unit="stage"):
        if stage.output.exists():
            continue
        command = [sys.executable, str(PROJECT_ROOT / "src" / stage.script), *stage.overrides]
        started = time.perf_counter()
        with (log_dir / f"{stage.name}.log").open("w") as log:
            result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0 or not stage.output.exists():
            raise RuntimeError(
                f"stage {stage.name} failed (exit {result.returncode}); see {log_dir / (stage.name + '.log')}"
            )
        done[stage.name] = {"command": " ".join(["python", f"src/{stage.script}", *stage.overrides]),
                            "seconds": time.perf_counter() - started}  # fmt: skip
        record.write_text(json.dumps(done, indent=2))
    return [dict(name=s.name, **done.get(s.name, {"command": "(done earlier)", "seconds": None})) for s in stages]
