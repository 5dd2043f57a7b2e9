"""Build the configured rollout engine (one place for training, evaluation and the research tools)."""

from __future__ import annotations

from typing import Any

from visionthink.rollout.driver import RolloutConfig
from visionthink.rollout.hf_engine import TransformersRolloutEngine


def build_engine(
    config: RolloutConfig, policy: Any, tokenizer: Any, model_path: str, resolution: Any, seed: int = 0
) -> Any:
    if config.backend == "vllm":
        from visionthink.rollout.vllm_engine import VLLMRolloutEngine

        return VLLMRolloutEngine(model_path, tokenizer, resolution, config.vllm, seed)
    return TransformersRolloutEngine(policy, tokenizer, config.reuse_kv_cache)
