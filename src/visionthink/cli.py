"""Shared behaviour of the entry points."""

from __future__ import annotations

import functools
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionthink.errors import InputError


def exit_on_input_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends the program with its message on stderr and exit code 2, not a traceback;
    a run folder that holds nothing but what Hydra wrote at start-up is removed."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
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


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def one_console() -> None:
    """Each log line once: Lightning's records go to Hydra's handlers (console and the run's log
    file) instead of also to Lightning's own (added when it is imported), and its advertising
    tips are dropped. Entry points that train call this once Hydra has set up logging."""
    import lightning.pytorch  # noqa: F401 (adds the handler this removes)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropTips())
