"""Supervised cold start on teacher-forced VisionThink traces (paper Appendix C.2).

    python src/sft.py                               # tiny model, synthetic data
    python src/sft.py model=tiny_10m trainer.max_epochs=8
Then: python src/train.py model.name_or_path=outputs/sft/<run_name>/model
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error, one_console


@hydra.main(version_base="1.3", config_path="../conf", config_name="sft")
@exit_on_input_error
def main(cfg: DictConfig) -> float:
    from visionthink.training.sft import run_sft

    one_console()
    val_loss, output = run_sft(cfg)
    print(f"fine-tuned model: {output}")
    return val_loss


if __name__ == "__main__":
    main()
