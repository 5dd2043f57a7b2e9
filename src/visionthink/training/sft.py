"""Supervised cold start: teacher-forced VisionThink traces, built with the same episode driver
as RL rollouts (so the token layout, masks and images are exactly what GRPO will see).

For each sample a seeded coin decides, independently of whether the question needs high
resolution, whether the trace calls the resize tool and answers from the high-resolution image,
or answers directly. The traces teach the format and the answers, not the decision (paper
Appendix C.2 compares such a cold start with none). A direct answer to a question that needs high
resolution (``use_tool``) is a guess: its answer tokens are left out of the loss, so the model
learns to read what it can see instead of a prior over answers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch

from visionthink.data.batching import SampleBatch
from visionthink.data.sample import Sample, SampleError
from visionthink.episode.builder import Episode, EpisodeBuilder
from visionthink.episode.prompts import PromptSpec
from visionthink.episode.resolution import ResolutionPolicy
from visionthink.episode.tools import ZoomTool, seen_size
from visionthink.errors import InputError
from visionthink.grpo.logprobs import token_logprobs
from visionthink.models.family import family_of
from visionthink.models.loading import ModelConfig, load_policy_and_processor, save_policy_and_processor
from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.engine import GenerationRequest, GenerationResult, SamplingConfig
from visionthink.rollout.seeding import mix_seed
from visionthink.rollout.trajectory import Trajectory
from visionthink.training.optim import configure_optimization, freeze_vision_tower

# The resize call of the traces; a zoom call names the sample's label box (info.label_box)
RESIZE_CALL = {"name": "resize_image", "arguments": {"action": "resize"}}
# The grounding question of perception traces: where the label is, as a zoom call names it
GROUNDING_QUESTION = "<image>Where is the small label? Give its box as [x1, y1, x2, y2]."


@dataclass(frozen=True)
class TracePlan:
    call_tool: bool
    answer: str
    # The call a tool-calling trace writes ({"name": ..., "arguments": ...}): a resize, or a zoom
    # on the sample's label
    call: dict[str, Any] = field(default_factory=lambda: RESIZE_CALL)
    # The question (or its first words), restated at the start of the first turn's reasoning
    question: str = ""
    # What the first view shows of the asked detail (VIEW_NOTES), said before the decision
    view_note: str = ""


# What the first view shows of what the question asks about: perception, said whatever the trace
# then does (its tool call is drawn independently), so the base learns to look, not to decide
VIEW_NOTES = {True: "It is too small", False: "I can see it"}
# The decision follows the note's last word directly, and its first token differs with the note
# as well as with the decision: a tiny model's GRPO update of a token's output row then moves
# only the decision after that note, not after the other one (with one pair of tokens shared by
# both notes, "ask after 'too small'" carried over to "ask after 'see it'": docs/miniature.md)
DECISIONS = {
    VIEW_NOTES[True]: {True: ", so I need a closer look at the image.\n", False: "; I will answer from this view.\n"},
    VIEW_NOTES[False]: {True: " but I want a closer look at the image.\n", False: ". The image shows it.\n"},
}
UNNOTED_DECISIONS = {True: "I need a closer look at the image.\n", False: "The image shows it.\n"}


def reasoning_opening(question: str, view_note: str, call_tool: bool) -> str:
    """The first turn's reasoning up to its decision: the question restated, what the view shows
    of it, then the decision. A small model takes the decision (answer or call the tool) where
    these words are close by."""
    lines = f"{question}\n" if question else ""
    decision = (DECISIONS[view_note] if view_note else UNNOTED_DECISIONS)[call_tool]
    return f"<think>\n{lines}{view_note}{decision}"


def first_words(question: str, words: int) -> str:
    """The first ``words`` words of ``question`` (all of them for -1, none for 0)."""
    split = question.replace("<image>", "").split()
    return " ".join(split if words < 0 else split[:words])


def tool_call_text(prompt: PromptSpec, question: str = "", view_note: str = "", call: dict | None = None) -> str:
    reasoning = f"{reasoning_opening(question, view_note, True)}</think>\n"
    if prompt.tool_protocol == "tag":
        return reasoning + prompt.resize_tag
    return f"{reasoning}<tool_call>\n{json.dumps(call or RESIZE_CALL)}\n</tool_call>"


def answer_opening(question: str = "", view_note: str = "") -> str:
    return f"{reasoning_opening(question, view_note, False)}</think>\n<answer>"


# After the tool result the reasoning starts differently: reinforcing a good answer from the
# high-resolution image must not reinforce the opening of a direct answer, where the decision
# is taken.
ANSWER_AFTER_TOOL_OPEN = "<think>\nAt full resolution I can read it.\n</think>\n<answer>"
ANSWER_CLOSE = "</answer>"


class TeacherEngine:
    """A rollout engine that writes planned turns instead of sampling them.

    The driver continues trajectories in order, so call 1 holds every plan and each later call
    holds the plans whose trajectories called the tool."""

    def __init__(self, tokenizer: Any, prompt: PromptSpec, plans: Sequence[TracePlan]):
        self.tokenizer, self.prompt = tokenizer, prompt
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pending = list(plans)

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        plans, continuing = self.pending, []
        results = []
        for plan, request in zip(plans, requests, strict=True):
            first_turn = len(request.images) == 1
            if plan.call_tool and first_turn:
                text = tool_call_text(self.prompt, plan.question, plan.view_note, plan.call)
                continuing.append(plan)
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end]
            else:
                # Tokenised in three pieces so the answer's tokens can be located (and masked).
                opening = answer_opening(plan.question, plan.view_note) if first_turn else ANSWER_AFTER_TOOL_OPEN
                # Dataset text (the answer) is literal text, never control tokens
                ids = [
                    t
                    for piece in (opening, plan.answer, ANSWER_CLOSE)
                    for t in self.tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                ]
                ids.append(self.end)
            results.append(GenerationResult(token_ids=ids, stopped=True))
        self.pending = continuing
        return results

    def end_episodes(self) -> None:
        self.pending = []


def tool_probability(tool_fraction: float | Mapping[str, float], sample: Sample) -> float:
    """``tool_fraction`` itself, or its entry for the sample's question kind."""
    if not isinstance(tool_fraction, Mapping):
        return tool_fraction
    if sample.kind not in tool_fraction:
        raise InputError(
            f"tool_fraction has no entry for question kind {sample.kind!r} (it has {sorted(tool_fraction)})",
            "Give every question kind of the data a tool fraction, or one number for all",
            where=f"sample {sample.sample_id}",
        )
    return tool_fraction[sample.kind]


def teacher_traces(
    builder: EpisodeBuilder,
    samples: Sequence[Sample],
    tool_fraction: float | Mapping[str, float],
    seed: int,
    mode: str = "adaptive",
    train_guesses: bool = False,
    restate_words: int = 0,
    describe_view: bool = False,
    zoom_fraction: float = 0.0,
) -> list[Trajectory]:
    """Traces in ``builder``'s prompt; with a tool-less prompt every trace answers directly from
    the ``mode`` view (full or low). A share ``tool_fraction`` of the agent prompt's traces (one
    number, or one per question kind) call the tool, drawn per sample whatever it needs.
    ``train_guesses`` keeps the answers of unreadable questions in the loss (the model learns to
    guess at chance, as a pretrained VLM does); ``restate_words`` opens the reasoning with that
    many of the question's first words (-1: all); ``describe_view`` then says whether the first
    view shows the asked detail (from the sample's ``use_tool`` label: at full resolution it does).
    With a zoom tool offered, a share ``zoom_fraction`` of the calls (all, without a resize tool)
    zoom on the sample's label (``info.label_box``)."""
    tool = builder.prompt.uses_tool
    episodes = [builder.build(s, mode) for s in samples]
    plans = []
    for s, episode in zip(samples, episodes, strict=True):
        call_tool = tool and random.Random(mix_seed(seed, s.sample_id)).random() < tool_probability(tool_fraction, s)
        plans.append(
            TracePlan(
                call_tool=call_tool,
                answer=s.answer,
                call=trace_call(builder, episode, zoom_fraction, seed) if call_tool else RESIZE_CALL,
                question=first_words(s.question, restate_words),
                view_note=VIEW_NOTES[bool(s.use_tool) and mode != "full"] if describe_view else "",
            )
        )
    tokenizer = builder.processor.tokenizer
    engine = TeacherEngine(tokenizer, builder.prompt, plans)
    driver = EpisodeDriver(engine, builder, RolloutConfig(group_size=1, max_images=2, max_turns=2))
    # The teacher writes whole turns: a budget no trace reaches
    traces = driver.run(episodes, SamplingConfig(greedy=True, max_new_tokens=256))
    for trace in traces:
        sample = trace.episode.sample
        if not train_guesses and sample.use_tool and not trace.used_high_res and trace.episode.mode != "full":
            # The answer cannot be read from the low-resolution view: train the format of the
            # guess, not a prior over answers (fitting one teaches the model to ignore images).
            answer = answer_span(trace, tokenizer)
            trace.loss_mask[answer] = [0] * (answer.stop - answer.start)
    return traces


def trace_call(builder: EpisodeBuilder, episode: Episode, zoom_fraction: float, seed: int) -> dict[str, Any]:
    """The call a trace of ``episode`` writes if it calls a tool: a zoom on the label or a resize."""
    zooms = [tool for tool in builder.tools.values() if isinstance(tool, ZoomTool)]
    resizes = [name for name, tool in builder.tools.items() if tool.source == "resize"]
    sample = episode.sample
    region = sample.info.get("label_box")
    coin = random.Random(mix_seed(seed, "zoom", sample.sample_id)).random()
    if zooms and region is not None and (not resizes or coin < zoom_fraction):
        zoom = zooms[0]
        box = zoom.first_view_box(list(region), seen_size(episode, zoom.patch_size), sample.image.size)
        return {"name": zoom.spec.name, "arguments": {"bbox_2d": box}}
    if not resizes and builder.prompt.tool_protocol == "json":
        raise SampleError(
            sample.sample_id,
            "the prompt offers only the zoom tool and the sample has no info.label_box for the trace to zoom on",
            "Give the samples label boxes, or offer resize too (tool=resize_zoom)",
        )
    return RESIZE_CALL


def grounding_sample(sample: Sample, builder: EpisodeBuilder, boxes: ZoomTool, mode: str) -> Sample:
    """``sample`` asked where its label is: the answer is ``info.label_box`` in the coordinates of
    the image the ``mode`` view shows, in the family's convention (``boxes``), written as a zoom
    call writes its box. The place is visible at 1/4 resolution too."""
    seen = seen_size(builder.build(sample, mode), boxes.patch_size)
    box = boxes.first_view_box(list(sample.info["label_box"]), seen, sample.image.size)
    return replace(
        sample, question=GROUNDING_QUESTION, answer=json.dumps(box), answers=(), use_tool=False,
        data_source=f"{sample.data_source.rsplit('/', 1)[0]}/grounding",
    )  # fmt: skip


def answer_span(trace: Trajectory, tokenizer: Any) -> slice:
    """The positions of a teacher trace's final answer tokens (between ``<answer>`` and ``</answer>``)."""
    end = len(trace.loss_mask) - len(tokenizer(ANSWER_CLOSE, add_special_tokens=False)["input_ids"]) - 1
    return slice(end - len(tokenizer(trace.episode.sample.answer, add_special_tokens=False)["input_ids"]), end)


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on the generated (assistant) tokens of teacher traces."""

    def __init__(
        self,
        model: ModelConfig,
        prompt: PromptSpec,
        resolution: ResolutionPolicy,
        optimizer: Any,
        tool_fraction: float | Mapping[str, float] = 0.5,
        seed: int = 0,
        plain_prompt: PromptSpec | None = None,
        plain_fraction: float = 0.0,
        scheduler: Any | None = None,
        vision_lr_scale: float = 1.0,
        train_guesses: bool = False,
        restate_words: int = 0,
        describe_view: bool = False,
        answer_weight: float = 1.0,
        zoom_fraction: float = 0.0,
        grounding_fraction: float = 0.0,
    ):
        super().__init__()
        self.model_config, self.prompt, self.resolution = model, prompt, resolution
        self.optimizer_factory, self.tool_fraction, self.seed = optimizer, tool_fraction, seed
        self.scheduler_factory, self.vision_lr_scale = scheduler, vision_lr_scale
        self.train_guesses, self.restate_words, self.describe_view = train_guesses, restate_words, describe_view
        # Loss weight of the answer tokens against the trace's other (format) tokens
        self.answer_weight = answer_weight
        # With a zoom tool offered: the share of tool-calling traces that zoom on the label
        self.zoom_fraction = zoom_fraction
        # The share of perception traces that ask where the label is (samples with info.label_box)
        self.grounding_fraction = grounding_fraction
        # A share of traces in a tool-less prompt (full or low resolution, answered directly),
        # so the model also knows the prompts of the full and low evaluation modes.
        self.plain_prompt, self.plain_fraction = plain_prompt, plain_fraction
        self.policy: Any = None

    def setup(self, stage: str) -> None:
        # Loaded here, not in configure_model, which ZeRO-3 runs inside deepspeed.zero.Init: a
        # checkpoint cannot be loaded into its partitioned parameters.
        if self.policy is not None:
            return
        _, policy, self.processor = load_policy_and_processor(self.model_config, self.resolution.processor_size())
        self.policy = policy.train()
        freeze_vision_tower(self.policy, self.vision_lr_scale)
        self.ids = family_of(self.policy).special_token_ids(self.processor.tokenizer)
        self.builder = EpisodeBuilder(self.processor, self.prompt, self.resolution)
        image_processor = self.processor.image_processor
        # Grounding answers follow the family's box convention, as its zoom calls do
        self.boxes = ZoomTool(
            None, getattr(self.processor, "box_coordinates", "pixels"), image_processor.patch_size,
            image_processor.merge_size,
        )  # fmt: skip
        self.plain_builder = (
            EpisodeBuilder(self.processor, self.plain_prompt, self.resolution)
            if self.plain_prompt is not None
            else None
        )

    def configure_optimizers(self):
        steps = int(self.trainer.estimated_stepping_batches)
        return configure_optimization(
            self.policy, self.optimizer_factory, self.scheduler_factory, self.vision_lr_scale, steps
        )

    def traces(self, samples: Sequence[Sample], seed: int) -> list[Trajectory]:
        groups: dict[tuple[str, str], list[Sample]] = {}
        for sample in samples:
            coin = random.Random(mix_seed(seed, "prompt", sample.sample_id))
            if self.plain_builder is not None and coin.random() < self.plain_fraction:
                groups.setdefault(("plain", coin.choice(["full", "low"])), []).append(sample)
            else:
                groups.setdefault(("agent", "adaptive"), []).append(sample)
        traces = []
        for (prompt, mode), members in sorted(groups.items()):
            builder = self.plain_builder if prompt == "plain" else self.builder
            if prompt == "plain" and self.grounding_fraction:
                members = [
                    grounding_sample(s, builder, self.boxes, mode)
                    if "label_box" in s.info
                    and random.Random(mix_seed(seed, "grounding", s.sample_id)).random() < self.grounding_fraction
                    else s
                    for s in members
                ]
            traces += teacher_traces(
                builder,
                members,
                self.tool_fraction,
                seed,
                mode,
                self.train_guesses,
                self.restate_words,
                self.describe_view,
                self.zoom_fraction,
            )
        return traces

    def _loss(self, batch: SampleBatch, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
        traces = self.traces(batch.samples, seed)
        logprobs, mask = token_logprobs(self.policy, traces, self.ids.pad, self.ids.image)
        weights = mask.to(logprobs.dtype)
        if self.answer_weight != 1:
            for row, trace in enumerate(traces):
                answer = answer_span(trace, self.processor.tokenizer)
                # Column t of the mask scores token t + 1
                weights[row, answer.start - 1 : answer.stop - 1] *= self.answer_weight
        loss = -(logprobs * weights).sum() / weights.sum()
        return loss, {"tool_traces": sum(t.used_high_res for t in traces) / len(traces)}

    def training_step(self, batch: SampleBatch, batch_idx: int) -> torch.Tensor:
        loss, extra = self._loss(batch, mix_seed(self.seed, self.current_epoch, batch_idx))
        self.log("sft/loss", loss, prog_bar=True)
        self.log("sft/tool_traces", extra["tool_traces"])
        return loss

    def validation_step(self, batch: SampleBatch, batch_idx: int) -> None:
        loss, _ = self._loss(batch, mix_seed(self.seed, "val", batch_idx))
        self.log("sft/val_loss", loss, prog_bar=True, batch_size=len(batch))

    def export(self, directory: str) -> None:
        """Save the fine-tuned policy and its processor as a checkpoint folder (model.name_or_path=...)."""
        save_policy_and_processor(self.policy, self.processor, directory)


def run_sft(cfg: Any) -> tuple[float, Path]:
    """The cold-start stage assembled from its Hydra config (``src/sft.py``): fit, then export;
    returns the validation loss and the exported folder."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

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
        zoom_fraction=cfg.sft.zoom_fraction,
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
    return float(trainer.callback_metrics.get("sft/val_loss", float("nan"))), output
