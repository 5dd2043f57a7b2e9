"""One question about one image, answered the way a trained policy would in evaluation
(``src/infer.py``): greedy, multi-turn, with the visual tokens it spent."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate

from visionthink.data.images import load_image
from visionthink.data.sample import Sample
from visionthink.episode.builder import EpisodeBuilder
from visionthink.errors import InputError
from visionthink.models.loading import load_trained_policy
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig, TransformersRolloutEngine


def infer(cfg: Any) -> dict[str, Any]:
    """The turns, whether it asked for the full image, the visual tokens and the answer."""
    torch.manual_seed(cfg.seed)
    if not str(cfg.question).strip():
        raise InputError("the question is empty", 'Pass question="..."')
    resolution = instantiate(cfg.resolution)
    image = load_image(str(cfg.image))
    resolution.check(image)
    _, policy, processor = load_trained_policy(
        instantiate(cfg.model), cfg.get("checkpoint"), resolution.processor_size()
    )
    builder = EpisodeBuilder(processor, instantiate(cfg.prompt), resolution)
    driver = EpisodeDriver(
        TransformersRolloutEngine(policy, processor.tokenizer),
        builder,
        RolloutConfig(group_size=1, max_images=cfg.max_images, max_turns=cfg.max_turns),
    )
    sample = Sample(sample_id="input", image=image, question=str(cfg.question), answer="?")
    (trajectory,) = driver.run(
        [builder.build(sample, cfg.mode)], SamplingConfig(greedy=True, max_new_tokens=cfg.max_new_tokens)
    )
    answer = trajectory.final_answer
    report = {
        "mode": cfg.mode,
        "turns": trajectory.turn_texts,
        "used_high_res": trajectory.used_high_res,
        "visual_tokens": {
            "first_view": trajectory.images[0].visual_tokens,
            # Everything the tool calls brought back, and by tool (resize, zoom)
            "high_res": trajectory.tool_visual_tokens,
            "by_tool": {s: trajectory.visual_tokens_from(s) for s in dict.fromkeys(trajectory.image_sources[1:])},
            "total": trajectory.visual_tokens,
            "always_high_res": trajectory.episode.high_view.visual_tokens,
        },
        "answer": answer.answer if answer else None,
        "end_reason": trajectory.end_reason,
    }
    return report
