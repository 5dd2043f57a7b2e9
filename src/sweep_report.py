"""Report an Optuna study: every trial, the Pareto front of accuracy against visual tokens.

python src/sweep_report.py study=theta
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep_report")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    import optuna

    from visionthink.errors import InputError
    from visionthink.sweep.report import markdown, summarise, write_report
    from visionthink.sweep.tracking import sweep_parent_run

    try:
        study = optuna.load_study(study_name=cfg.study, storage=cfg.storage)
    except KeyError:
        names = optuna.get_all_study_names(cfg.storage)
        raise InputError(
            f"no study {cfg.study!r} in {cfg.storage}", f"Known studies: {', '.join(names) or 'none'}"
        ) from None
    parent = sweep_parent_run(cfg, study.study_name)
    directory = write_report(study, list(cfg.objective_names), cfg.paths.outputs_dir, cfg.logger.mlflow, parent)
    print(markdown(summarise(study, list(cfg.objective_names))))
    print(f"report: {directory}")


if __name__ == "__main__":
    main()
