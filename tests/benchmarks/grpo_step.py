"""One GRPO step, ours against TRL's GRPOTrainer, on the same tiny Qwen2.5-VL weights, prompts and
images: single turn, one prompt x G completions per step, temperature 1, beta 0, fp32, no
activation checkpointing. Step time = generation + reward + forward/backward + optimizer step.

The multi-turn step (ours only: TRL's trainer has no image-returning tool turn) uses the agent
prompt; every other rollout's first turn becomes a resize call, so half of the trajectories take a
second turn with the high-resolution image."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import lightning as L
import torch


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self.started)


class EveryOtherRolloutAsks:
    """Generates every turn; then the first turn of every other request is replaced by a resize call."""

    def __init__(self, engine: Any, tool_call_ids: list[int]) -> None:
        self.engine, self.tool_call_ids = engine, tool_call_ids

    def generate(self, requests: Any, sampling: Any) -> list[Any]:
        from visionthink.rollout.engine import GenerationResult

        results = self.engine.generate(requests, sampling)
        asks = GenerationResult(self.tool_call_ids, stopped=True)
        return [asks if len(r.images) == 1 and i % 2 == 0 else result
                for i, (r, result) in enumerate(zip(requests, results, strict=True))]  # fmt: skip

    def end_episodes(self) -> None:
        self.engine.end_episodes()


def half_ask_backend(config: Any, policy: Any, tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    from adaptive import resize_call_ids

    from visionthink.rollout.factory import RolloutBackend, build_backend

    backend = build_backend(config, policy, tokenizer, *args, **kwargs)
    return RolloutBackend(EveryOtherRolloutAsks(backend.engine, resize_call_ids(tokenizer)), backend.weight_sync)


def ours(
    model_path: str,
    data_path: str,
    resolution: Any,
    steps: int,
    group_size: int,
    max_new_tokens: int,
    callbacks: list[Any] | None = None,
    multi_turn: bool = False,
    lora: Any = None,
) -> list[float]:
    from functools import partial

    from visionthink.data.datamodule import DataSource, VisionThinkDataModule
    from visionthink.episode.prompts import load_prompt
    from visionthink.grpo.config import GRPOConfig
    from visionthink.models import ModelConfig
    from visionthink.reward import RewardConfig, RuleJudge
    from visionthink.rollout import RolloutConfig, SamplingConfig
    from visionthink.training.module import VisionThinkGRPO

    prompt = load_prompt("agent" if multi_turn else "general_qa")
    extra = {"backend_factory": half_ask_backend} if multi_turn else {}
    module = VisionThinkGRPO(
        model=ModelConfig(name_or_path=model_path, **({"lora": lora} if lora is not None else {})),
        prompt=prompt,
        resolution=resolution,
        rollout=RolloutConfig(
            group_size=group_size,
            max_turns=2 if multi_turn else 1,
            sampling=SamplingConfig(max_new_tokens=max_new_tokens),
        ),
        reward=RewardConfig(penalty_mode="none"),
        judge=RuleJudge(),
        grpo=GRPOConfig(beta=0.0, micro_batch_size=group_size, aggregate="token-mean", drop_zero_variance_groups=False),
        optimizer=partial(torch.optim.AdamW, lr=1e-5),
        scheduler=None,
        **extra,
    )
    datamodule = VisionThinkDataModule(DataSource(data_path), batch_size=1, resolution=resolution)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer, *(callbacks or [])], use_distributed_sampler=False, num_sanity_val_steps=0,
        limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds


def trl(
    model_path: str,
    samples: list[Any],
    images: list[Any],
    processor: Any,
    steps: int,
    group_size: int,
    max_new_tokens: int,
) -> list[float]:
    """TRL's step on the same prompts and the same images our episodes start from (the low-res view)."""
    import datasets
    from omegaconf import OmegaConf
    from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from visionthink.paths import CONF_DIR

    system = OmegaConf.load(CONF_DIR / "prompt" / "general_qa.yaml").system
    rows = {
        "prompt": [
            [
                {"role": "system", "content": [{"type": "text", "text": system}]},
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": s.question.replace("<image>", "")}],
                },
            ]
            for s in samples
        ],  # fmt: skip
        "image": images,
    }
    dataset = datasets.Dataset.from_dict(rows)

    def reward(completions, **_):
        return [float("<answer>" in (c[0]["content"] if isinstance(c, list) else c)) for c in completions]

    class Timer(TrainerCallback):
        seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.started)

    timer = Timer()
    timer.seconds = []
    with tempfile.TemporaryDirectory() as output:
        args = GRPOConfig(
            output_dir=output, per_device_train_batch_size=group_size, num_generations=group_size,
            max_completion_length=max_new_tokens, temperature=1.0, beta=0.0, loss_type="dapo", bf16=False,
            gradient_checkpointing=False, max_steps=steps, logging_steps=1, report_to=[], save_strategy="no",
            learning_rate=1e-5, use_cpu=True, dataloader_num_workers=0, seed=0,
        )  # fmt: skip
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path, dtype=torch.float32)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=args,
            train_dataset=dataset,
            processing_class=processor,
            callbacks=[timer],
        )
        trainer.train()
    return timer.seconds


def compare(model_path: str, data_path: str, resolution: Any, processor: Any, samples: list[Any], images: list[Any], steps: int = 12,
            warmup: int = 2, blocks: int = 3, group_size: int = 8, max_new_tokens: int = 64) -> dict[str, Any]:  # fmt: skip
    """Interleaved blocks (ours, TRL, ours, TRL, ...): the median step time of each side after
    ``warmup`` steps per block, each block's ratio, and their median."""
    times: dict[str, list[float]] = {"ours": [], "trl": []}
    block_ratios = []
    for _ in range(blocks):
        mine = ours(model_path, data_path, resolution, steps, group_size, max_new_tokens)[warmup:]
        theirs = trl(model_path, samples, images, processor, steps, group_size, max_new_tokens)[warmup:]
        times["ours"] += mine
        times["trl"] += theirs
        block_ratios.append(median(mine) / median(theirs))
    result: dict[str, Any] = {side: median(values) for side, values in times.items()}
    result["ratio"] = median(block_ratios)
    result["block_ratios"] = block_ratios
    result["steps_measured"] = {side: len(values) for side, values in times.items()}
    return result


def lora_against_full(model_path: str, data_path: str, resolution: Any, steps: int = 12, warmup: int = 2,
                      blocks: int = 3, group_size: int = 8, max_new_tokens: int = 64) -> dict[str, Any]:  # fmt: skip
    """Our single-turn step with rank-16 LoRA adapters on the language model's linear layers
    (``model/lora=language``) against full fine-tuning, in interleaved blocks; and what each
    trains: parameters, and AdamW's two moments (fp32) for them."""
    from visionthink.models import ModelConfig, load_policy
    from visionthink.models.lora import LoraSettings, attach_lora

    settings = LoraSettings(rank=16)
    times: dict[str, list[float]] = {"full": [], "lora": []}
    block_ratios = []
    for _ in range(blocks):
        full = ours(model_path, data_path, resolution, steps, group_size, max_new_tokens)[warmup:]
        lora = ours(model_path, data_path, resolution, steps, group_size, max_new_tokens, lora=settings)[warmup:]
        times["full"] += full
        times["lora"] += lora
        block_ratios.append(median(lora) / median(full))
    policy = load_policy(ModelConfig(), model_path)
    total = sum(p.numel() for p in policy.parameters())
    adapters = sum(p.numel() for p in attach_lora(policy, settings).parameters() if p.requires_grad)
    return {
        **{side: median(values) for side, values in times.items()},
        "ratio": median(block_ratios),
        "block_ratios": block_ratios,
        "trainable": {"full": total, "lora": adapters},
        "adam_state_mib": {"full": 8 * total / 2**20, "lora": 8 * adapters / 2**20},
    }


def profile(model_path: str, data_path: str, resolution: Any, steps: int = 8, warmup: int = 2,
            group_size: int = 8, max_new_tokens: int = 64, multi_turn: bool = False) -> dict[str, float]:  # fmt: skip
    """Median seconds per stage of our step (a separate run: the timers cost a little)."""
    from profile_step import StepProfile

    profiler = StepProfile()
    ours(model_path, data_path, resolution, steps, group_size, max_new_tokens, [profiler], multi_turn)
    return profiler.summary(warmup)


def multi_turn(model_path: str, data_path: str, resolution: Any, steps: int = 12, warmup: int = 2, blocks: int = 3,
               group_size: int = 8, max_new_tokens: int = 64) -> dict[str, Any]:  # fmt: skip
    """Our step when half of the trajectories take two turns, against our single-turn step."""
    block = {"single": [], "multi": []}
    for _ in range(blocks):
        block["single"].append(
            median(ours(model_path, data_path, resolution, steps, group_size, max_new_tokens)[warmup:])
        )
        block["multi"].append(median(ours(model_path, data_path, resolution, steps, group_size, max_new_tokens,
                                          multi_turn=True)[warmup:]))  # fmt: skip
    return {"single": median(block["single"]), "multi": median(block["multi"]), "blocks": block}


def default_path() -> Path:
    return Path(__file__).resolve().parents[2]
