"""Metrics: what the rollouts of a step did (logged to MLflow by the training module)."""

from visionthink.metrics.rollouts import rollout_metrics

__all__ = ["rollout_metrics"]
