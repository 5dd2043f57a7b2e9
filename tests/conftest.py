"""Shared fixtures: the tiny model, its processor, the synthetic data and a scripted policy."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VISIONTHINK_ROOT", str(ROOT))

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from visionthink.data import SampleDataset, SyntheticConfig, write_synthetic  # noqa: E402
from visionthink.episode import EpisodeBuilder, ResolutionPolicy  # noqa: E402
from visionthink.models import ModelConfig, load_policy, load_processor  # noqa: E402
from visionthink.rollout.engine import GenerationResult  # noqa: E402

CONF_DIR = ROOT / "conf"
SMALL_RESOLUTION = ResolutionPolicy(min_pixels=56 * 56, max_pixels=448 * 448, processor_min_pixels=56 * 56)


def load_prompt(name: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"prompt={name}"])
    return instantiate(cfg.prompt)


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


TOOL_TURN = '<think>\nThe label is too small.\n</think>\n<tool_call>\n{"name": "resize_image", "arguments": {"action": "resize"}}\n</tool_call>'


def answer_turn(answer: str) -> str:
    return f"<think>\nNow I can see it.\n</think>\n<answer>{answer}</answer>"


@pytest.fixture
def scripted(tokenizer):
    return lambda script: ScriptedEngine(tokenizer, script)
