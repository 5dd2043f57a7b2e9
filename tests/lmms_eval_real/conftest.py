"""The lmms-eval tier (`make test-lmms-eval`): the real lmms-eval CLI runs `--model visionthink`,
offline, on tasks over local files. Without lmms-eval these tests are skipped with that reason;
`make test-lmms-eval` sets VISIONTHINK_REQUIRE_LMMS_EVAL=1 so that a broken environment fails."""

from __future__ import annotations

from conftest import package_tier, skip_tier

HAS_LMMS_EVAL = package_tier("lmms_eval", "VISIONTHINK_REQUIRE_LMMS_EVAL", "make setup-lmms-eval")


def pytest_collection_modifyitems(config, items):
    if not HAS_LMMS_EVAL:
        skip_tier(items, "lmms_eval_real", "needs lmms-eval: `make test-lmms-eval` runs this tier in .venv-vllm")
