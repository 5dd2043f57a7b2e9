"""Checkpoints a long run on a shared cluster can rely on.

Lightning's ModelCheckpoint, made safe against what such a run meets:
- a file is written under a temporary name in its folder and renamed into place, so a kill or a
  full disk never leaves a truncated checkpoint under a real name (partial files are removed);
- a full disk stops the run with one line naming the folder and the space a checkpoint needs;
- a stop signal (SIGTERM: preemption, ``scancel``, a time limit; SIGUSR1/SIGUSR2: SLURM's warning
  before the time limit, ``--signal``) lets the step in progress finish, saves it, and ends the
  run with :class:`RunStopped`; after a warning under SLURM the job requeues itself first.

Resuming picks the newest readable checkpoint of a run folder (``newest_readable``).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from visionthink.errors import InputError
from visionthink.reward.judges.base import JudgeUnavailable
from visionthink.sweep.tracking import slurm_job_id

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"
# SLURM's warnings before a time limit (sbatch --signal; submitit's launcher sends USR2)
WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class RunStopped(Exception):
    """A run ended by a signal after saving its last finished step."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None, requeued: bool):
        self.signal_name, self.step, self.checkpoint, self.requeued = signal_name, step, checkpoint, requeued
        saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(f"stopped by {signal_name} after step {step} ({saved})")


class DiskFullError(InputError):
    """A checkpoint did not fit on its disk."""


def is_readable(path: Path) -> bool:
    """Whether a checkpoint can be loaded: a torch zip file whose index is intact (a file cut short
    by a kill or a full disk has none), or a sharded checkpoint folder."""
    if path.is_dir():
        return any(path.iterdir())
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def newest_readable(folder: Path) -> tuple[Path | None, list[Path]]:
    """The newest readable checkpoint in ``folder`` (by modification time), and the unreadable
    ones newer than it."""
    candidates = [p for p in folder.glob("*.ckpt") if not p.name.endswith(PARTIAL_SUFFIX)] if folder.is_dir() else []
    unreadable = []
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_readable(path):
            return path, unreadable
        unreadable.append(path)
    return None, unreadable


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_disk_full(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        # torch's zip writer reports a failed write without the errno
        if "No space left on device" in str(error) or "file write failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _gigabytes(size: float) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def estimated_size(trainer: L.Trainer, folder: Path) -> int:
    """Bytes one checkpoint takes: the newest complete one in ``folder``, else the module's tensors
    and the optimizers' state (this rank's share under sharded strategies)."""
    complete = [p for p in folder.glob("*.ckpt") if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)]
    if complete:
        return max(complete, key=lambda p: p.stat().st_mtime).stat().st_size
    tensors = list(trainer.lightning_module.state_dict().values())
    tensors += [v for opt in trainer.optimizers for state in opt.state.values() for v in state.values()]
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


class RunCheckpoint(ModelCheckpoint):
    """``lightning.pytorch.callbacks.ModelCheckpoint`` with atomic writes, one line on a full disk
    and a save on stop signals (module docstring). Takes ModelCheckpoint's arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._warning: str | None = None
        self._previous_handlers: dict[int, Any] = {}

    @property
    def state_key(self) -> str:
        # One per run: its state (kept checkpoints, last.ckpt) must come back when a resume
        # changes every_n_train_steps or save_top_k, which Lightning's key is made of
        return type(self).__name__

    # ---------------------------------------------------------------- signals
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._warning = None
        for signum in WARNING_SIGNALS:
            try:
                self._previous_handlers[signum] = signal.signal(signum, self._on_warning)
            except ValueError:  # not the main thread: the launcher's handlers stay
                return

    def _on_warning(self, signum: int, frame: Any) -> None:
        self._warning = signal.Signals(signum).name
        log.info("%s received: the run saves and stops after the step in progress", self._warning)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _stop_signal(self, trainer: L.Trainer) -> str | None:
        """The signal that asks this run to stop, agreed on by every rank."""
        local = "SIGTERM" if trainer.received_sigterm else self._warning
        if not trainer.strategy.reduce_boolean_decision(local is not None, all=False):
            return None
        return local or "a signal to another rank"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        stopped_by = self._stop_signal(trainer)
        if stopped_by is None:
            return
        self.save_now(trainer)
        requeued = self._requeue(trainer) if stopped_by in {s.name for s in WARNING_SIGNALS} else False
        raise RunStopped(stopped_by, trainer.global_step, self._last_checkpoint_saved or None, requeued)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The final step too, so that a run extended with a larger trainer.max_steps continues from it
        self.save_now(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Stops after a complete step: a SIGTERM during validation, a judge that stopped answering
        if isinstance(exception, (SIGTERMException, JudgeUnavailable)):
            self.save_now(trainer)

    def save_now(self, trainer: L.Trainer) -> None:
        """Save this step now (once), whatever ``every_n_train_steps`` says."""
        if self._last_global_step_saved == trainer.global_step or trainer.global_step == 0:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    @staticmethod
    def _requeue(trainer: L.Trainer) -> bool:
        """Put this SLURM job back in the queue: the new job resumes from the run folder."""
        job_id = slurm_job_id()
        if job_id is None:
            return False
        if trainer.is_global_zero:
            result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                log.warning("could not requeue SLURM job %s: %s", job_id, result.stderr.strip())
                return False
            log.info("requeued SLURM job %s", job_id)
        return True

    # ----------------------------------------------------------------- writes
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            for leftover in Path(self.dirpath).glob(f"*{PARTIAL_SUFFIX}"):  # a kill during a write
                _remove(leftover)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        target = Path(filepath)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        try:
            trainer.save_checkpoint(partial, self.save_weights_only)
        except Exception as error:
            if trainer.is_global_zero:
                _remove(partial)
            if not _is_disk_full(error):
                raise
            folder = target.parent
            raise DiskFullError(
                f"no space left in {folder} for the checkpoint of step {trainer.global_step}: one needs about "
                f"{_gigabytes(estimated_size(trainer, folder))}, {_gigabytes(shutil.disk_usage(folder).free)} are free",
                "Free space there (or keep fewer: callbacks.model_checkpoint.save_top_k), or point "
                "callbacks.model_checkpoint.dirpath elsewhere; then resume with ckpt_path=last",
            ) from None
        if trainer.is_global_zero:
            if target.is_dir():  # a sharded checkpoint folder cannot be replaced by rename
                shutil.rmtree(target)
            os.replace(partial, target)
        trainer.strategy.barrier("RunCheckpoint.rename")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)
