"""Select training data by dual-resolution rollouts of the base model (paper 3.5).

    python src/select_data.py data=visionthink data.train.path=/data/pool model=qwen2_5_vl_7b selection.rollouts=8
    python src/select_data.py selection.rollouts=4 selection.max_new_tokens=32      # tiny model, synthetic data
Outputs: outputs/select/<run_name>/{dataset/, labels.jsonl, summary.json, count_difference.png}
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="select_data")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    import json

    from visionthink.selection.runs import run_selection

    report, output = run_selection(cfg)
    print(json.dumps({k: report[k] for k in ("samples", "skipped", "classes", "selected")}, indent=2))
    print(f"selected dataset: {output / 'dataset'}")


if __name__ == "__main__":
    main()
