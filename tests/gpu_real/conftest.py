"""The GPU tier (`make test-gpu`): the sharded strategies Lightning runs on GPUs only. Skipped
without a CUDA GPU, with that reason; `make test-gpu` sets VISIONTHINK_GPU=1, and then a machine
without one fails instead of skipping."""

from __future__ import annotations

import os

import torch

from conftest import skip_tier

REQUESTED = os.environ.get("VISIONTHINK_GPU") == "1"


def pytest_collection_modifyitems(config, items):
    if not REQUESTED and not torch.cuda.is_available():
        skip_tier(items, "gpu_real", "needs a CUDA GPU: `make test-gpu` runs this tier on a GPU machine")
