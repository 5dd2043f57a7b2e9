"""Lightning callbacks that show people what the policy is doing."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger


class RolloutSampleLogger(L.Callback):
    """After the first step and every N optimizer steps, log a table of sample trajectories
    (question, answer, turns, whether high resolution was used, reward, and the last image the
    model saw) to MLflow."""

    def __init__(self, every_n_steps: int = 10, max_samples: int = 4):
        self.every_n_steps, self.max_samples = every_n_steps, max_samples
        self._last_logged_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        rollouts = getattr(pl_module, "last_rollouts", None)
        logger = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
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


class StepProgressBar(RichProgressBar):
    """Rich's progress bar for a run bounded by max_steps, whose epochs are unbounded (Lightning
    would describe it as "Epoch 0/-2")."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training':{len(self.validation_description)}}"
