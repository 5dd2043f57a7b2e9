"""Shared behaviour of the entry points."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionthink import paths  # noqa: F401 (sets VISIONTHINK_ROOT for the configs)
from visionthink.errors import InputError, TrialInterrupted


def exit_on_input_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends the program with its message on stderr and exit code 2, not a traceback
    (also when a config's constructor refused it inside Hydra's ``instantiate``); a run folder
    that holds nothing but what Hydra wrote at start-up is removed."""
    from hydra.errors import InstantiationException

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError, InstantiationException) as error:
            if isinstance(error, InstantiationException) and not isinstance(error.__cause__, InputError):
                raise
            print(f"error: {error.__cause__ if isinstance(error, InstantiationException) else error}", file=sys.stderr)
            remove_unused_run_dir()
            sys.exit(2)

    return wrapper


def remove_unused_run_dir() -> None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().mode.name != "RUN":
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    hydra_files = {HydraConfig.get().output_subdir or ".hydra", f"{HydraConfig.get().job.name}.log"}
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= hydra_files:
        logging.shutdown()  # Hydra's file handler holds the log open
        shutil.rmtree(folder, ignore_errors=True)


class _DropNoise(logging.Filter):
    """Lines that say nothing to act on: Lightning's advertising tips, MLflow creating the
    experiment on a first run, DeepSpeed's accelerator guess on a CPU machine."""

    NOISE = ("💡 Tip", "not found. Creating it.", "Setting accelerator to CPU")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


# Warnings with nothing to act on, each silenced where it comes from (the module that issues it).
# Library deprecations inside torchdata and Lightning:
KNOWN_WARNINGS = [
    ("'set_vital' is deprecated", r"torchdata\."),
    ("`isinstance(treespec, LeafSpec)` is deprecated", r"lightning\."),
    # Checkpoints hold the state after each update, what resuming needs
    ("Using ModelCheckpoint with manual optimization", r"lightning\."),
    # Our metrics are combined across ranks before they are logged (metrics.distributed)
    ("It is recommended to use `self.log(", r"lightning\."),
    # Lightning suggests more loader workers than a small machine has; data.num_workers decides
    ("does not have many workers which may be a bottleneck", r"lightning\."),
    # Lightning's hint on machines with SLURM installed, for runs not started by srun (submitit's jobs are)
    ("The `srun` command is available on your system but is not used", r"lightning\."),
    # A resumed run writes into its own checkpoint folder
    ("exists and is not empty", r"lightning\."),
]


def quiet_known_warnings() -> None:
    for message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{re.escape(message)}", module=module)


def one_console() -> None:
    """Each log line once: Lightning's records go to Hydra's handlers (console and the run's log
    file) instead of also to Lightning's own (added when it is imported), and its advertising
    tips are dropped. Entry points that train call this once Hydra has set up logging."""
    import lightning.pytorch  # noqa: F401 (adds the handler this removes)

    quiet_known_warnings()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # "Received SIGTERM", "Bypassing SIGTERM": the run says in one line what it did about it
    logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropNoise())
    # DeepSpeed's logger prints through its own handler
    logging.getLogger("DeepSpeed").addFilter(_DropNoise())


def end_stopped_run(stop: BaseException, run_name: str) -> None:
    """End a training run that a signal stopped (after its checkpoint was saved) with one line.
    A trial of a local sweep is re-queued by the sweeper on its next run (``TrialInterrupted``);
    a SLURM job exits without a result, so that submitit's launcher sees it cancelled, or waits
    for it when the job was requeued (it resumes from the run folder)."""
    import signal

    from hydra.core.hydra_config import HydraConfig

    from visionthink.sweep.tracking import slurm_job_id
    from visionthink.training.checkpointing import RunStopped

    message = str(stop) if isinstance(stop, RunStopped) else "stopped by SIGTERM"
    if isinstance(stop, RunStopped) and stop.requeued:
        message += f"; SLURM job {slurm_job_id()} is requeued and resumes from it"
    else:
        message += f"; resume with: python src/train.py run_name={run_name} ckpt_path=last"
    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    if multirun and slurm_job_id() is None:
        raise TrialInterrupted(message) from stop
    print(message, file=sys.stderr)
    name = stop.signal_name if isinstance(stop, RunStopped) else "SIGTERM"
    sys.exit(128 + getattr(signal, name, signal.SIGTERM))
