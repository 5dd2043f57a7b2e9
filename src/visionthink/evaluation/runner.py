"""Evaluate a policy on benchmarks in adaptive, full and low resolution modes.

Inputs are checked before anything is written (benchmark files and columns, non-empty sets,
the checkpoint). Each finished (benchmark, mode) pass is saved atomically, so a rerun with the
same run name skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from visionthink.data.readers import ColumnMapping, SampleDataset
from visionthink.episode.builder import EpisodeBuilder
from visionthink.errors import InputError
from visionthink.evaluation.report import write_atomic, write_results
from visionthink.evaluation.scoring import METRICS, Record, accounting, benchmark_scores, label_scores
from visionthink.reward.scoring import judge_trajectories, prediction
from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.engine import SamplingConfig
from visionthink.rollout.factory import check_backend, load_backend

log = logging.getLogger(__name__)


@dataclass
class Benchmark:
    name: str
    dataset: SampleDataset
    metric: str


def open_benchmarks(cfg: DictConfig, resolution: Any) -> list[Benchmark]:
    benchmarks = []
    for name, spec in cfg.benchmark.items():
        if spec.metric not in METRICS:
            raise InputError(f"benchmark {name}: unknown metric {spec.metric!r}", f"Use one of {', '.join(METRICS)}")
        columns = instantiate(spec.columns) if spec.get("columns") else ColumnMapping()
        dataset = SampleDataset(spec.path, columns, spec.get("limit"), validate=resolution.check)
        if len(dataset) == 0:
            raise InputError(
                f"benchmark {name} at {spec.path} has no samples", "Check the path and benchmark.<name>.limit"
            )
        benchmarks.append(Benchmark(name, dataset, spec.metric))
    if not benchmarks:
        raise InputError("no benchmark selected", "Pass benchmark=<name> or benchmark=[a,b]")
    return benchmarks


def evaluate_mode(
    driver: EpisodeDriver, benchmark: Benchmark, mode: str, judge, settings: DictConfig
) -> tuple[dict[str, float], list[dict]]:
    records: list[Record] = []
    sampling = SamplingConfig(greedy=True, max_new_tokens=settings.max_new_tokens)
    started = time.perf_counter()
    batches = range(0, len(benchmark.dataset), settings.batch_size)
    for start in tqdm(batches, desc=f"{benchmark.name}/{mode}", unit="batch"):
        indices = range(start, min(start + settings.batch_size, len(benchmark.dataset)))
        episodes = [driver.builder.build(benchmark.dataset.load(i), mode) for i in indices]
        trajectories = driver.run(episodes, sampling, group_size=1)
        verdicts = judge_trajectories(trajectories, judge, settings.answer_extraction)
        records += [
            Record(t, prediction(t, settings.answer_extraction), v) for t, v in zip(trajectories, verdicts, strict=True)
        ]
    seconds = time.perf_counter() - started
    figures = {**benchmark_scores(benchmark.metric, records), **label_scores(benchmark.metric, records)}
    return {**figures, **accounting(records, seconds)}, examples(records)


def examples(records: list[Record], count: int = 6) -> list[dict]:
    """A few trajectories to read: the first ones that used high resolution and the first that did not."""
    chosen = [r for r in records if r.trajectory.used_high_res][: count // 2]
    chosen += [r for r in records if not r.trajectory.used_high_res][: count - len(chosen)]
    return [
        {
            "sample": r.sample.sample_id,
            "question": r.sample.question.replace("<image>", "").strip(),
            "answer": r.sample.answer,
            "needs_high_res": r.sample.use_tool,
            "turns": r.trajectory.turn_texts,
            "used_high_res": r.trajectory.used_high_res,
            "visual_tokens": r.trajectory.visual_tokens,
            "correct": r.verdict.correct,
        }
        for r in chosen
    ]


def result_key(cfg: DictConfig, benchmark: str, mode: str) -> str:
    """A digest of everything that decides a (benchmark, mode) result: the model (and the
    checkpoint file's size and time), the benchmark, the mode's prompt, the decoding budgets, the
    judge, the resolution and the rollout engine."""
    checkpoint = cfg.get("checkpoint")
    stamp = None
    if checkpoint is not None and Path(checkpoint).is_file():
        stat = Path(checkpoint).stat()
        stamp = [str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns]

    def plain(node: Any) -> Any:  # resolved where it sits, so interpolations find the whole config
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    settings = {
        "model": plain(cfg.model), "checkpoint": stamp, "benchmark": plain(cfg.benchmark[benchmark]), "mode": mode,
        "prompt": plain(cfg.prompts[mode]), "judge": plain(cfg.judge), "resolution": plain(cfg.resolution),
        "eval": {k: plain(v) for k, v in cfg.eval.items() if k not in ("modes", "batch_size")},
        "rollout": plain(cfg.get("rollout")),
    }  # fmt: skip
    payload = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def finished(done: Path, key: str, name: str) -> dict[str, float] | None:
    """The figures of an earlier pass with the same settings; None when there is none or it used others."""
    if not done.exists():
        return None
    saved = json.loads(done.read_text())
    if saved.get("key") == key:
        log.info("%s already evaluated with these settings in %s", name, done)
        return saved["figures"]
    log.warning("%s was evaluated under this run name with other settings (model, checkpoint, benchmark, "
                "prompt or decoding); evaluating afresh", name)  # fmt: skip
    return None


def evaluate(cfg: DictConfig) -> dict[str, dict[str, dict[str, float]]]:
    torch.manual_seed(cfg.seed)
    resolution = instantiate(cfg.resolution)
    benchmarks = open_benchmarks(cfg, resolution)
    unknown = [m for m in cfg.eval.modes if m not in cfg.prompts]
    if unknown:
        raise InputError(f"modes {unknown} have no prompt", "Use adaptive, full and low, or add prompts.<mode>")
    check_backend(cfg.rollout)
    base_rollout: RolloutConfig = instantiate(cfg.rollout)
    rollout = replace(base_rollout, group_size=1, max_images=cfg.eval.max_images, max_turns=cfg.eval.max_turns)
    judge = instantiate(cfg.judge)
    judge.probe()
    processor, backend = load_backend(instantiate(cfg.model), cfg.get("checkpoint"), rollout, resolution, cfg.seed)
    output = Path(cfg.paths.outputs_dir) / "eval" / cfg.run_name
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for benchmark in benchmarks:
            for mode in cfg.eval.modes:
                done = output / "partial" / f"{benchmark.name}__{mode}.json"
                key = result_key(cfg, benchmark.name, mode)
                figures = finished(done, key, f"{benchmark.name}/{mode}")
                if figures is None:
                    prompt = instantiate(cfg.prompts[mode])
                    driver = EpisodeDriver(backend.engine, EpisodeBuilder(processor, prompt, resolution), rollout)
                    figures, shown = evaluate_mode(driver, benchmark, mode, judge, cfg.eval)
                    write_atomic(output / "samples" / f"{benchmark.name}__{mode}.json", json.dumps(shown, indent=2))
                    write_atomic(done, json.dumps({"key": key, "figures": figures}, indent=2))
                results.setdefault(benchmark.name, {})[mode] = figures
    finally:
        judge.close()
    for modes in results.values():
        full = modes.get("full")
        for figures in modes.values():
            figures["score_vs_full"] = figures["score"] / full["score"] if full and full["score"] else float("nan")
    write_results(results, output)
    return results
