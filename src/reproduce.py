"""VisionThink in miniature, end to end on CPU: the base stage -> GRPO (paper penalty, no
penalty, flat penalty) -> evaluation in adaptive/full/low modes -> a short theta sweep ->
docs/reproduction.md.

    make reproduce                     # ~1 hour on 2 cores (3 initialisations x 2 seeds); resumes if interrupted
    python src/reproduce.py name=quick seeds=[0] grpo.steps=5 theta_sweep.steps=5 report=/tmp/quick.md
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="reproduce")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    from hydra.utils import get_method

    from visionthink.reproduce.stages import fingerprints, load_recipe, plan, run_stages, write_data

    recipe = load_recipe(cfg)
    write_data(cfg, recipe)
    planned = plan(cfg, recipe)
    stages = run_stages(planned, Path(cfg.paths.outputs_dir) / "reproduce" / cfg.name / "stages", fingerprints(planned))
    print(f"report: {get_method(cfg.render)(cfg, recipe, stages)}")


if __name__ == "__main__":
    main()
