"""Resuming a run: which checkpoint, and which settings may differ from the ones it started with.

A run is defined by its model, data, prompt, rollouts, rewards and GRPO settings: a resume that
changes one of them would continue another experiment under the old run's name (and MLflow would
keep the old parameters). Those changes are refused unless named in ``+resume.allow_changes``;
how long to train, logging and where things are written may change freely.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from visionthink.errors import InputError
from visionthink.training.checkpointing import is_readable, newest_readable

log = logging.getLogger(__name__)
SAVED_CONFIG = "config.yaml"
# Config groups (and top-level keys) that define what a run computes
DEFINING = (
    "model", "data", "resolution", "prompt", "rollout", "reward", "judge.model", "judge.prompt", "grpo", "optim", "seed",
)  # fmt: skip
# Keys inside those groups that change how a run executes, not what it computes
OPERATIONAL = (
    "model.cache_dir", "model.attn_implementation", "model.gradient_checkpointing",
    "data.num_workers", "data.val", "data.val_batch_size", "data.on_bad_sample", "data.max_image_pixels",
    "rollout.backend", "rollout.reuse_kv_cache", "rollout.vllm", "rollout.val_sampling",
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    key: str
    saved: Any
    current: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.saved!r} -> {self.current!r}"


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        if not node and prefix:
            return {prefix: {}}
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def _under(key: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def run_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """The settings that define a run and differ between the saved and the current config."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted(k for k in set(old) | set(new) if _under(k, DEFINING) and not _under(k, OPERATIONAL))
    return [Change(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def check_resume_settings(cfg: DictConfig, output_dir: Path) -> list[Change]:
    """Refuse defining changes against the run's saved config unless ``resume.allow_changes``
    names them (a key or a group); returns the accepted changes."""
    saved_file = output_dir / SAVED_CONFIG
    if not saved_file.exists():
        return []
    saved = OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False)
    current = OmegaConf.to_container(cfg, resolve=True)
    allowed = list((cfg.get("resume") or {}).get("allow_changes") or [])
    changes = run_changes(saved, current)
    refused = [c for c in changes if not _under(c.key, allowed)]
    if refused:
        keys = ",".join(c.key for c in refused)
        raise InputError(
            f"resuming run {output_dir.name} with other settings than it started with ({'; '.join(map(str, refused))})",
            f"Resume with its settings ({saved_file}), start a new run_name, or accept the changes with "
            f"+resume.allow_changes=[{keys}]",
        )
    return changes


def save_resumed_config(cfg: DictConfig, output_dir: Path) -> Path:
    """The settings of a resume with accepted changes, beside the run's own (never overwritten)."""
    number = len(list(output_dir.glob("config.resume-*.yaml"))) + 1
    path = output_dir / f"config.resume-{number}.yaml"
    OmegaConf.save(cfg, path, resolve=True)
    return path


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` (``last``: the run folder's newest readable
    checkpoint), or, for a SLURM job that was requeued (preempted, or requeued before its time
    limit), the run folder's newest readable checkpoint if it has one."""
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if cfg.ckpt_path is None and not restarted:
        return None
    if cfg.ckpt_path is not None and cfg.ckpt_path != "last":
        path = Path(cfg.ckpt_path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}. Fix ckpt_path, or pass ckpt_path=last")
        if not is_readable(path):
            raise InputError(f"checkpoint {path} is unreadable (cut short?)", "Pass another one, or ckpt_path=last")
        return str(path)
    path, unreadable = newest_readable(folder)
    if path is None and cfg.ckpt_path is None:
        return None  # a requeued job that had not saved yet starts afresh
    if path is None:
        runs = Path(cfg.paths.outputs_dir) / "runs"
        found = f"only unreadable ones ({', '.join(p.name for p in unreadable)})" if unreadable else "none"
        raise InputError(
            f"no readable checkpoint in {folder}: {found}",
            f"To resume a run, pass its folder name: python src/train.py run_name=<name> ckpt_path=last (runs are in {runs})",
        )
    if unreadable:
        log.warning("%s unreadable (cut short?): resuming from %s", ", ".join(p.name for p in unreadable), path.name)
    elif cfg.ckpt_path is None:
        log.info("SLURM restarted this job: resuming from %s", path)
    return str(path)
