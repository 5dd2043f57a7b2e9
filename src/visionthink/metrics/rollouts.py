"""What a batch of rollouts did: accuracy, rewards, resize decisions and visual-token cost."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from visionthink.episode.tools import FIRST_VIEW
from visionthink.reward.scoring import RolloutScore
from visionthink.rollout.trajectory import Trajectory


def _mean(values: Sequence[float]) -> float:
    return fmean(values) if values else 0.0


def tool_metrics(trajectories: Sequence[Trajectory], tool_sources: Sequence[str] = ()) -> dict[str, float]:
    """Per tool (``tool_sources``, and any other a trajectory shows): the share of rollouts it brought
    an image to, and the mean visual tokens per rollout by source (the first view included)."""
    sources = dict.fromkeys([*tool_sources, *(s for t in trajectories for s in t.image_sources[1:])])
    metrics = {f"tool_calls/{s}": _mean([float(s in t.image_sources) for t in trajectories]) for s in sources}
    for source in (FIRST_VIEW, *sources):
        metrics[f"visual_tokens/{source}"] = _mean([t.visual_tokens_from(source) for t in trajectories])
    hits = zoom_hits(trajectories)
    if hits:
        metrics["zoom_on_target"] = _mean(hits)
    return metrics


def zoom_hits(trajectories: Sequence[Trajectory]) -> list[float]:
    """For each zoom that brought back a crop of a sample with a known target (``info.label_box``,
    pixels of the original image): 1.0 if the crop holds the target's centre. Did the model look
    where the detail is?"""
    hits = []
    for trajectory in trajectories:
        sample = trajectory.episode.sample
        target = sample.info.get("label_box")
        if target is None:
            continue
        # The crops are boxes of the full-resolution view, which may be the original resized
        full_width, full_height = trajectory.episode.high_view.image.size
        centre_x = (target[0] + target[2]) / 2 * full_width / sample.image.width
        centre_y = (target[1] + target[3]) / 2 * full_height / sample.image.height
        regions = [turn.region for turn in trajectory.turns if turn.region is not None]
        for source, (left, top, right, bottom) in zip(trajectory.image_sources[1:], regions, strict=True):
            if source == "zoom":
                hits.append(float(left <= centre_x <= right and top <= centre_y <= bottom))
    return hits


def rollout_metrics(
    trajectories: Sequence[Trajectory], scores: Sequence[RolloutScore] | None = None, tool_sources: Sequence[str] = ()
) -> dict[str, float]:
    """Means over rollouts. ``visual_token_ratio`` compares with always using the high-resolution image.
    ``tool_sources``: the offered tools' sources (resize, zoom), reported even when no rollout called them."""
    if not trajectories:
        return {}
    metrics = {
        "resize_ratio": _mean([float(t.used_high_res) for t in trajectories]),
        "tool_call_ratio": _mean([float(t.tool_calls > 0) for t in trajectories]),
        "visual_tokens": _mean([t.visual_tokens for t in trajectories]),
        "visual_token_ratio": sum(t.visual_tokens for t in trajectories)
        / max(1, sum(t.episode.high_view.visual_tokens for t in trajectories)),
        "response_tokens": _mean([t.generated_tokens for t in trajectories]),
        "turns": _mean([len(t.turns) for t in trajectories]),
        "answered_ratio": _mean([float(t.final_answer is not None) for t in trajectories]),
        # Rollouts cut by max_new_tokens: a budget shorter than a tool call silently forbids the tool.
        "truncated_ratio": _mean([float(any(turn.truncated for turn in t.turns)) for t in trajectories]),
        # Attempts to ask that never brought the image: a cost of asking the policy learns from
        "failed_tool_call_ratio": _mean([float(t.broken_tool_calls > 0) for t in trajectories]),
    }
    metrics.update(tool_metrics(trajectories, tool_sources))
    if scores is not None:
        metrics.update(
            reward=_mean([s.reward for s in scores]),
            accuracy=_mean([s.accuracy > 0 for s in scores]),
            format=_mean([s.format for s in scores]),
            penalty=_mean([s.penalty for s in scores]),
            invalid_ratio=_mean([not s.valid for s in scores]),
        )
        # Does asking pay? Accuracy of the rollouts that got the image against those that answered
        # from the first view without trying to ask (a broken call counts in neither)
        branches = {
            "resized": [s for t, s in zip(trajectories, scores, strict=True) if t.used_high_res],
            "direct": [
                s for t, s in zip(trajectories, scores, strict=True) if not t.used_high_res and not t.broken_tool_calls
            ],
        }
        for branch, branch_scores in branches.items():
            if branch_scores:
                metrics[f"accuracy/{branch}"] = _mean([s.accuracy > 0 for s in branch_scores])
    for label, name in ((True, "needs_high_res"), (False, "low_res_enough")):
        subset = [t for t in trajectories if t.episode.sample.use_tool is label]
        if subset:
            metrics[f"resize_ratio/{name}"] = _mean([float(t.used_high_res) for t in subset])
            metrics.update(
                {f"{k}/{name}": v for k, v in tool_metrics(subset, tool_sources).items() if k.startswith("tool_calls/")}
            )
            if scores is not None:
                index = {id(t): s for t, s in zip(trajectories, scores, strict=True)}
                metrics[f"accuracy/{name}"] = _mean([index[id(t)].accuracy > 0 for t in subset])
    return metrics
