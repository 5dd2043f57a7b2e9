"""``lmms-eval --model visionthink``: a VisionThink policy answering lmms-eval's requests with the
episode driver training and ``src/evaluate.py`` use (first turn at 1/4 resolution, the resize
call answered with the original image).

It is configured as ``src/evaluate.py`` is: the model args become overrides of conf/eval.yaml,
so the same checkpoint, prompt, resolution and decoding give the same episodes. The answer inside
``<answer>`` is what the task scores. Per sample, the visual tokens (first view, high-resolution
view, total) and whether it asked reach lmms-eval's logged samples (``token_counts``); the run's
means reach the results file (``throughput``: ``avg_visual_tokens``, ``avg_resize_ratio``, ...)
and, when ``MLFLOW_TRACKING_URI`` is set, an MLflow run beside the tasks' metrics.
"""

from __future__ import annotations

import atexit
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger as lmms_eval_logger
from tqdm import tqdm

from visionthink.data.images import to_rgb
from visionthink.data.sample import Sample
from visionthink.episode.builder import EpisodeBuilder
from visionthink.errors import InputError
from visionthink.evaluation.lmms_eval_plugin import MODEL_NAME
from visionthink.evaluation.lmms_eval_plugin.tracking import RunFigures, VisualTokenCounts, log_to_mlflow_at_exit
from visionthink.paths import CONF_DIR
from visionthink.reward.scoring import prediction
from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.engine import SamplingConfig
from visionthink.rollout.factory import check_backend, load_backend

log = logging.getLogger(__name__)

MODES = ("adaptive", "full", "low")
ENGINES = {"transformers": "hf", "vllm": "vllm"}
# Processor files a save_pretrained folder must hold: the image processor's (transformers 5 writes it
# into processor_config.json, 4.x into preprocessor_config.json) and the tokenizer's
PROCESSOR_FILES = (("processor_config.json", "preprocessor_config.json"), ("tokenizer_config.json",))


@dataclass(frozen=True)
class ModelArgs:
    """``--model_args``; see :class:`VisionThink`."""

    pretrained: str | None = None
    model: str = "qwen2_5_vl_7b"
    checkpoint: str | None = None
    mode: str = "adaptive"
    prompt: str | None = None
    tool: str = "resize"
    engine: str = "transformers"
    resolution: str = "paper"
    temperature: float = 0.0
    max_new_tokens: int | None = None
    overrides: str = ""
    batch_size: int = 16
    seed: int = 0

    @classmethod
    def parse(cls, given: dict[str, Any]) -> ModelArgs:
        # lmms-eval passes device and max_batch_size to every model; anything else is a misspelt argument
        given = {k: v for k, v in given.items() if k not in ("device", "max_batch_size")}
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown model args {unknown}", f"Use {', '.join(f.name for f in fields(cls))}")
        if str(given.get("batch_size", 1)) == "auto" or int(given.get("batch_size", 1)) < 1:
            raise InputError(f"batch_size={given['batch_size']} is not a positive number", "Pass --batch_size N")
        return cls(**given)

    def eval_overrides(self) -> list[str]:
        """The conf/eval.yaml overrides these args stand for (bad values: one line naming them)."""
        if self.mode not in MODES:
            raise InputError(f"model arg mode={self.mode!r} is unknown", f"Use mode={'|'.join(MODES)}")
        if self.engine not in ENGINES:
            raise InputError(f"model arg engine={self.engine!r} is unknown", f"Use engine={'|'.join(ENGINES)}")
        if self.pretrained is not None:
            check_pretrained(str(self.pretrained))
        overrides = [
            f"model={self.model}",
            f"rollout={ENGINES[self.engine]}",
            f"resolution={self.resolution}",
            f"tool={self.tool}",
            f"eval.modes=[{self.mode}]",
            f"eval.batch_size={int(self.batch_size)}",
        ]
        if self.pretrained is not None:
            overrides.append(f"model.name_or_path={self.pretrained}")
        if self.checkpoint is not None:
            overrides.append(f"checkpoint={self.checkpoint}")
        if self.prompt is not None:
            overrides.append(f"prompt@prompts.{self.mode}={self.prompt}")
        if self.max_new_tokens is not None:
            overrides.append(f"eval.max_new_tokens={self.max_new_tokens}")
        return overrides + shlex.split(self.overrides)


def check_pretrained(pretrained: str) -> None:
    """A local folder must hold the processor's files; anything else must look like a hub id."""
    folder = Path(pretrained)
    if folder.is_dir():
        missing = [names for names in PROCESSOR_FILES if not any((folder / name).is_file() for name in names)]
        if missing:
            raise InputError(
                f"model arg pretrained={pretrained} has no {' and no '.join(' or '.join(names) for names in missing)}",
                "Point it at a save_pretrained folder with the processor's files (python src/export.py writes one), "
                "or copy them from the base model's folder",
            )
    elif pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1:  # a hub id is <org>/<name>
        raise InputError(
            f"model arg pretrained={pretrained} is not a folder", "Pass a save_pretrained folder or a hub id"
        )


def compose_eval_config(overrides: list[str]) -> Any:
    """conf/eval.yaml with ``overrides``; an unknown config name is reported as bad input."""
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("eval", overrides=overrides)
    except HydraException as error:
        first_line = str(error).strip().splitlines()[0]
        raise InputError(f"model args: {first_line}", "Check the names against conf/ (docs/evaluation.md)") from None


class VisionThink(lmms):
    """Model args (``--model_args key=value,...``):

    pretrained      a save_pretrained folder (ours: python src/export.py) or a hub id
    model           the conf/model config it belongs to (qwen2_5_vl_7b, tiny, ...)
    checkpoint      a training .ckpt whose policy weights replace pretrained's
    mode            adaptive (VisionThink) | full | low
    prompt          a conf/prompt name (default: conf/eval.yaml's prompt of the mode)
    tool            the tools the adaptive prompt offers: resize (the paper's) | zoom | resize_zoom
    engine          transformers | vllm
    resolution      a conf/resolution name (paper; synthetic for the synthetic set)
    temperature     0: greedy (the paper's evaluation); otherwise sampled
    max_new_tokens  per turn (default conf/eval.yaml's; the task's own limit would cut the reasoning)
    overrides       further conf/eval.yaml overrides, space-separated (e.g. rollout.vllm.dtype=float32)
    """

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        try:
            self._load(ModelArgs.parse(model_args))
        except InputError as error:
            # Bad args, a missing checkpoint, vllm not installed: lmms-eval would print a traceback
            # and exit 0; one line and exit code 2, as our entry points
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    def _load(self, args: ModelArgs) -> None:
        self.cfg = compose_eval_config(args.eval_overrides())
        self.mode, self.seed = args.mode, args.seed
        torch.manual_seed(args.seed)
        self.sampling = SamplingConfig(
            greedy=float(args.temperature) == 0.0,
            temperature=float(args.temperature) or 1.0,
            max_new_tokens=int(self.cfg.eval.max_new_tokens),
        )
        self.extraction = self.cfg.eval.answer_extraction
        self.resolution = instantiate(self.cfg.resolution)
        check_backend(self.cfg.rollout)
        rollout: RolloutConfig = replace(
            instantiate(self.cfg.rollout),
            group_size=1, max_images=self.cfg.eval.max_images, max_turns=self.cfg.eval.max_turns,
        )  # fmt: skip
        processor, backend = load_backend(
            instantiate(self.cfg.model), self.cfg.get("checkpoint"), rollout, self.resolution, args.seed
        )
        builder = EpisodeBuilder(processor, instantiate(self.cfg.prompts[args.mode]), self.resolution)
        self.driver = EpisodeDriver(backend.engine, builder, rollout)
        self.figures = RunFigures()
        settings = {**asdict(args), "max_new_tokens": self.sampling.max_new_tokens}
        log_to_mlflow_at_exit(self.figures, settings, started=time.time(), register=atexit.register)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.eval.batch_size)

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        progress = tqdm(total=len(requests), desc=f"{MODEL_NAME}/{self.mode}", disable=self.rank != 0)
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            samples = [self._sample(request) for request in chunk]
            usable = [(s, r.task_name) for s, r in zip(samples, chunk, strict=True) if s is not None]
            answers = iter(self._answer(*zip(*usable, strict=True)) if usable else [])
            # A sample without a usable image is answered with nothing (scored wrong), not a crash
            results += [next(answers) if s is not None else GenerationResult(text="") for s in samples]
            progress.update(len(chunk))
        progress.close()
        return results

    def _sample(self, request: Instance) -> Sample | None:
        context, _gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        sample_id = f"{task}/{split}/{doc_id}"
        try:
            visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) or [] if v is not None]
            if len(visuals) != 1 or not hasattr(visuals[0], "convert"):
                raise InputError(f"the task gave {len(visuals)} visuals, a VisionThink episode holds one image",
                                 "Evaluate it on single-image tasks")  # fmt: skip
            image = to_rgb(visuals[0])
            self.resolution.check(image)
        except InputError as error:
            self.figures.skip(task)
            log.warning("skipped %s (answered with nothing, so scored wrong): %s", sample_id, error)
            return None
        return Sample(sample_id=sample_id, image=image, question=context, answer="")

    def _answer(self, samples: tuple[Sample, ...], tasks: tuple[str, ...]) -> list[GenerationResult]:
        started = time.perf_counter()
        episodes = [self.driver.builder.build(sample, self.mode) for sample in samples]
        # Sampled decoding draws from a stream per sample (seed, sample id): batching does not change it
        seed = None if self.sampling.greedy else self.seed
        trajectories = self.driver.run(episodes, self.sampling, group_size=1, seed=seed)
        seconds = (time.perf_counter() - started) / len(samples)
        answered = []
        # One lmms-eval record per sample, so that its run summary (the mean of each figure over
        # records) is the mean over samples; without its log line per sample
        lmms_eval_logger.disable(log_metrics.__module__)
        try:
            for task, trajectory in zip(tasks, trajectories, strict=True):
                counts = VisualTokenCounts.of(trajectory)
                self.figures.add(task, counts, trajectory.episode.high_view.visual_tokens)
                log_metrics(
                    total_elapsed_time=seconds,
                    total_gen_tokens=trajectory.generated_tokens,
                    avg_speed=trajectory.generated_tokens / seconds if seconds > 0 else 0.0,
                    additional_metrics={
                        "visual_tokens": counts.visual_tokens,
                        "visual_tokens_first_view": counts.visual_tokens_first_view,
                        "visual_tokens_high_res": counts.visual_tokens_high_res,
                        "resize_ratio": float(counts.used_high_res),
                    },
                )
                text = prediction(trajectory, self.extraction) or ""
                answered.append(GenerationResult(text=text, token_counts=counts))
        finally:
            lmms_eval_logger.enable(log_metrics.__module__)
        return answered

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "visionthink answers generation tasks (output_type: generate_until); this task scores log-likelihoods"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("visionthink runs its own multi-turn episode; use a generate_until task")
