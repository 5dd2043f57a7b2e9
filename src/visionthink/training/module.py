"""The GRPO LightningModule: rollouts -> rewards -> advantages -> clipped loss -> weight sync.

Every stage is a plain function or object from the stage packages; this module only orders
them, owns the optimizer and logs what happened.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import wrap

from visionthink.collectives import all_ranks
from visionthink.data.batching import CollateSamples, SampleBatch
from visionthink.data.sample import SampleError
from visionthink.episode.builder import EpisodeBuilder
from visionthink.episode.prompts import PromptSpec
from visionthink.episode.resolution import ResolutionPolicy
from visionthink.errors import InputError
from visionthink.grpo.advantages import zero_variance_groups
from visionthink.grpo.config import GRPOConfig
from visionthink.grpo.update import GRPOUpdate
from visionthink.metrics.distributed import Slowest, Summed, gather_metrics
from visionthink.metrics.rollouts import rollout_metrics
from visionthink.models.family import family_of
from visionthink.models.loading import ModelConfig, load_policy_and_processor, save_policy_and_processor
from visionthink.models.lora import adapter_state, attach_lora
from visionthink.reward.judges.base import Judge
from visionthink.reward.scoring import RewardConfig, RolloutScore, judge_trajectories, score_trajectories
from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.factory import RolloutBackend, build_backend
from visionthink.rollout.seeding import mix_seed
from visionthink.rollout.trajectory import Trajectory, group_blocks
from visionthink.sync.gather import adapter_parameters, full_state_dict
from visionthink.training.optim import (
    configure_optimization,
    freeze_vision_tower,
    learning_rates,
    parameter_summary,
)
from visionthink.training.strategies import prepare_lora_strategy, strategy_hooks

log = logging.getLogger(__name__)


@dataclass
class ScoredGroup:
    trajectories: list[Trajectory]
    scores: list[RolloutScore]


class VisionThinkGRPO(L.LightningModule):
    def __init__(
        self,
        model: ModelConfig,
        prompt: PromptSpec,
        resolution: ResolutionPolicy,
        rollout: RolloutConfig,
        reward: RewardConfig,
        judge: Judge,
        grpo: GRPOConfig,
        optimizer: Any,
        scheduler: Any | None = None,
        seed: int = 0,
        vision_lr_scale: float = 1.0,
        backend_factory: Callable[..., RolloutBackend] = build_backend,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model_config, self.prompt, self.resolution = model, prompt, resolution
        self.rollout_config = rollout
        self.sampling, self.val_sampling = rollout.sampling, rollout.val_sampling
        self.reward_config, self.judge, self.grpo = reward, judge, grpo
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.vision_lr_scale = vision_lr_scale
        # Builds the rollout engine and its weight sync (rollout/factory.py; tests pass a scripted one)
        self.backend_factory = backend_factory
        # Rollout noise is keyed by (seed, step, sample, rollout): runs reproduce on any number of ranks.
        self.seed = seed
        self.policy: Any = None
        # The frozen reference model (grpo.beta > 0), kept out of the module tree (setup)
        self.reference: Any = None
        self.skipped_samples = 0
        # Whether every verdict of the latest step failed (Judge.check_step)
        self._judge_failed = False
        self._buffer: list[ScoredGroup] = []
        self._generation_batches = 0
        self._val_records: list[tuple[Trajectory, RolloutScore]] = []
        self.last_validated_step = -1
        # The latest step's rollouts, for callbacks that log samples.
        self.last_rollouts: tuple[list[Trajectory], list[RolloutScore]] | None = None

    # ----------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy):
            # DeepSpeed clips inside its own optimizer step, and Lightning's clip call is a no-op there
            strategy.config.setdefault("gradient_clipping", self.grpo.max_grad_norm)
        if self.policy is not None:
            return
        # Loaded here, not in configure_model: under ZeRO-3 that runs inside deepspeed.zero.Init,
        # which partitions every module built in it (a checkpoint cannot be loaded into those
        # parameters, nor can vLLM build its model there); DeepSpeed partitions the whole policy
        # when it starts.
        path, policy, self.processor = load_policy_and_processor(self.model_config, self.resolution.processor_size())
        lora = self.model_config.lora
        if lora.enabled:
            prepare_lora_strategy(strategy)
            policy = attach_lora(policy, lora)
        freeze_vision_tower(policy.train(), self.vision_lr_scale)
        # Under LoRA the reference is the policy with its adapters off (grpo/update.py): no copy
        copies_reference = self.grpo.beta > 0 and not lora.enabled
        log.info("%s", parameter_summary(policy, self.vision_lr_scale, copies_reference))
        self.policy = policy
        # A LoRA checkpoint holds the adapters only; the base weights come from model.name_or_path
        self.strict_loading = not lora.enabled
        if copies_reference:
            reference = copy.deepcopy(policy).eval().requires_grad_(False)
            if str(self.trainer.precision).startswith("bf16"):
                reference.to(torch.bfloat16)  # frozen: no master weights needed
            # Not a registered submodule: no strategy checkpoints it (it is rebuilt from the base
            # checkpoint), DeepSpeed neither partitions nor casts it, and Lightning does not move
            # it (on_fit_start does).
            object.__setattr__(self, "reference", reference)
        tokenizer = self.processor.tokenizer
        self.builder = EpisodeBuilder(self.processor, self.prompt, self.resolution)
        backend = self.backend_factory(self.rollout_config, policy, tokenizer, path, self.resolution, self.seed)
        self.engine, self.weight_sync = backend.engine, backend.weight_sync
        self.driver = EpisodeDriver(self.engine, self.builder, self.rollout_config)
        self.tool_sources = [tool.source for tool in self.builder.tools.values()]
        ids = family_of(policy).special_token_ids(tokenizer)
        self.update = GRPOUpdate(
            self.grpo,
            self.rollout_config.group_size,
            self.sampling.temperature,
            ids.pad,
            ids.image,
            strategy_hooks(self),
        )

    def configure_model(self) -> None:
        # Under FSDP (Lightning's wrapping context) the policy and the reference are each their own
        # FSDP root: Lightning's own wrapping of the whole LightningModule breaks a backward inside
        # training_step, as manual optimisation does (Lightning-AI/pytorch-lightning#19626).
        # Elsewhere wrap() is the identity. Rollouts under FSDP come from vLLM, which is handed the
        # wrapped policy's full weights at every push.
        if isinstance(self.policy, FullyShardedDataParallel):
            return
        self.policy = wrap(self.policy)
        if self.reference is not None:
            object.__setattr__(self, "reference", wrap(self.reference))

    def on_fit_start(self) -> None:
        if self.reference is not None:
            self.reference.to(self.device)
        if self.trainer.ckpt_path:
            # The checkpoint's weights are in the policy now; an engine with its own copy needs them too.
            self.weight_sync.push(self.policy)

    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        return configure_optimization(
            self.policy, self.optimizer_factory, self.scheduler_factory, self.vision_lr_scale, steps
        )

    # --------------------------------------------------------------- rollouts
    def episodes(self, batch: SampleBatch, mode: str = "adaptive") -> list:
        CollateSamples.check(batch)
        episodes = []
        for sample in batch.samples:
            try:
                episodes.append(self.builder.build(sample, mode))
            except InputError as error:
                self._skip(SampleError.wrap(sample.sample_id, error))
            except Exception as error:  # the processor refused it: one sample, not the run
                self._skip(SampleError.unprocessable(sample.sample_id, error))
        for error in batch.skipped:
            self._skip(error)
        return episodes

    def _skip(self, error: SampleError) -> None:
        self.skipped_samples += 1
        log.warning("skipped %s", error)

    def score(self, trajectories: list[Trajectory]) -> list[RolloutScore]:
        verdicts = judge_trajectories(trajectories, self.judge, self.reward_config.answer_extraction)
        return score_trajectories(trajectories, verdicts, self.prompt, self.reward_config)

    def _groups(
        self, trajectories: list[Trajectory], scores: list[RolloutScore]
    ) -> tuple[list[ScoredGroup], dict[str, float]]:
        size = self.rollout_config.group_size
        blocks = group_blocks(trajectories, size)
        groups = [ScoredGroup(block, scores[i * size : (i + 1) * size]) for i, block in enumerate(blocks)]
        invalid = [g for g in groups if not all(s.valid for s in g.scores)]
        groups = [g for g in groups if all(s.valid for s in g.scores)]
        flat = 0
        if self.grpo.drop_zero_variance_groups and groups:
            rewards = torch.tensor([s.reward for g in groups for s in g.scores])
            keep = ~zero_variance_groups(rewards, size, self.grpo.zero_variance_threshold)
            flat = int((~keep).sum())
            groups = [g for g, k in zip(groups, keep.tolist(), strict=True) if k]
        return groups, {"invalid_groups": Summed(len(invalid)), "filtered_groups": Summed(len(invalid) + flat)}

    # --------------------------------------------------------------- training
    def training_step(self, batch: SampleBatch, batch_idx: int) -> None:
        step_started = time.perf_counter()
        episodes = self.episodes(batch)
        metrics: dict[str, float] = {"system/data/skipped_samples": Summed(self.skipped_samples)}
        trajectories, scores = [], []
        if episodes:
            rollout_started = time.perf_counter()
            rollout_seed = mix_seed(self.seed, self.global_step, self._generation_batches)
            trajectories = self.driver.run(episodes, self.sampling, seed=rollout_seed)
            rollout_seconds = time.perf_counter() - rollout_started
            scores = self.score(trajectories)
            self.last_rollouts = (trajectories, scores)
            generated = sum(t.generated_tokens for t in trajectories)
            metrics["system/perf/rollout_seconds"] = Slowest(rollout_seconds)
            metrics["system/perf/tokens_per_second"] = Summed(generated / max(rollout_seconds, 1e-9))
        groups, filter_metrics = self._groups(trajectories, scores)
        rollouts = {**rollout_metrics(trajectories, scores, self.tool_sources), **filter_metrics}
        metrics.update({f"train/{name}": value for name, value in rollouts.items()})
        judged = self.judge.take_stats()
        metrics.update(judged.as_metrics())
        # Every rank agrees, so that all stop together (on_train_batch_end, once the step is logged)
        self._judge_failed = all_ranks(self.judge.all_invalid(judged))

        self._buffer += groups
        self._generation_batches += 1
        wanted = len(episodes)
        enough = len(self._buffer) >= wanted or self._generation_batches >= self.grpo.max_generation_batches
        # Every rank must take the same decision: an update is a collective under DDP.
        if not all_ranks(enough):
            metrics["train/buffered_groups"] = Summed(len(self._buffer))
            self.publish(metrics, weight=len(trajectories))
            return
        groups, self._buffer, self._generation_batches = self._buffer[:wanted], [], 0
        metrics.update(self._update(groups))
        metrics["system/perf/step_seconds"] = Slowest(time.perf_counter() - step_started)
        self.publish(metrics, weight=len(trajectories))
        progress = {"reward": "train/reward", "acc": "train/accuracy", "resize": "train/resize_ratio",
                    "resize_fine": "train/resize_ratio/needs_high_res", "resize_coarse": "train/resize_ratio/low_res_enough",
                    "vis_tokens": "train/visual_tokens", "step_s": "system/perf/step_seconds",
                    "judge_invalid": "judge/invalid_rate"}  # fmt: skip
        # A value a step lacks (no label question in it, data without use_tool) keeps the bar's last one.
        shown = {k: metrics[v] for k, v in progress.items() if v in metrics}
        self.log_dict(shown, prog_bar=True, logger=False)

    def on_train_batch_end(self, outputs: Any, batch: SampleBatch, batch_idx: int) -> None:
        self.judge.check_step(self._judge_failed)

    def publish(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        """Send metrics to the loggers now, at step = optimizer updates done.

        Lightning would log them after ``on_train_batch_end``, i.e. after the checkpoint of this
        step is written; a kill in between would lose them for good. They also go to
        ``callback_metrics`` (what train.py returns to a sweeper). Under DDP every rank calls
        this; the ranks' figures are combined first (``weight``: this rank's trajectory count)."""
        metrics = gather_metrics(metrics, weight)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        self.log_dict(metrics, logger=False)

    def _update(self, groups: list[ScoredGroup]) -> dict[str, float]:
        """The GRPO update over the kept groups, then the new weights to the rollout engine."""
        optimizer = self.optimizers()
        metrics = self.update(
            self.policy,
            self.policy if self.model_config.lora.enabled and self.grpo.beta > 0 else self.reference,
            [t for g in groups for t in g.trajectories],
            torch.tensor([s.reward for g in groups for s in g.scores]),
            optimizer,
            self.lr_schedulers(),
            # For padding passes when this rank kept no group (its latest rollouts hold one)
            padding=self.last_rollouts[0][0] if self.last_rollouts and self.last_rollouts[0] else None,
        )
        if metrics["train/optimizer_steps"]:
            self.weight_sync.push(self.policy)
        metrics.update({f"train/{name}": value for name, value in learning_rates(optimizer).items()})
        return metrics

    # ------------------------------------------------------------- validation
    def validation_step(self, batch: SampleBatch, batch_idx: int) -> None:
        episodes = self.episodes(batch)
        if not episodes:
            return
        trajectories = self.driver.run(episodes, self.val_sampling, group_size=1)
        self._val_records += list(zip(trajectories, self.score(trajectories), strict=True))

    def on_validation_epoch_end(self) -> None:
        if not self._val_records:
            return
        trajectories, scores = map(list, zip(*self._val_records, strict=True))
        self._val_records = []
        metrics = rollout_metrics(trajectories, scores, self.tool_sources)
        self.last_validated_step = self.global_step
        self.publish({f"val/{k}": v for k, v in metrics.items()}, weight=len(trajectories))
        self.log("val/acc", metrics["accuracy"], prog_bar=True, logger=False)

    def export(self, directory: Path) -> Path | None:
        """The trained policy as a ``save_pretrained`` folder, without the reference model,
        gathered from any strategy (every rank calls this; rank 0 writes)."""
        state = full_state_dict(self.policy)
        adapters = adapter_parameters(self.policy) if self.model_config.lora.enabled else None
        if not self.trainer.is_global_zero:
            return None
        return save_policy_and_processor(self.policy, self.processor, directory, state, adapters)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model_config.lora.enabled:
            checkpoint["lora"] = self.model_config.lora.as_dict()
            # The base weights are those of model.name_or_path, loaded again on resume (FSDP's
            # sharded checkpoints must hold every entry of the model's state, base weights too;
            # DeepSpeed leaves them out itself)
            if not isinstance(self.trainer.strategy, FSDPStrategy):
                checkpoint["state_dict"] = adapter_state(checkpoint["state_dict"])
        # Lightning restores model, optimizer, schedule and loop progress; these complete an exact resume.
        name, keys, position, has_gauss, cached_gauss = np.random.get_state()
        checkpoint["visionthink"] = {
            "skipped_samples": self.skipped_samples,
            # Plain types and tensors only, so the checkpoint loads with torch.load(weights_only=True).
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
                "python": random.getstate(),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("visionthink", {})
        self.skipped_samples = state.get("skipped_samples", 0)
        if "rng" in state:
            torch.set_rng_state(state["rng"]["torch"])
            name, keys, position, has_gauss, cached_gauss = state["rng"]["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
            random.setstate(state["rng"]["python"])
