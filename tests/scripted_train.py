"""`python src/train.py`, with rollouts from a script instead of the model's sampling.

For multi-process runs (Lightning starts the other ranks by running this file again) whose
rollouts must not go through the policy: the sharded strategies' tests, where what is tested is
the update, the checkpoints and the export. A rollout asks for the high-resolution image when its
seed is odd and otherwise answers a colour picked by its seed, so groups get rewards that differ.

    python tests/scripted_train.py <train.py overrides>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VISIONTHINK_ROOT", str(ROOT))
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from conftest import TOOL_TURN, NoSync, ScriptedEngine, answer_turn  # noqa: E402
from visionthink.rollout.factory import RolloutBackend  # noqa: E402


def script(request) -> str:
    if len(request.images) == 1 and request.seed % 2:
        return TOOL_TURN
    return answer_turn(("red", "green", "blue")[request.seed % 3])


def scripted_backend(config, model, tokenizer, *_, **__) -> RolloutBackend:
    return RolloutBackend(ScriptedEngine(tokenizer, script), NoSync())


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from visionthink.training.run import train

    train(cfg, backend_factory=scripted_backend)


if __name__ == "__main__":
    main()
