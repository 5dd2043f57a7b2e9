"""Model families: what the framework needs from one kind of vision-language checkpoint.

The rollout engines, the GRPO log-probs and the trainers find a checkpoint's family by its
``config.model_type`` and never import a family's module. Supporting another family (another
VLM) is one module in this package that provides ``ModelFamily`` (``qwen.py`` is the example),
one line in ``FAMILY_MODULES``, and a config in ``conf/model/``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from visionthink.errors import InputError
from visionthink.models.sharding import is_sharded

if TYPE_CHECKING:
    from visionthink.episode.builder import EncodedImage
    from visionthink.models.tiny import TinyModelSpec
    from visionthink.rollout.engine import GenerationRequest

# config.model_type -> the module of this package that implements ModelFamily for it.
FAMILY_MODULES = {
    "qwen2_5_vl": "visionthink.models.qwen",
    "qwen2_vl": "visionthink.models.qwen",
    "qwen3_vl": "visionthink.models.qwen3_vl",
    "qwen3_5": "visionthink.models.qwen3_5",
}


@dataclass(frozen=True)
class SpecialTokenIds:
    """The token ids the framework places or checks by hand."""

    pad: int
    # An image's placeholder; the processor repeats it once per visual token.
    image: int
    # Either ends a turn; the first closes a turn cut off by the token budget.
    stop: tuple[int, ...]
    # Never generated: a generated placeholder would desynchronise image features and tokens.
    vision: tuple[int, ...]


class ModelFamily(Protocol):
    """Implemented by a module of this package (PEP 544: modules can satisfy protocols)."""

    # Layers with a recurrent state over the whole sequence (Gated DeltaNet) beside attention: such
    # a state cannot be cut back to a prefix, and padding inside a sequence passes through it, so
    # no forward continues from another sequence's cache (turn-2 reuse, a group's shared prefill,
    # the training pass over a shared prompt): every sequence runs whole.
    RECURRENT_LAYERS: bool

    def special_token_ids(self, tokenizer: Any) -> SpecialTokenIds: ...

    def is_vision_parameter(self, name: str) -> bool: ...

    def load_processor(self, path: str, pixel_bounds: dict[str, int] | None) -> Any: ...

    def pack_requests(
        self, requests: Sequence[GenerationRequest], pad_id: int, image_token_id: int, padding_side: str = "left"
    ) -> dict[str, torch.Tensor]: ...

    def image_inputs(self, model: Any, images: Sequence[EncodedImage], share: bool = True) -> dict[str, Any]: ...

    def rope_positions(
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_token_id: int,
        image_grid_thw: Any,
    ) -> torch.Tensor: ...

    # The tiny random model of this family (model.tiny.family), built locally for tests and the default run
    def tiny_processor(self, tokenizer: Any, chat_template: str) -> Any: ...

    def tiny_model(self, spec: TinyModelSpec, tokenizer: Any) -> Any: ...


def family_for(model_type: str, where: str = "the model") -> ModelFamily:
    module = FAMILY_MODULES.get(model_type)
    if module is None:
        raise InputError(
            f"{where} is a {model_type!r} model, which no model family in visionthink.models handles "
            f"(known: {', '.join(sorted(FAMILY_MODULES))})",
            "Use a checkpoint of a known family, or add one: a module like visionthink/models/qwen.py "
            "listed in visionthink.models.family.FAMILY_MODULES",
        )
    return importlib.import_module(module)  # type: ignore[return-value]


def family_of(model: Any) -> ModelFamily:
    """The family of a loaded policy (also under PEFT wrappers, which forward ``config``)."""
    return family_for(model.config.model_type)


def continues_from_shared_caches(model: Any) -> bool:
    """Whether the fast paths that continue from a shared or earlier cache apply to ``model``."""
    return not family_of(model).RECURRENT_LAYERS


def model_inputs(
    model: Any,
    requests: Sequence[GenerationRequest],
    pad_id: int,
    image_token_id: int,
    padding_side: str = "left",
    share_images: bool = True,
) -> dict[str, Any]:
    """Forward arguments of ``requests`` on the model's device: the token batch and the images,
    each as the model's family packs them."""
    family = family_of(model)
    device = next(model.parameters()).device
    tokens = family.pack_requests(requests, pad_id, image_token_id, padding_side)
    images = [image for request in requests for image in request.images]
    # Sharing encodes the images outside the model's forward, which a sharded model's weights
    # are gathered for only
    share_images = share_images and not is_sharded(model)
    return {**{k: v.to(device) for k, v in tokens.items()}, **family.image_inputs(model, images, share_images)}


def checkpoint_family(path: str) -> ModelFamily:
    """The family of a checkpoint folder or hub id, from its ``config.json`` (read as a dict, so a
    model type transformers does not know still gets this module's error)."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(path)
    return family_for(config.get("model_type", "unknown"), where=f"the checkpoint {path}")
