"""The data-selection and prompt-probe stages assembled from their Hydra configs
(``src/select_data.py``, ``src/probe_prompts.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionthink.data.readers import SampleDataset
from visionthink.episode.builder import EpisodeBuilder
from visionthink.errors import InputError
from visionthink.evaluation.report import write_atomic
from visionthink.paths import CONF_DIR
from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.engine import SamplingConfig
from visionthink.rollout.factory import check_backend, load_backend
from visionthink.selection.dual_resolution import balanced, plot_differences, score_shards, summary, write_dataset
from visionthink.selection.prompt_probe import bar_chart, markdown, probe
from visionthink.tracking import mlflow_run


def run_selection(cfg: DictConfig) -> tuple[dict, Path]:
    """Score every sample by dual-resolution rollouts, write the balanced selection and its report;
    returns the report and the output folder."""
    check_backend(cfg.rollout)
    torch.manual_seed(cfg.seed)
    config = instantiate(cfg.selection)
    resolution = instantiate(cfg.resolution)
    datamodule = instantiate(cfg.data, _partial_=True)(resolution=resolution)
    datamodule.prepare_data()
    source = datamodule.train_source if cfg.split == "train" else datamodule.val_source
    dataset = SampleDataset(source.path, source.columns, source.limit)
    rollout: RolloutConfig = instantiate(cfg.rollout)
    processor, backend = load_backend(instantiate(cfg.model), cfg.get("checkpoint"), rollout, resolution, cfg.seed)
    driver = EpisodeDriver(backend.engine, EpisodeBuilder(processor, instantiate(cfg.prompt), resolution), rollout)
    judge = instantiate(cfg.judge)
    output = Path(cfg.paths.outputs_dir) / "select" / cfg.run_name
    try:
        rows = score_shards(dataset, driver, judge, config, output / "shards", cfg.answer_extraction)
    finally:
        judge.close()
    chosen = balanced(rows, config.per_class, config.seed)
    write_dataset(dataset, chosen, output / "dataset")
    report = summary(rows, config.rollouts)
    report["selected"] = {"per_class": len(chosen) // 2, "total": len(chosen)}
    write_atomic(output / "labels.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    write_atomic(output / "summary.json", json.dumps(report, indent=2))
    plot_differences(report["difference_histogram"], config.margin, output / "count_difference.png")
    with mlflow_run(cfg.mlflow, run_name=cfg.run_name) as (client, run_id):
        for name, value in report["classes"].items():
            client.log_metric(run_id, f"select/{name}", value)
        client.log_metric(run_id, "select/skipped", report["skipped"])
        client.log_metric(run_id, "select/selected", len(chosen))
        for name in ("summary.json", "count_difference.png", "labels.jsonl"):
            client.log_artifact(run_id, str(output / name))
    return report, output


def run_probe(cfg: DictConfig) -> tuple[dict[str, dict[str, float]], Path]:
    """Roll out the base model under each prompt (paper C.3); returns the figures per prompt and
    the output folder."""
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
            raise InputError(f"no prompt config {prompt_file}", "Use one of the names in conf/prompt/")
        # The prompt's `${tool}` names the tools this run offers
        node = OmegaConf.create({"tool": cfg.tool, "prompt": OmegaConf.load(prompt_file)})
        builder = EpisodeBuilder(processor, instantiate(node.prompt), resolution)
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
    return results, output
