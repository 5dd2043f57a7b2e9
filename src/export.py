"""A training checkpoint as a Hugging Face folder (weights, config, processor, chat template).

    python src/export.py checkpoint=outputs/runs/my_run/checkpoints/last.ckpt
    python src/export.py checkpoint=outputs/runs/my_run/checkpoints/last.ckpt output=/models/visionthink-tiny
Training runs export their final policy themselves (outputs/runs/<run_name>/model, `export=true`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    from visionthink.models.loading import load_trained_policy, save_policy_and_processor

    run_dir = Path(cfg.checkpoint).resolve().parent.parent
    run_config = run_dir / "config.yaml"
    if run_config.exists():  # the model and resolution the run trained
        trained = OmegaConf.load(run_config)
        with open_dict(cfg):
            cfg.model, cfg.resolution = trained.model, trained.resolution
    # A LoRA run's adapters stay separate: the folder holds the merged weights and adapter/ them alone
    _, policy, processor = load_trained_policy(
        instantiate(cfg.model), cfg.get("checkpoint"), instantiate(cfg.resolution).processor_size(), False
    )
    output = Path(cfg.output) if cfg.output else run_dir / "model"
    save_policy_and_processor(policy, processor, output)
    print(f"exported: {output}")


if __name__ == "__main__":
    main()
