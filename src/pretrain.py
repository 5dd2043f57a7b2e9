"""The base stage: teach a tiny VLM to perceive before VisionThink training.

    python src/pretrain.py                                 # the tiny model on the synthetic set
    python src/pretrain.py model=tiny_10m trainer.max_steps=600
Then: python src/train.py model.name_or_path=outputs/pretrain/<run_name>/model
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error, one_console


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
@exit_on_input_error
def main(cfg: DictConfig) -> float:
    from visionthink.training.pretrain import run_pretraining

    one_console()
    report = run_pretraining(cfg)
    return min(report["full"].values())


if __name__ == "__main__":
    main()
