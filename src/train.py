"""Train a VisionThink policy with multi-turn GRPO.

python src/train.py                                   # short CPU run, tiny model, synthetic data
python src/train.py reward.penalty_theta=0.3           # any config key
python src/train.py run_name=my_run ckpt_path=last     # resume a run after a crash or kill
python src/train.py -m hparams_search=theta            # an Optuna sweep over theta
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import end_stopped_run, exit_on_input_error, one_console


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_input_error
def main(cfg: DictConfig) -> float | tuple[float, ...] | None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from visionthink.config_checks import (
        check_lora_strategy,
        check_master_weights,
        check_ranges,
        check_sharded_rollouts,
    )
    from visionthink.training.checkpointing import RunStopped
    from visionthink.training.run import train

    check_ranges(cfg)
    check_master_weights(cfg)
    check_lora_strategy(cfg)
    check_sharded_rollouts(cfg)
    one_console()
    try:
        metrics = train(cfg)
    except (RunStopped, SIGTERMException) as stop:
        end_stopped_run(stop, Path(cfg.paths.output_dir).name)
    wanted = list(cfg.get("optimized_metrics") or [])
    missing = [name for name in wanted if name not in metrics]
    if missing:
        raise KeyError(f"optimized_metrics {missing} were not logged; available: {sorted(metrics)}")
    values = tuple(metrics[name] for name in wanted)
    return values[0] if len(values) == 1 else (values or None)


if __name__ == "__main__":
    main()
