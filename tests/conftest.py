"""Shared fixtures: the tiny model, its processor, the synthetic data and a scripted policy."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each worker, and every process its tests start, computes on one thread: two
# workers of two threads each would spin against each other on CI's 2 cores
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VISIONTHINK_ROOT", str(ROOT))

import pytest  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from visionthink.data import SampleDataset, SyntheticConfig, write_synthetic  # noqa: E402
from visionthink.episode import EpisodeBuilder, ResolutionPolicy  # noqa: E402
from visionthink.models import ModelConfig, TinyModelSpec, load_policy, load_processor  # noqa: E402
from visionthink.rollout.engine import GenerationResult  # noqa: E402
from visionthink.rollout.factory import RolloutBackend  # noqa: E402

CONF_DIR = ROOT / "conf"
# The earlier, smaller defaults of `src/train.py`, for tests that train: the randomly initialised
# tiny model (no base stage to build), 2 prompts x 4 rollouts, 8 steps, the default GRPO update.
SMOKE_RUN = [
    # Every step moves the weights (the miniature's warm-up starts at a rate of 0)
    "model=tiny", "prompt=agent", "grpo=default", "optim.scheduler.num_warmup_steps=0", "data.batch_size=2",
    "rollout.group_size=4", "trainer.max_steps=8",
    "trainer.val_check_interval=4", "rollout.sampling.max_new_tokens=64", "rollout.val_sampling.max_new_tokens=64",
]  # fmt: skip
SMALL_RESOLUTION = ResolutionPolicy(min_pixels=56 * 56, max_pixels=448 * 448, processor_min_pixels=56 * 56)


# The tiers that need another environment or machine (each has its make target and conftest)
TIER_FOLDERS = ("vllm_real", "lmms_eval_real", "slurm_real", "gpu_real")
# pyproject's `timeout` (120 s) holds the fast tier, so that a slow test cannot hide in it; end-to-end
# tests (marked slow) and the tiers' tests get this one
END_TO_END_TIMEOUT = 900


# The slow tier's longest tests (each a chain of real processes, minutes on 2 busy cores) run
# first: a worker that came to one of them last would end the tier minutes after the others
LONGEST_FIRST = (
    "tests/test_reproduce.py::test_fast_reproduction",
    "tests/test_reproduce.py::test_the_zoom_reproduction",
    "tests/test_lora.py::test_a_lora_run",
    "tests/test_distributed.py::test_two_process_ddp",
    "tests/test_train_e2e.py::test_resume_after_sigkill",
    "tests/test_long_runs.py::test_a_cut_short_checkpoint",
    "tests/test_families_e2e.py::",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        in_tier = any(f"tests/{folder}/" in str(item.fspath) for folder in TIER_FOLDERS)
        if (in_tier or item.get_closest_marker("slow")) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(END_TO_END_TIMEOUT))

    def rank(item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order


def skip_tier(items, folder: str, reason: str) -> None:
    """Skip the tests under ``tests/<folder>/`` (a tier that needs what this machine lacks)."""
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if f"tests/{folder}/" in str(item.fspath):
            item.add_marker(skip)


def package_tier(package: str, require_variable: str, setup: str) -> bool:
    """Whether a tier's package imports here. Its make target sets ``require_variable=1``, so that
    a broken environment fails there instead of skipping the tier."""
    import importlib.util

    found = importlib.util.find_spec(package) is not None
    if not found and os.environ.get(require_variable) == "1":
        raise RuntimeError(f"{require_variable}=1 but {package} does not import here: run `{setup}`")
    return found


def load_config_node(group: str, name: str):
    """Instantiate one shipped config, e.g. ``load_config_node("resolution", "synthetic")``."""
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))


def load_prompt(name: str, tool: str = "resize"):
    from visionthink.episode.prompts import load_prompt as load

    return load(name, tool)


@pytest.fixture(scope="session")
def tiny_path() -> str:
    return ModelConfig().resolve_path()


@pytest.fixture(scope="session")
def processor(tiny_path):
    return load_processor(tiny_path, SMALL_RESOLUTION.processor_size())


@pytest.fixture(scope="session")
def tokenizer(processor):
    return processor.tokenizer


@pytest.fixture(scope="session")
def model(tiny_path):
    return load_policy(ModelConfig(), tiny_path).eval()


@pytest.fixture(scope="session")
def qwen2_vl_path(tiny_path, tmp_path_factory) -> str:
    """A tiny random Qwen2-VL (``model_type`` qwen2_vl: no window attention in the vision tower)
    with the tiny model's tokenizer and processor: a second model type for the family dispatch."""
    import json

    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from visionthink.models.loading import save_policy_and_processor

    tiny = json.loads((Path(tiny_path) / "config.json").read_text())
    text = {key: tiny["text_config"][key] for key in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "rope_parameters", "bos_token_id", "eos_token_id",
        "pad_token_id",
    )}  # fmt: skip
    vision = dict(depth=2, embed_dim=64, num_heads=4, mlp_ratio=2, hidden_size=text["hidden_size"])
    tokens = {
        key: tiny[key] for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **tokens))
    folder = tmp_path_factory.mktemp("tiny-qwen2-vl")
    save_policy_and_processor(model, load_processor(tiny_path), folder)
    return str(folder)


def tiny_family_path(family: str) -> str:
    """The tiny random model of ``family`` that ``model=tiny_<family>`` builds (the sizes of
    conf/model/tiny.yaml, the family file's own settings), with its own processor."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"tiny_{family}.yaml").tiny)
    return ModelConfig(tiny=TinyModelSpec(**settings), tiny_name=f"tiny_{family}").resolve_path()


@pytest.fixture(scope="session")
def qwen3_vl_path() -> str:
    return tiny_family_path("qwen3_vl")


@pytest.fixture(scope="session")
def qwen3_5_path() -> str:
    return tiny_family_path("qwen3_5")


@dataclass(frozen=True)
class FamilyModel:
    """A tiny model of one family (its folder and the loaded model) with the processor and episode
    builder that feed it."""

    name: str
    path: str
    model: Any
    processor: Any
    builder: EpisodeBuilder


FAMILIES = ["qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_5"]


@pytest.fixture(scope="session")
def family_model(tiny_path, model, processor, builder, qwen2_vl_path, agent_prompt):
    """name -> the tiny model of that family, loaded once per session (every tiny model shares one
    tokenizer; Qwen2-VL's also Qwen2.5-VL's processor)."""

    @functools.cache
    def load(name: str) -> FamilyModel:
        if name == "qwen2_5_vl":
            return FamilyModel(name, tiny_path, model, processor, builder)
        if name == "qwen2_vl":
            return FamilyModel(
                name, qwen2_vl_path, load_policy(ModelConfig(), qwen2_vl_path).eval(), processor, builder
            )
        path = tiny_family_path(name)
        own = load_processor(path, SMALL_RESOLUTION.processor_size())
        policy = load_policy(ModelConfig(), path).eval()
        return FamilyModel(name, path, policy, own, EpisodeBuilder(own, agent_prompt, SMALL_RESOLUTION))

    return load


@pytest.fixture(scope="session", params=FAMILIES)
def family(request, family_model) -> FamilyModel:
    """The tiny model of each model type the families list, for tests of code that must not
    depend on which one it runs."""
    return family_model(request.param)


@pytest.fixture(scope="session")
def agent_prompt():
    return load_prompt("agent")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(root, SyntheticConfig(splits={"train": 24, "val": 8}))


@pytest.fixture(scope="session")
def samples(synthetic_root):
    dataset = SampleDataset(synthetic_root / "train")
    return [dataset.load(i) for i in range(len(dataset))]


@pytest.fixture(scope="session")
def builder(processor, agent_prompt):
    return EpisodeBuilder(processor, agent_prompt, SMALL_RESOLUTION)


@pytest.fixture(scope="session")
def zoom_builder(processor):
    """The agent prompt offering both tools (tool=resize_zoom)."""
    return EpisodeBuilder(processor, load_prompt("agent", "resize_zoom"), SMALL_RESOLUTION)


class ScriptedEngine:
    """A policy that answers from a script: ``script(request, call_index)`` returns the text of
    the turn; it is tokenised and closed with ``<|im_end|>`` as the model would."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, script
        self.calls: list[int] = []
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def generate(self, requests, sampling):
        self.calls.append(len(requests))
        results = []
        for request in requests:
            text = self.script(request)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            results.append(GenerationResult(token_ids=ids + [self.end_id], stopped=True))
        return results

    def end_episodes(self):
        pass


TOOL_TURN = '<think>\nThe label is too small.\n</think>\n<tool_call>\n{"name": "resize_image", "arguments": {"action": "resize"}}\n</tool_call>'


def answer_turn(answer: str) -> str:
    return f"<think>\nNow I can see it.\n</think>\n<answer>{answer}</answer>"


@pytest.fixture
def scripted(tokenizer):
    return lambda script: ScriptedEngine(tokenizer, script)


def changed_weights(trained: dict, initial: dict) -> tuple[int, int]:
    """(changed, total) weights of a trained policy against its initial state, embeddings left
    out: rows of tokens that occur in no sequence get no gradient."""
    learning = {k: v for k, v in initial.items() if not k.endswith("embed_tokens.weight")}
    changed = sum(int((trained[k] != v).sum()) for k, v in learning.items())
    return changed, sum(v.numel() for v in learning.values())


def compose_train(overrides: list[str], output_dir: Path | None = None, config_name: str = "train"):
    """The config as `python src/<config_name>.py <overrides>` would compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if config_name == "train":
        overrides = SMOKE_RUN + list(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir or "/tmp/visionthink-test-output")
        del cfg["hydra"]  # as in a real run, the task function does not see Hydra's own node
    return cfg


def train_in_process(tmp_path: Path, overrides: list[str], script=None) -> dict[str, float]:
    """Run training in this process; with `script`, a ScriptedEngine replaces the model's generation."""
    from visionthink.training.run import train

    base = [
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.outputs_dir={tmp_path / 'outputs'}",
        "data.synthetic.splits={train: 16, val: 4, test: 4}",
        "data.val.limit=4",
        "rollout.sampling.max_new_tokens=16",
        "rollout.val_sampling.max_new_tokens=16",
        f"logger.mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    cfg = compose_train(base + overrides, output_dir=tmp_path / "run")
    if script is None:
        return train(cfg)

    def scripted_backend(config, model, tokenizer, *_, **__):
        return RolloutBackend(ScriptedEngine(tokenizer, script), NoSync())

    return train(cfg, backend_factory=scripted_backend)


class NoSync:
    """The scripted engine has no weights to update."""

    version = 0

    def push(self, policy) -> None:
        self.version += 1


@pytest.fixture(scope="session")
def sft_checkpoint(tiny_path) -> Path:
    """The tiny model after a short supervised cold start: it answers in the prompt's format
    often enough for rewards (and so advantages) to vary. Trained once per content, like the tiny
    models: cached under outputs/test_cache/ by a hash of the tiny model and of the code that
    trains it, and built under a file lock, so that parallel workers and later runs share it."""
    import hashlib
    import inspect

    from filelock import FileLock

    from visionthink.data import synthetic
    from visionthink.episode import builder, prompts
    from visionthink.training import sft

    recipe = [Path(tiny_path).name, inspect.getsource(train_sft_checkpoint)]
    recipe += [inspect.getsource(module) for module in (sft, synthetic, builder, prompts)]
    digest = hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:12]
    folder = ROOT / "outputs" / "test_cache" / f"sft-{digest}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / "model" / "config.json").exists():
            train_sft_checkpoint(folder)
    return folder / "model"


def train_sft_checkpoint(folder: Path) -> None:
    """64 SFT steps of batch 8 on synthetic data; the model folder is written last (atomically)."""
    import functools
    import shutil
    import tempfile

    import lightning as L
    import torch

    from visionthink.data.datamodule import DataSource, VisionThinkDataModule
    from visionthink.training.sft import SFTModule

    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        data = write_synthetic(Path(scratch) / "data", SyntheticConfig(splits={"train": 512, "val": 8}))
        L.seed_everything(0)
        datamodule = VisionThinkDataModule(DataSource(str(data / "train")), batch_size=8, resolution=SMALL_RESOLUTION)
        module = SFTModule(
            ModelConfig(),
            load_prompt("agent"),
            SMALL_RESOLUTION,
            optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
        )
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            use_distributed_sampler=False, enable_model_summary=False, gradient_clip_val=1.0,
        )  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        module.export(str(Path(scratch) / "model"))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (Path(scratch) / "model").rename(folder / "model")


def run_entry_point(capsys, monkeypatch, script: str, *overrides: str) -> tuple[int, str, str]:
    """Run ``python src/<script> <overrides>`` in this process, as litgpt tests its scripts:
    (exit code, stdout, stderr). What this saves is the process start-up (seconds of imports);
    every entry point still runs as a real process in the slow tier."""
    import logging
    import runpy
    import sys

    path = str(ROOT / "src" / script)
    monkeypatch.setattr(sys, "argv", [path, *overrides])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    code = 0
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as stopped:
        code = stopped.code
    finally:  # Hydra's handlers write to this test's captured output and to the run's folder
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    output = capsys.readouterr()
    return code, output.out, output.err


def start_up_error(capsys, monkeypatch, script: str, *overrides: str) -> str:
    """The one line an entry point stops with on bad input (in this process): exit code 2 and an
    ``error:`` line on stderr, no traceback."""
    code, _, stderr = run_entry_point(capsys, monkeypatch, script, *overrides)
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]
