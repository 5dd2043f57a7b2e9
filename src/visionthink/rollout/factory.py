"""Build the configured rollout engine and its weight sync (one place for training, evaluation
and the research tools)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from visionthink.episode.resolution import ResolutionPolicy
from visionthink.models.loading import ModelConfig, load_trained_policy
from visionthink.rollout.driver import RolloutConfig
from visionthink.rollout.engine import RolloutEngine
from visionthink.rollout.hf_engine import TransformersRolloutEngine
from visionthink.sync import CopyToEngineSync, SharedModuleSync, WeightSync


@dataclass
class RolloutBackend:
    engine: RolloutEngine
    # Makes the engine generate with the policy's current weights (after each update, on resume).
    weight_sync: WeightSync


def check_backend(config: Any) -> None:
    """Fail at start-up, before data and models load, when the backend cannot run here."""
    if config.get("backend") == "vllm":
        from visionthink.rollout.vllm_engine import require_vllm

        require_vllm()


def build_backend(
    config: RolloutConfig, policy: Any, tokenizer: Any, model_path: str, resolution: Any, seed: int = 0
) -> RolloutBackend:
    if config.backend == "vllm":
        from visionthink.rollout.vllm_engine import VLLMRolloutEngine

        engine = VLLMRolloutEngine(model_path, tokenizer, resolution, config.vllm, config.max_images, seed)
        return RolloutBackend(engine, CopyToEngineSync(engine))
    engine = TransformersRolloutEngine(policy, tokenizer, config.reuse_kv_cache)
    return RolloutBackend(engine, SharedModuleSync(engine))


def load_backend(
    model: ModelConfig, checkpoint: str | None, rollout: RolloutConfig, resolution: ResolutionPolicy, seed: int
) -> tuple[Any, RolloutBackend]:
    """The processor and the configured rollout backend, generating with ``checkpoint``'s weights
    when one is given (evaluation and the research tools)."""
    path, policy, processor = load_trained_policy(model, checkpoint, resolution.processor_size())
    backend = build_backend(rollout, policy, processor.tokenizer, path, resolution, seed)
    if checkpoint is not None:
        backend.weight_sync.push(policy)
    return processor, backend
