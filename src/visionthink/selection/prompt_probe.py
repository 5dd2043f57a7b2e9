"""Prompt-sensitivity probe (paper C.3): how often does the base model call the resize tool under
each prompt, keep the format, and answer right? Only prompts with a high initial call ratio train
well: a tool the model never calls gets no gradient."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from visionthink.reward.format import format_reward
from visionthink.reward.judges.base import Judge
from visionthink.reward.scoring import judge_trajectories
from visionthink.rollout.driver import EpisodeDriver
from visionthink.rollout.engine import SamplingConfig
from visionthink.rollout.trajectory import Trajectory


def probe(
    driver: EpisodeDriver, samples: Sequence[Any], judge: Judge, sampling: SamplingConfig, rollouts: int, seed: int
) -> dict[str, float]:
    prompt = driver.builder.prompt
    trajectories = driver.run([driver.builder.build(s) for s in samples], sampling, group_size=rollouts, seed=seed)
    verdicts = judge_trajectories(trajectories, judge, "lenient")

    def figures(chosen: list[tuple[Trajectory, Any]]) -> dict[str, float]:
        return {
            "resize_call_ratio": fmean(t.tool_calls > 0 for t, _ in chosen),
            "format_valid_ratio": fmean(
                format_reward(t.turn_texts, 1.0, prompt.tool_protocol, prompt.tools, prompt.resize_tag) > 0
                for t, _ in chosen
            ),
            "accuracy": fmean(bool(v.correct) for _, v in chosen),
        }

    pairs = list(zip(trajectories, verdicts, strict=True))
    result = figures(pairs)
    for flag, name in ((True, "needs_high_res"), (False, "low_res_enough")):
        subset = [(t, v) for t, v in pairs if t.episode.sample.use_tool is flag]
        if subset:
            result.update({f"{key}/{name}": value for key, value in figures(subset).items()})
    return result


def markdown(results: dict[str, dict[str, float]]) -> str:
    keys = ["resize_call_ratio", "format_valid_ratio", "accuracy"]
    split = [f"{k}/{n}" for n in ("needs_high_res", "low_res_enough") for k in ("resize_call_ratio",)]
    columns = keys + [c for c in split if any(c in r for r in results.values())]
    lines = ["| prompt | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figures in results.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{100 * figures[c]:.1f}%" if c in figures else "-" for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["resize_call_ratio", "format_valid_ratio", "accuracy"]
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    width = 0.8 / len(keys)
    names = list(results)
    for index, key in enumerate(keys):
        axis.bar([i + index * width for i in range(len(names))], [results[n][key] for n in names], width, label=key)
    axis.set_xticks([i + width for i in range(len(names))], names)
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of rollouts")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
