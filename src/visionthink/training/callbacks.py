"""Lightning callbacks that show people what the policy is doing."""

from __future__ import annotations

import logging
import sys

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger

from visionthink.tracking import log_rollout_traces

log = logging.getLogger(__name__)


def mlflow_logger(trainer: L.Trainer) -> MLFlowLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


class RolloutSampleLogger(L.Callback):
    """After the first step and every N optimizer steps, log a table of sample trajectories
    (question, answer, turns, whether high resolution was used, reward, and the last image the
    model saw) to MLflow, and the same trajectories as traces (one span per turn)."""

    def __init__(self, every_n_steps: int = 4, max_samples: int = 4):
        self.every_n_steps, self.max_samples = every_n_steps, max_samples
        self._last_logged_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        rollouts = getattr(pl_module, "last_rollouts", None)
        logger = mlflow_logger(trainer)
        due = step == 1 or step % self.every_n_steps == 0
        if rollouts is None or logger is None or step == self._last_logged_step or not due:
            return
        if not trainer.is_global_zero:
            return
        self._last_logged_step = step
        trajectories, scores = rollouts
        rows = list(zip(trajectories, scores, strict=True))[: self.max_samples]
        table = {
            "step": [step] * len(rows),
            "question": [t.episode.sample.question for t, _ in rows],
            "answer": [t.episode.sample.answer for t, _ in rows],
            "turns": ["\n---\n".join(t.turn_texts) for t, _ in rows],
            "used_high_res": [t.used_high_res for t, _ in rows],
            "visual_tokens": [t.visual_tokens for t, _ in rows],
            "reward": [s.reward for _, s in rows],
            # The high-resolution image when the model asked for it, else the low-resolution view.
            "last_image_seen": [t.images[-1].image for t, _ in rows],
        }
        logger.experiment.log_table(logger.run_id, data=table, artifact_file=f"rollouts/step_{step:06d}.json")
        log_rollout_traces(logger, step, rows)


class StepProgressBar(RichProgressBar):
    """Rich's progress bar for a run bounded by max_steps, whose epochs are unbounded (Lightning
    would describe it as "Epoch 0/-2")."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training':{len(self.validation_description)}}"


class ProgressLog(L.Callback):
    """One log line every N optimizer steps and one per validation when the console is not a
    terminal (a SLURM job's log file, ``> run.log``), where the progress bar shows nothing until
    the end."""

    TRAIN = {
        "reward": "train/reward", "acc": "train/accuracy", "resize_fine": "train/resize_ratio/needs_high_res",
        "resize_coarse": "train/resize_ratio/low_res_enough", "vis_tokens": "train/visual_tokens",
        "s/step": "system/perf/step_seconds", "judge_invalid": "judge/invalid_rate",
    }  # fmt: skip
    VAL = {
        "acc": "val/accuracy", "resize": "val/resize_ratio", "resize_fine": "val/resize_ratio/needs_high_res",
        "resize_coarse": "val/resize_ratio/low_res_enough", "vis_tokens": "val/visual_tokens",
    }  # fmt: skip

    def __init__(self, every_n_steps: int = 10, when: str = "no_terminal"):
        if when not in ("no_terminal", "always", "never"):
            raise ValueError(f"callbacks.progress_log.when must be no_terminal, always or never, got {when!r}")
        self.every_n_steps = every_n_steps
        self.enabled = when == "always" or (when == "no_terminal" and not sys.stdout.isatty())
        self._last_step = -1

    @staticmethod
    def _line(trainer: L.Trainer, fields: dict[str, str]) -> str:
        metrics = trainer.callback_metrics
        return "  ".join(f"{label} {float(metrics[key]):.4g}" for label, key in fields.items() if key in metrics)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if not self.enabled or not trainer.is_global_zero or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        log.info("step %d/%d  %s", step, trainer.max_steps, self._line(trainer, self.TRAIN))

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.enabled and trainer.is_global_zero and not trainer.sanity_checking:
            log.info("validation at step %d  %s", trainer.global_step, self._line(trainer, self.VAL))


class AccuracyTokensPlot(L.Callback):
    """After every validation, a plot of validation accuracy against visual tokens (as a share of
    always using full resolution), one point per validation so far, logged to MLflow as
    ``plots/accuracy_vs_visual_tokens.png``. Always-low (1/downsample_factor² of the tokens) and
    always-high resolution are marked for reference."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or "val/accuracy" not in metrics or "val/visual_token_ratio" not in metrics:
            return
        self.points.append(
            (trainer.global_step, float(metrics["val/visual_token_ratio"]), float(metrics["val/accuracy"]))
        )
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        low_share = 1 / pl_module.resolution.downsample_factor**2
        logger.experiment.log_figure(logger.run_id, self.figure(low_share), "plots/accuracy_vs_visual_tokens.png")

    def figure(self, low_share: float):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5.6, 3.8))
        for share, label in ((low_share, "always low resolution"), (1.0, "always full resolution")):
            axis.axvline(share, color="0.6", linestyle="--", linewidth=1)
            axis.text(share, 1.02, label, rotation=0, fontsize=7, ha="center", color="0.4")
        steps, shares, accuracies = zip(*self.points, strict=True)
        axis.plot(shares, accuracies, "-", color="C0", alpha=0.4)
        points = axis.scatter(shares, accuracies, c=steps, cmap="viridis", zorder=3)
        figure.colorbar(points, ax=axis, label="optimizer step")
        axis.set_xlim(0, 1.3)
        axis.set_ylim(-0.02, 1.08)
        axis.set_xlabel("visual tokens / always full resolution (incl. the low view)")
        axis.set_ylabel("validation accuracy")
        figure.tight_layout()
        plt.close(figure)
        return figure

    # The points travel with the checkpoint, so a resumed run's plot keeps its history.
    def state_dict(self) -> dict[str, list[tuple[int, float, float]]]:
        return {"points": list(self.points)}

    def load_state_dict(self, state_dict: dict[str, list[tuple[int, float, float]]]) -> None:
        self.points = [tuple(point) for point in state_dict["points"]]
