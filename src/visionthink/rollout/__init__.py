"""Rollouts: the engine interface, the transformers engine and the multi-turn episode driver."""

from visionthink.rollout.driver import EpisodeDriver, RolloutConfig
from visionthink.rollout.engine import GenerationRequest, GenerationResult, RolloutEngine, SamplingConfig
from visionthink.rollout.hf_engine import TransformersRolloutEngine
from visionthink.rollout.trajectory import Trajectory, Turn

__all__ = [
    "EpisodeDriver",
    "GenerationRequest",
    "GenerationResult",
    "RolloutConfig",
    "RolloutEngine",
    "SamplingConfig",
    "Trajectory",
    "TransformersRolloutEngine",
    "Turn",
]
