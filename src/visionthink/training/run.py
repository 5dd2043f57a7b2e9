"""Assemble a training run from the composed Hydra config and fit it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from visionthink.rollout.factory import build_backend, check_backend
from visionthink.sweep.tracking import slurm_tags, trial_tags
from visionthink.tracking import check_tracking_servers, end_abandoned_run, mark_model_training, store_creation_lock
from visionthink.training.checkpointing import RunStopped
from visionthink.training.module import VisionThinkGRPO
from visionthink.training.resume import (
    SAVED_CONFIG,
    Change,
    check_resume_settings,
    resolve_checkpoint,
    save_resumed_config,
)

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


def build_module(
    cfg: DictConfig, resolution: Any, backend_factory: Callable[..., Any] = build_backend
) -> VisionThinkGRPO:
    check_backend(cfg.rollout)
    judge = instantiate(cfg.judge)
    judge.probe()
    return VisionThinkGRPO(
        model=instantiate(cfg.model),
        prompt=instantiate(cfg.prompt),
        resolution=resolution,
        rollout=instantiate(cfg.rollout),
        reward=instantiate(cfg.reward),
        judge=judge,
        grpo=instantiate(cfg.grpo),
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        seed=cfg.seed,
        vision_lr_scale=cfg.optim.vision_lr_scale,
        backend_factory=backend_factory,
    )


def build_loggers(cfg: DictConfig, resuming: bool) -> list[Any]:
    """Loggers from config; a resumed run continues the MLflow run it started."""
    run_id_file = Path(cfg.paths.output_dir) / RUN_ID_FILE
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        overrides = {}
        if name == "mlflow" and run_id_file.exists():
            if resuming:
                overrides["run_id"] = run_id_file.read_text().strip()
            else:  # the folder starts afresh: its earlier run, if a kill left it RUNNING, is over
                end_abandoned_run(logger_cfg.tracking_uri, run_id_file.read_text().strip())
        if name != "mlflow":
            loggers.append(instantiate(logger_cfg, **overrides))
            continue
        overrides["tags"] = {**trial_tags(cfg.get("sweep")), **slurm_tags()} or None
        with store_creation_lock(logger_cfg.tracking_uri):
            loggers.append(instantiate(logger_cfg, **overrides))
    return loggers


@rank_zero_only
def log_config(
    loggers: list[Any], cfg: DictConfig, output_dir: Path, resuming: bool, accepted_changes: list[Change]
) -> None:
    """The run's settings in its folder and in MLflow. A resume keeps the saved ones (and MLflow's
    parameters, which it cannot change); accepted changes go to a file of their own."""
    if resuming and (output_dir / SAVED_CONFIG).exists():
        config_file = save_resumed_config(cfg, output_dir) if accepted_changes else None
    else:
        config_file = output_dir / SAVED_CONFIG
        OmegaConf.save(cfg, config_file, resolve=True)
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            mark_model_training(logger.experiment, logger.experiment_id)
            (output_dir / RUN_ID_FILE).write_text(logger.run_id)
            if not resuming:  # MLflow refuses to change a logged parameter
                logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
            if config_file is not None:
                logger.experiment.log_artifact(logger.run_id, str(config_file))


def mark_run_killed(loggers: list[Any]) -> None:
    """A run stopped by a signal is KILLED in MLflow (Lightning marked it FAILED): it resumes."""
    for logger in loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
            logger.experiment.set_terminated(logger.run_id, status="KILLED")


def train(cfg: DictConfig, backend_factory: Callable[..., Any] = build_backend) -> dict[str, float]:
    """Fit the configured run; returns the final metrics (train/, val/, perf/). ``backend_factory``
    builds the rollout engine and its weight sync (rollout/factory.py's, unless a test brings one)."""
    check_tracking_servers(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_checkpoint(cfg)
    # Before any model loads: a resume with other settings is refused
    accepted_changes = check_resume_settings(cfg, output_dir) if ckpt_path is not None else []
    L.seed_everything(cfg.seed, workers=True)
    resolution = instantiate(cfg.resolution)
    # Partial instantiation: Hydra would turn a dataclass kwarg back into a config node.
    datamodule = instantiate(cfg.data, _partial_=True)(resolution=resolution)
    module = build_module(cfg, resolution, backend_factory)
    loggers = build_loggers(cfg, resuming=ckpt_path is not None)
    callbacks = [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    log_config(loggers, cfg, output_dir, ckpt_path is not None, accepted_changes)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except (RunStopped, SIGTERMException):
        if trainer.is_global_zero:
            mark_run_killed(loggers)
        raise
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    if datamodule.val_source is not None and module.last_validated_step != trainer.global_step:
        # The metrics a sweeper optimises must describe the final policy.
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
    if cfg.get("export", True):
        exported = module.export(output_dir / "model")
        for logger in loggers:
            if exported is not None and isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifacts(logger.run_id, str(exported), "model")
    if trainer.is_global_zero:
        (output_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics
