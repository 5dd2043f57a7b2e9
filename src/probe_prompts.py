"""Which prompt makes the base model call the resize tool? (paper C.3)

python src/probe_prompts.py                                          # agent, simple_resize, simple_think_resize
python src/probe_prompts.py -m prompt=agent,simple_resize run_name=p  # one job per prompt (multirun)
python src/probe_prompts.py model=qwen2_5_vl_7b resolution=paper data=visionthink data.val.path=...
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe_prompts")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    import json

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from visionthink.data.readers import SampleDataset
    from visionthink.episode.builder import EpisodeBuilder
    from visionthink.evaluation.report import write_atomic
    from visionthink.paths import CONF_DIR
    from visionthink.rollout.driver import EpisodeDriver
    from visionthink.rollout.engine import SamplingConfig
    from visionthink.rollout.factory import check_backend, load_backend
    from visionthink.selection.prompt_probe import bar_chart, markdown, probe
    from visionthink.tracking import mlflow_run

    check_backend(cfg.rollout)
    torch.manual_seed(cfg.seed)
    names = [cfg.prompt] if cfg.get("prompt") else list(cfg.prompts)
    resolution = instantiate(cfg.resolution)
    datamodule = instantiate(cfg.data, _partial_=True)(resolution=resolution)
    datamodule.prepare_data()
    source = datamodule.val_source or datamodule.train_source
    dataset = SampleDataset(source.path, source.columns, cfg.probe.samples, validate=resolution.check)
    samples = [dataset.load(i) for i in range(len(dataset))]
    rollout = instantiate(cfg.rollout)
    processor, backend = load_backend(instantiate(cfg.model), cfg.get("checkpoint"), rollout, resolution, cfg.seed)
    judge = instantiate(cfg.judge)
    sampling = SamplingConfig(max_new_tokens=cfg.probe.max_new_tokens)
    results = {}
    for name in names:
        prompt_file = CONF_DIR / "prompt" / f"{name}.yaml"
        if not prompt_file.exists():
            from visionthink.errors import InputError

            raise InputError(f"no prompt config {prompt_file}", "Use one of the names in conf/prompt/")
        builder = EpisodeBuilder(processor, instantiate(OmegaConf.load(prompt_file)), resolution)
        results[name] = probe(
            EpisodeDriver(backend.engine, builder, rollout), samples, judge, sampling, cfg.probe.rollouts, cfg.seed
        )
    judge.close()
    output = Path(cfg.paths.outputs_dir) / "probe" / cfg.run_name / ("_".join(names) if cfg.get("prompt") else "all")
    write_atomic(output / "results.json", json.dumps(results, indent=2))
    write_atomic(output / "table.md", markdown(results))
    bar_chart(results, output / "prompts.png")
    with mlflow_run(cfg.mlflow, run_name=f"{cfg.run_name}-{'_'.join(names)}") as (client, run_id):
        for name, figures in results.items():
            for key, value in figures.items():
                client.log_metric(run_id, f"{name}/{key}", value)
        for artifact in ("results.json", "table.md", "prompts.png"):
            client.log_artifact(run_id, str(output / artifact))
    print(markdown(results))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
