"""Locations shared by every entry point."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The configs find the project through it (${oc.env:VISIONTHINK_ROOT}: paths, sweeps, the SLURM
# launcher's set-up lines); every entry point imports this module through visionthink.cli
os.environ.setdefault("VISIONTHINK_ROOT", str(PROJECT_ROOT))
CONF_DIR = PROJECT_ROOT / "conf"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
DATA_DIR = PROJECT_ROOT / "data"
