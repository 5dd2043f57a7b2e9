"""The base stage: a tiny VLM that perceives, as real VLMs do before VisionThink training.

Teacher-forced traces (``SFTModule``) of two kinds: perception traces in the tool-less prompt,
each at full or at 1/4 resolution (so the model knows low-resolution images too), and format
traces in the agent prompt that call the resize tool at random, independently of the question,
as an instruction-tuned VLM can call a tool it is shown without knowing when it pays. The
decision is left to GRPO.

The report says what the base can see: accuracy per question kind with the tool-less prompt at
full and at 1/4 resolution, and the agent prompt's resize ratio per kind (which should not
depend on the kind yet).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import fmean
from typing import Any

from visionthink.data.sample import Sample
from visionthink.episode.builder import EpisodeBuilder
from visionthink.metrics.rollouts import tool_metrics
from visionthink.reward.scoring import judge_trajectories
from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.engine import SamplingConfig
from visionthink.rollout.hf_engine import TransformersRolloutEngine
from visionthink.rollout.trajectory import Trajectory


def report_group(sample: Sample) -> str:
    """A sample's row in the report: its question kind, and whether it needs the full resolution
    when the data says (the same question can need it or not)."""
    if sample.use_tool is None:
        return sample.kind
    return f"{sample.kind}/{'needs_high_res' if sample.use_tool else 'low_res_enough'}"


def perception_report(
    policy: Any,
    processor: Any,
    perception_prompt: Any,
    agent_prompt: Any,
    resolution: Any,
    samples: list[Sample],
    judge: Any,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    sampled_rollouts: int = 4,
) -> dict[str, dict[str, float]]:
    """``{"full": {group: accuracy}, "low": {...}, "resize_ratio": {group: ratio}, "resized": {group:
    accuracy}, "direct": {...}}`` per question kind and need (``report_group``): accuracy with
    greedy decoding; the agent prompt sampled at temperature 1 (the paper's rollouts; the
    miniature's sample at 0.7), ``sampled_rollouts`` per question as GRPO will start from it: how
    often it asks, and how often it is right when it asked and when it answered directly (the
    reward gap GRPO has to learn from; a kind without such rollouts is left out), how often a call
    broke (``broken_calls``; those rollouts count in neither branch), each tool's share
    (``tool_calls/<source>``) and, where zooms were made, the share that held the label
    (``zoom_on_target``)."""
    engine = TransformersRolloutEngine(policy.eval(), processor.tokenizer, reuse_kv_cache=True)
    greedy = SamplingConfig(greedy=True, max_new_tokens=max_new_tokens)
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens)
    report: dict[str, dict[str, float]] = {}
    sampled_by_kind: dict[str, list[Trajectory]] = defaultdict(list)
    passes = (("full", perception_prompt, "full"), ("low", perception_prompt, "low"),
              ("resize_ratio", agent_prompt, "adaptive"))  # fmt: skip
    for name, prompt, mode in passes:
        group = sampled_rollouts if name == "resize_ratio" else 1
        driver = EpisodeDriver(engine, EpisodeBuilder(processor, prompt, resolution), RolloutConfig(group_size=group))
        by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            episodes = [driver.builder.build(s, mode) for s in chunk]
            trajectories = driver.run(episodes, sampled if name == "resize_ratio" else greedy, seed=start)
            verdicts = judge_trajectories(trajectories, judge, "lenient")
            for trajectory, verdict in zip(trajectories, verdicts, strict=True):
                kind, correct = report_group(trajectory.episode.sample), float(bool(verdict.correct))
                if name == "resize_ratio":
                    by_kind[name][kind].append(float(trajectory.used_high_res))
                    if trajectory.used_high_res or not trajectory.broken_tool_calls:
                        by_kind["resized" if trajectory.used_high_res else "direct"][kind].append(correct)
                    by_kind["broken_calls"][kind].append(float(trajectory.broken_tool_calls > 0))
                    sampled_by_kind[kind].append(trajectory)
                else:
                    by_kind[name][kind].append(correct)
        for key, values_by_kind in by_kind.items():
            report[key] = {kind: fmean(values) for kind, values in sorted(values_by_kind.items())}
    # Which tool the sampled rollouts called, and whether their zooms held the label
    sources = [tool.source for tool in EpisodeBuilder(processor, agent_prompt, resolution).tools.values()]
    for kind, trajectories in sorted(sampled_by_kind.items()):
        for key, value in tool_metrics(trajectories, sources).items():
            if not key.startswith("visual_tokens/"):
                report.setdefault(key, {})[kind] = value
    policy.train()
    return report


def plot_report(report: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted(report["full"])
    figure, axis = plt.subplots(figsize=(2.2 * len(kinds) + 2, 3.4))
    width = 0.38
    for offset, mode in ((-width / 2, "full"), (width / 2, "low")):
        axis.bar(
            [i + offset for i in range(len(kinds))], [report[mode][k] for k in kinds], width, label=f"{mode} resolution"
        )
    axis.set_xticks(range(len(kinds)), [kind.replace("/", "\n") for kind in kinds], fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("accuracy (tool-less prompt)")
    axis.set_title("What the base model reads")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(report: dict[str, dict[str, float]], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "perception.json").write_text(json.dumps(report, indent=2))
    plot_report(report, directory / "perception.png")


def run_pretraining(cfg: Any) -> dict[str, dict[str, float]]:
    """Fit the base, export it to ``outputs/pretrain/<run_name>/model``, report and log what it reads."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from visionthink.data.readers import SampleDataset
    from visionthink.tracking import mark_model_training
    from visionthink.training.sft import SFTModule

    L.seed_everything(cfg.seed, workers=True)
    resolution = instantiate(cfg.resolution)
    datamodule = instantiate(cfg.data, _partial_=True)(resolution=resolution)
    perception_prompt, agent_prompt = instantiate(cfg.perception_prompt), instantiate(cfg.prompt)
    module = SFTModule(
        model=instantiate(cfg.model),
        prompt=agent_prompt,
        resolution=resolution,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        vision_lr_scale=cfg.optim.vision_lr_scale,
        tool_fraction=cfg.pretrain.tool_fraction,
        zoom_fraction=cfg.pretrain.zoom_fraction,
        grounding_fraction=cfg.pretrain.grounding_fraction,
        plain_prompt=perception_prompt,
        plain_fraction=cfg.pretrain.perception_fraction,
        train_guesses=cfg.pretrain.train_guesses,
        restate_words=cfg.pretrain.restate_words,
        describe_view=cfg.pretrain.describe_view,
        answer_weight=cfg.pretrain.answer_weight,
        seed=cfg.seed,
    )
    loggers = [instantiate(logger) for logger in (cfg.get("logger") or {}).values()]
    trainer = instantiate(cfg.trainer, logger=loggers or False)
    for logger in loggers:
        mark_model_training(logger.experiment, logger.experiment_id)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(module, datamodule=datamodule)
    directory = Path(cfg.paths.outputs_dir) / "pretrain" / cfg.run_name
    module.export(str(directory / "model"))
    test = SampleDataset(Path(datamodule.train_source.path).parent / "test", limit=cfg.pretrain.report_samples)
    samples = [test.load(i) for i in range(len(test))]
    report = perception_report(
        module.policy, module.processor, perception_prompt, agent_prompt, resolution, samples,
        instantiate(cfg.judge), cfg.pretrain.max_new_tokens,
    )  # fmt: skip
    write_report(report, directory)
    for logger in loggers:
        for name, figures in report.items():
            logger.log_metrics({f"pretrain/{name}/{kind}": value for kind, value in figures.items()})
        for artifact in ("perception.json", "perception.png"):
            logger.experiment.log_artifact(logger.run_id, str(directory / artifact))
    print(json.dumps(report, indent=2))
    print(f"base model: {directory / 'model'}")
    return report
