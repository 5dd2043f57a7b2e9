"""The SLURM tier (`make test-slurm`): a real SLURM on localhost schedules the sweep's trials (one
node) and a DDP run over two nodes. Skipped elsewhere with that reason; `make test-slurm` sets
VISIONTHINK_SLURM=1, and then a machine that cannot run the cluster fails instead of skipping."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import skip_tier
from slurm_real.cluster import LocalSlurm, missing_requirements

REQUESTED = os.environ.get("VISIONTHINK_SLURM") == "1"


def pytest_collection_modifyitems(config, items):
    if not REQUESTED:
        skip_tier(items, "slurm_real", "`make test-slurm` runs this tier (root, Debian's slurm-wlm and munge)")


def local_slurm(nodes: int):
    reason = missing_requirements()
    if reason:
        raise RuntimeError(f"VISIONTHINK_SLURM=1 but {reason}")
    # Not under pytest's own temporary folder: that one is private to root, and munged runs as munge.
    folder = Path(tempfile.mkdtemp(prefix="visionthink-slurm-"))
    folder.chmod(0o755)
    slurm = LocalSlurm(folder, nodes=nodes).start()
    yield slurm
    slurm.stop()
    shutil.rmtree(folder, ignore_errors=True)


# One cluster at a time (they share the ports): each lives for the module that uses it
@pytest.fixture(scope="module")
def cluster():
    yield from local_slurm(nodes=1)


@pytest.fixture(scope="module")
def two_nodes():
    yield from local_slurm(nodes=2)
