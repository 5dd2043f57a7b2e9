"""Loading the policy and its processor: one code path for the tiny model and real checkpoints."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visionthink.errors import InputError
from visionthink.models.family import checkpoint_family
from visionthink.models.lora import LoraSettings, adapted_policy, adapter_state, peft_model
from visionthink.models.tiny import TinyModelSpec, ensure_tiny_checkpoint
from visionthink.paths import OUTPUTS_DIR

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    """Which vision-language model to train.

    ``name_or_path`` is a hub id (``Qwen/Qwen2.5-VL-7B-Instruct``) or a local folder. When it is
    empty, ``tiny`` describes a small random model that is built locally and cached.
    """

    name_or_path: str | None = None
    tiny: TinyModelSpec | None = field(default_factory=TinyModelSpec)
    tiny_name: str = "tiny"
    # Start from the tiny model after the base stage (src/pretrain.py with these overrides),
    # built once and cached; None: the randomly initialised tiny model itself.
    tiny_base: list[str] | None = None
    # Where the tiny model (tiny_models/) and its base (pretrain/) are built; None: outputs/
    cache_dir: str | None = None
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    # Full weights (rank 0) or LoRA adapters (conf/model/lora/)
    lora: LoraSettings = field(default_factory=LoraSettings)

    def resolve_path(self) -> str:
        if self.name_or_path:
            return str(self.name_or_path)
        if self.tiny is None:
            raise ValueError("model: set `name_or_path` (hub id or local folder) or `tiny` (a local random model).")
        cache = Path(self.cache_dir) if self.cache_dir else OUTPUTS_DIR
        tiny = ensure_tiny_checkpoint(self.tiny, name=self.tiny_name, cache_dir=cache / "tiny_models")
        if self.tiny_base is None:
            return str(tiny)
        from visionthink.models.base import ensure_tiny_base

        return str(ensure_tiny_base(tiny, self.tiny_base, cache))

    @property
    def torch_dtype(self) -> torch.dtype:
        try:
            return _DTYPES[self.dtype]
        except KeyError:
            raise ValueError(f"model.dtype={self.dtype!r} is not one of {sorted(_DTYPES)}") from None


def _check_local_path(path: str) -> None:
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not (Path(path).expanduser() / "config.json").exists():
        raise FileNotFoundError(
            f"model path {path!r} has no config.json. Point model.name_or_path at a Hugging Face "
            "checkpoint folder (the one holding config.json and *.safetensors) or at a hub id."
        )


def load_processor(path: str, pixel_bounds: dict[str, int] | None = None):
    """The processor of a checkpoint folder or hub id, built by its model family; ``pixel_bounds``
    (``{"shortest_edge": min, "longest_edge": max}``) comes from the resolution policy."""
    _check_local_path(path)
    return checkpoint_family(path).load_processor(path, pixel_bounds)


def load_policy(config: ModelConfig, path: str | None = None):
    """Load the policy through transformers' auto class (no ``trust_remote_code``: the model
    classes ship with transformers), refusing a model no family handles."""
    from transformers import AutoModelForImageTextToText

    path = path or config.resolve_path()
    _check_local_path(path)
    checkpoint_family(path)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=config.torch_dtype, attn_implementation=config.attn_implementation
    )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def load_policy_and_processor(config: ModelConfig, pixel_bounds: dict[str, int] | None = None):
    """``(path, policy, processor)`` from one resolved path: what every entry point starts from."""
    path = config.resolve_path()
    return path, load_policy(config, path), load_processor(path, pixel_bounds)


def save_policy_and_processor(
    policy, processor, directory: str | Path, state_dict: dict | None = None, adapters: dict | None = None
) -> Path:
    """A ``save_pretrained`` folder that transformers, vLLM and ``model.name_or_path`` load;
    ``state_dict`` gives the full weights of a sharded policy. A LoRA policy is written with its
    adapters merged in, and its adapters alone (PEFT's format) in ``<directory>/adapter``
    (``adapters``: gathered from a sharded one)."""
    from visionthink.models.processor import write_video_processor_config
    from visionthink.sync.gather import adapter_parameters, full_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lora = peft_model(policy)
    if lora is not None:
        lora.save_pretrained(directory / "adapter", state_dict=adapters or adapter_parameters(lora))
        if state_dict is None:
            state_dict = full_state_dict(lora)
        policy = lora.get_base_model()
    policy.save_pretrained(directory, state_dict=state_dict)
    processor.save_pretrained(directory)
    processor.tokenizer.save_pretrained(directory)
    write_video_processor_config(directory, processor)
    return directory


def load_trained_policy(
    config: ModelConfig, checkpoint: str | None, processor_size: dict, merge_adapters: bool = True
) -> tuple[str, Any, Any]:
    """``(path, policy, processor)`` in eval mode; the policy carries ``checkpoint``'s weights (a
    training checkpoint of src/train.py) when one is given. A LoRA checkpoint's adapters are
    merged into the base weights, or kept as a PEFT model (``merge_adapters=False``)."""
    if checkpoint is not None and not Path(checkpoint).exists():
        raise InputError(
            f"checkpoint {checkpoint} does not exist", "Pass a training checkpoint (.ckpt) or checkpoint=null"
        )
    path, policy, processor = load_policy_and_processor(config, processor_size)
    if checkpoint is not None:
        contents = read_checkpoint(Path(checkpoint))
        weights = policy_weights(contents["state_dict"])
        if not weights:
            raise InputError(
                f"checkpoint {checkpoint} holds no policy weights", "Pass a checkpoint written by src/train.py"
            )
        if contents.get("lora"):
            # Adapters (and, from FSDP, the base weights too): merged into the base model
            policy = adapted_policy(policy, contents["lora"], adapter_state(weights))
            policy = policy.merge_and_unload() if merge_adapters else policy
        else:
            policy.load_state_dict(weights)
    return path, policy.eval(), processor


def policy_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The policy's entries of a LightningModule's state dict, in Hugging Face (or PEFT) naming."""
    return {k.removeprefix("policy."): v for k, v in state_dict.items() if k.startswith("policy.")}


def checkpoint_policy(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The policy's weights in a training checkpoint, in Hugging Face naming."""
    return policy_weights(read_checkpoint(checkpoint)["state_dict"])


def read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """A Lightning checkpoint as one dict (``state_dict`` and the rest): a single file, the
    directory FSDP's sharded checkpoints are (torch's distributed checkpoint format, read whole
    with torch's own conversion, plus Lightning's ``meta.pt``), or the directory DeepSpeed writes
    (gathered into one fp32 state with Lightning's own conversion)."""
    if checkpoint.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            single = Path(tmp) / "whole.ckpt"
            if (checkpoint / ".metadata").is_file():
                from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

                dcp_to_torch_save(checkpoint, single)
                meta = checkpoint / "meta.pt"
                rest = torch.load(meta, map_location="cpu", weights_only=False) if meta.is_file() else {}
                return {**rest, "state_dict": torch.load(single, map_location="cpu", weights_only=True)["model"]}
            from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

            convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint), str(single))
            return torch.load(single, map_location="cpu", weights_only=False)
    return torch.load(checkpoint, map_location="cpu", weights_only=True)
