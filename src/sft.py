"""Supervised cold start on teacher-forced VisionThink traces (paper Appendix C.2).

    python src/sft.py                               # tiny model, synthetic data
    python src/sft.py model=tiny_10m trainer.max_epochs=8
Then: python src/train.py model.name_or_path=outputs/sft/<run_name>/model
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error, one_console


@hydra.main(version_base="1.3", config_path="../conf", config_name="sft")
@exit_on_input_error
def main(cfg: DictConfig) -> float:
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from visionthink.training.sft import SFTModule

    one_console()
    L.seed_everything(cfg.seed, workers=True)
    resolution = instantiate(cfg.resolution)
    datamodule = instantiate(cfg.data, _partial_=True)(resolution=resolution)
    module = SFTModule(
        model=instantiate(cfg.model),
        prompt=instantiate(cfg.prompt),
        resolution=resolution,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        vision_lr_scale=cfg.optim.vision_lr_scale,
        tool_fraction=cfg.sft.tool_fraction,
        seed=cfg.seed,
        plain_prompt=instantiate(cfg.plain_prompt) if cfg.sft.plain_fraction > 0 else None,
        plain_fraction=cfg.sft.plain_fraction,
    )
    loggers = [instantiate(logger) for logger in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(module, datamodule=datamodule)
    output = Path(cfg.paths.outputs_dir) / "sft" / cfg.run_name / "model"
    module.export(str(output))
    print(f"fine-tuned model: {output}")
    return float(trainer.callback_metrics.get("sft/val_loss", float("nan")))


if __name__ == "__main__":
    main()
