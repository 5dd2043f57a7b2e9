"""LoRA through PEFT: only the adapters train and sit in the optimizer, and the KL reference is
the same model with its adapters off (no second copy of the weights)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from visionthink.errors import InputError
from visionthink.models.family import family_of

# Every linear layer of a Qwen language model's blocks (attention and MLP)
LANGUAGE_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """``model.lora``: low-rank adapters instead of full fine-tuning."""

    # The adapters' rank; 0 trains every weight (no adapters)
    rank: int = 0
    # Scales the adapters' output by alpha / rank
    alpha: float = 32.0
    # The linear layers that get adapters, by the last part of their module name
    target_modules: list[str] = field(default_factory=lambda: list(LANGUAGE_LINEAR_LAYERS))
    # Adapters in the vision tower's layers of those names too (else the tower keeps its weights)
    vision: bool = False
    # 0 keeps the log-probs of a step deterministic, as the importance ratio assumes
    dropout: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": list(self.target_modules)}


def adapter_targets(policy: Any, settings: LoraSettings) -> list[str]:
    """The full names of the linear layers that get adapters; an entry of ``target_modules``
    that names none of them is an InputError."""
    is_vision = family_of(policy).is_vision_parameter
    linear = [
        name
        for name, module in policy.named_modules()
        if isinstance(module, torch.nn.Linear) and (settings.vision or not is_vision(name))
    ]
    wanted = set(settings.target_modules)
    targets = [name for name in linear if name.rsplit(".", 1)[-1] in wanted]
    found = {name.rsplit(".", 1)[-1] for name in targets}
    missing = [entry for entry in settings.target_modules if entry not in found]
    if missing:
        where = "the model" if settings.vision else "the language model (model.lora.vision=false)"
        available = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise InputError(
            f"model.lora.target_modules: {', '.join(missing)} names no linear layer of {where}",
            f"Use names of its linear layers: {', '.join(available)}",
        )
    return targets


def attach_lora(policy: Any, settings: LoraSettings) -> Any:
    """The policy wrapped by PEFT with fresh adapters (B = 0: the same outputs as before); only
    the adapters require gradients."""
    from peft import LoraConfig, get_peft_model

    if settings.rank < 0:
        raise InputError(f"model.lora.rank={settings.rank}", "Use 0 (no adapters) or a positive rank")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=adapter_targets(policy, settings),
    )
    return get_peft_model(policy, config)


def peft_model(model: Any) -> Any | None:
    """The PEFT wrapper inside ``model`` (also under FSDP's), or None."""
    from peft import PeftModel

    return next((module for module in model.modules() if isinstance(module, PeftModel)), None)


@contextmanager
def reference_model(policy: Any, reference: Any) -> Iterator[Any]:
    """The frozen KL reference: its own copy, or, when ``reference`` is the policy itself (LoRA),
    the policy computing with its base weights only (adapters off)."""
    if reference is not policy:
        yield reference
        return
    with peft_model(policy).disable_adapter():
        yield policy


def adapter_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters' entries of a state dict (what a LoRA checkpoint keeps)."""
    return {name: tensor for name, tensor in state_dict.items() if "lora_" in name}


def adapted_policy(policy: Any, settings: dict[str, Any], adapters: dict[str, torch.Tensor]) -> Any:
    """``policy`` (the base weights) under PEFT with ``adapters`` (a checkpoint's, in PEFT naming)."""
    wrapped = attach_lora(policy, LoraSettings(**settings))
    result = wrapped.load_state_dict(adapters, strict=False)
    missing = [name for name in result.missing_keys if "lora_" in name]
    if result.unexpected_keys or missing:
        raise InputError(
            f"the checkpoint's adapters do not fit the model ({len(result.unexpected_keys)} unexpected, "
            f"{len(missing)} missing, e.g. {(result.unexpected_keys + missing)[0]})",
            "Evaluate it with the base model it was trained from (model.name_or_path)",
        )
    return wrapped
