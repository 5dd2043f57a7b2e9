"""Rollouts with a colocated vLLM engine (GPU), token in / token out.

The same episode driver runs the multi-turn tool loop; this engine only continues token
sequences. Image placeholders are collapsed to one ``<|image_pad|>`` per image and vLLM expands
them again with the same Qwen2-VL image processing (pixel bounds from the resolution policy), so
the token counts agree with ours. Prefix caching makes the second turn reuse the first.
Each request carries its own sampling seed, so rollouts do not depend on batching.

vllm is a GPU-only extra (``requirements-gpu.txt``); everything here that does not need it (request
building, sampling parameters, weight gathering) is importable and tested on CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from visionthink.errors import InputError
from visionthink.rollout.engine import GenerationRequest, GenerationResult, SamplingConfig

EXTRAS = "requirements-gpu.txt"


@dataclass(frozen=True)
class VLLMSettings:
    tensor_parallel_size: int = 1
    # Share of GPU memory vLLM may take (weights + KV cache); the trainer needs the rest.
    gpu_memory_utilization: float = 0.4
    max_model_len: int = 8192
    enable_prefix_caching: bool = True
    # Release GPU memory between rollouts: 1 offloads weights to CPU and drops the KV cache;
    # 2 discards the weights too (they are pushed again after waking up). 0: never sleep.
    sleep_level: int = 1
    enforce_eager: bool = False
    dtype: str = "bfloat16"
    # Extra keyword arguments for vllm.LLM
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise InputError(
            "rollout=vllm needs the vllm package, which is not installed",
            f"On a CUDA machine run `pip install -r {EXTRAS}` (vllm pins its own torch and transformers), or use rollout=hf",
        )


def collapse_image_pads(token_ids: Sequence[int], image_token_id: int) -> list[int]:
    """One ``<|image_pad|>`` per image: vLLM expands placeholders itself."""
    collapsed: list[int] = []
    for token in token_ids:
        if token == image_token_id and collapsed and collapsed[-1] == image_token_id:
            continue
        collapsed.append(token)
    return collapsed


def vllm_prompt(request: GenerationRequest, image_token_id: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"prompt_token_ids": collapse_image_pads(request.token_ids, image_token_id)}
    if request.images:
        prompt["multi_modal_data"] = {"image": [image.image for image in request.images]}
    return prompt


def sampling_kwargs(sampling: SamplingConfig, seed: int | None, stop_ids: Sequence[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request."""
    kwargs: dict[str, Any] = dict(
        max_tokens=sampling.max_new_tokens,
        stop_token_ids=list(stop_ids),
        logprobs=0,  # the sampled token's log-prob, for the rollout/trainer mismatch
        detokenize=False,
        skip_special_tokens=False,
        n=1,
    )
    if sampling.greedy:
        return {**kwargs, "temperature": 0.0}
    return {
        **kwargs,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "seed": seed,
    }


def full_parameters(policy: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) pairs in Hugging Face naming, whatever shards or wraps the policy:
    FSDP (full state dict), DeepSpeed ZeRO-3 (gathered parameters), PEFT LoRA (merged)."""
    if hasattr(policy, "merge_adapter"):  # PEFT: push base weights with the adapter merged in
        policy.merge_adapter()
        try:
            for name, tensor in policy.get_base_model().state_dict().items():
                if "lora_" not in name:
                    yield name.replace(".base_layer", ""), tensor
        finally:
            policy.unmerge_adapter()
        return
    parameters = list(policy.parameters())
    if any(hasattr(p, "ds_id") for p in parameters):  # DeepSpeed ZeRO-3
        import deepspeed

        with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
            yield from ((n, p.data) for n, p in policy.named_parameters())
        return
    if type(policy).__name__.startswith("FSDP") or any(type(p).__name__ == "DTensor" for p in parameters):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True))
        yield from state.items()
        return
    yield from policy.state_dict().items()


class VLLMRolloutEngine:
    def __init__(self, model_path: str, tokenizer: Any, resolution: Any, settings: VLLMSettings, seed: int = 0):
        require_vllm()
        import vllm

        self.settings = settings
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        from visionthink.rollout.hf_engine import STOP_TOKENS, token_ids

        self.stop_ids = token_ids(tokenizer, STOP_TOKENS)
        self.llm = vllm.LLM(
            model=model_path,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=settings.max_model_len,
            enable_prefix_caching=settings.enable_prefix_caching,
            enable_sleep_mode=settings.sleep_level > 0,
            enforce_eager=settings.enforce_eager,
            dtype=settings.dtype,
            seed=seed,
            limit_mm_per_prompt={"image": 2},
            mm_processor_kwargs={"min_pixels": resolution.processor_min_pixels, "max_pixels": resolution.max_pixels},
            **settings.engine_kwargs,
        )
        self.asleep = False
        self.weights_stale = False

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        import vllm

        self.wake()
        if self.weights_stale:
            raise RuntimeError("vLLM slept at level 2 and lost its weights; push them (sync) before generating")
        params = [vllm.SamplingParams(**sampling_kwargs(sampling, r.seed, self.stop_ids)) for r in requests]
        outputs = self.llm.generate([vllm_prompt(r, self.image_token_id) for r in requests], params, use_tqdm=False)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            logprobs = None
            if completion.logprobs:
                logprobs = [
                    step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids, strict=True)
                ]
            results.append(
                GenerationResult(
                    token_ids=list(completion.token_ids), stopped=completion.finish_reason == "stop", logprobs=logprobs
                )
            )
        return results

    def load_weights(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Load new policy weights into vLLM's model, then drop prefix-cache entries computed with the old ones."""
        self.wake()
        self.llm.collective_rpc("load_weights", kwargs={"weights": list(weights)})
        self.llm.reset_prefix_cache()
        self.weights_stale = False

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def end_episodes(self) -> None:
        if self.settings.sleep_level > 0:
            self.llm.sleep(level=self.settings.sleep_level)
            self.asleep = True
            self.weights_stale = self.settings.sleep_level >= 2


class VLLMWeightSync:
    """After every optimizer step: gather the full weights and load them into vLLM."""

    def __init__(self, engine: VLLMRolloutEngine):
        self.engine = engine
        self.version = 0

    def push(self, policy: Any) -> None:
        self.engine.load_weights(full_parameters(policy))
        self.version += 1
