"""Select training data by dual-resolution rollouts of the base model (paper 3.5).

    python src/select_data.py data=visionthink data.train.path=/data/pool model=qwen2_5_vl_7b selection.rollouts=8
    python src/select_data.py selection.rollouts=4 selection.max_new_tokens=32      # tiny model, synthetic data
Outputs: outputs/select/<run_name>/{dataset/, labels.jsonl, summary.json, count_difference.png}
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="select_data")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    import json

    import torch
    from hydra.utils import instantiate

    from visionthink.data.readers import SampleDataset
    from visionthink.episode.builder import EpisodeBuilder
    from visionthink.evaluation.report import write_atomic
    from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
    from visionthink.rollout.factory import check_backend, load_backend
    from visionthink.selection.dual_resolution import balanced, plot_differences, score_shards, summary, write_dataset
    from visionthink.tracking import mlflow_run

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
    print(json.dumps({k: report[k] for k in ("samples", "skipped", "classes", "selected")}, indent=2))
    print(f"selected dataset: {output / 'dataset'}")


if __name__ == "__main__":
    main()
