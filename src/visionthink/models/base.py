"""The tiny base model: the tiny Qwen2.5-VL after the base stage (``src/pretrain.py``), so that a
first run starts from a model that reads its images. Built once, under a file lock, into
``<cache_dir>/pretrain/<tiny_name>-base-<hash>/`` (``model.cache_dir``, outputs/ by default; the
hash covers the tiny model, the overrides and ``conf/pretrain.yaml``), with its MLflow run in
the ``visionthink-pretrain`` experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from visionthink.paths import CONF_DIR, OUTPUTS_DIR, PROJECT_ROOT


def base_run_name(tiny_folder: Path, overrides: Sequence[str]) -> str:
    payload = json.dumps(
        {"tiny": tiny_folder.name, "overrides": list(overrides), "config": (CONF_DIR / "pretrain.yaml").read_text()},
        sort_keys=True,
    )
    name = tiny_folder.name.rsplit("-", 1)[0]
    return f"{name}-base-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def ensure_tiny_base(tiny_folder: Path, overrides: Sequence[str] = (), cache_dir: Path = OUTPUTS_DIR) -> Path:
    """The base model folder for ``tiny_folder``, running the base stage on first use (a few
    minutes) with ``cache_dir`` as its outputs folder."""
    run_name = base_run_name(tiny_folder, overrides)
    run_dir = cache_dir / "pretrain" / run_name
    done = run_dir / "perception.json"  # written after the model folder
    if done.exists():
        return run_dir / "model"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir) + ".lock"):
        if done.exists():
            return run_dir / "model"
        print(f"Building the tiny base model once (src/pretrain.py, a few minutes): {run_dir}", flush=True)
        command = [
            sys.executable, str(PROJECT_ROOT / "src" / "pretrain.py"), f"run_name={run_name}",
            f"model.name_or_path={tiny_folder}", f"paths.outputs_dir={cache_dir}", *overrides,
        ]  # fmt: skip
        result = subprocess.run(command, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if result.returncode != 0 or not done.exists():
            raise RuntimeError(
                f"building the tiny base model failed (exit {result.returncode}); rerun: {' '.join(command)}"
            )
    return run_dir / "model"
