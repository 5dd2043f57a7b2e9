"""Evaluate a model or training checkpoint: adaptive (VisionThink) vs full vs low resolution.

    python src/evaluate.py benchmark=synthetic
    python src/evaluate.py 'benchmark=[chartqa,docvqa,pope]' model=qwen2_5_vl_7b resolution=paper \\
        model.name_or_path=/models/VisionThink-7B paths.data_dir=/data
    python src/evaluate.py checkpoint=outputs/runs/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    from visionthink.evaluation.report import markdown_table
    from visionthink.evaluation.runner import evaluate
    from visionthink.tracking import log_evaluation

    results = evaluate(cfg)
    print(markdown_table(results))
    output = Path(cfg.paths.outputs_dir) / "eval" / cfg.run_name
    log_evaluation(cfg, results, output)
    print(f"results: {output / 'results.json'}")


if __name__ == "__main__":
    main()
