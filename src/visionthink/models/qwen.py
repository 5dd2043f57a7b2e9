"""The Qwen2-VL / Qwen2.5-VL family (``visionthink.models.family.ModelFamily``): its special
tokens, its processor, how requests become model inputs, where its rope index lives, and the
tiny random model tests and the default run use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from visionthink.models.family import SpecialTokenIds

if TYPE_CHECKING:
    from visionthink.episode.builder import EncodedImage
    from visionthink.models.tiny import TinyModelSpec
    from visionthink.rollout.engine import GenerationRequest

# Attention layers only: a cached prefix serves any continuation (family.ModelFamily)
RECURRENT_LAYERS = False
# Tokens a policy must never generate: a generated placeholder would desynchronise image
# features and image tokens.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# Either ends a turn.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
IMAGE_PAD = "<|image_pad|>"


def special_token_ids(tokenizer: Any) -> SpecialTokenIds:
    def known(tokens: Sequence[str]) -> tuple[int, ...]:
        # A checkpoint's tokenizer may lack some of them.
        ids = tokenizer.convert_tokens_to_ids(list(tokens))
        return tuple(i for i in ids if i is not None and i != tokenizer.unk_token_id)

    return SpecialTokenIds(
        pad=tokenizer.pad_token_id,
        image=tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        stop=known(STOP_TOKENS),
        vision=known(VISION_TOKENS),
    )


def load_processor(path: str, pixel_bounds: dict[str, int] | None = None) -> Any:
    """The image-only processor of a checkpoint folder or hub id. The PIL image processor, because
    the torchvision one cannot load on CPU machines; ``pixel_bounds``
    (``{"shortest_edge": min, "longest_edge": max}``) comes from the resolution policy so that
    token counts and the processor agree."""
    from visionthink.models.processor import ImageOnlyQwen2_5_VLProcessor

    return load_image_only_processor(ImageOnlyQwen2_5_VLProcessor, path, pixel_bounds)


def load_image_only_processor(processor_class: type, path: str, pixel_bounds: dict[str, int] | None) -> Any:
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    kwargs = {"size": dict(pixel_bounds)} if pixel_bounds else {}
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise ValueError(f"The tokenizer at {path!r} has no chat template; Qwen VL instruct checkpoints ship one.")
    return processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)


def is_vision_parameter(name: str) -> bool:
    """Parameters of the vision tower and its patch merger (``model.visual.*``, also under wrappers)."""
    return ".visual." in f".{name}"


def pack_requests(
    requests: Sequence[GenerationRequest], pad_id: int, image_token_id: int, padding_side: str = "left"
) -> dict[str, torch.Tensor]:
    """Pad token ids into one batch (the images come from ``image_inputs``)."""
    length = max(len(r.token_ids) for r in requests)
    input_ids = torch.full((len(requests), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(requests), length), dtype=torch.long)
    for row, request in enumerate(requests):
        ids = torch.tensor(request.token_ids, dtype=torch.long)
        span = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span], attention_mask[row, span] = ids, 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": mm_token_type_ids(input_ids, attention_mask, image_token_id),
    }


def mm_token_type_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """1 at the real (unpadded) image placeholders, 0 elsewhere."""
    return (input_ids == image_token_id).int() * attention_mask.int()


def image_inputs(model: Any, images: Sequence[EncodedImage], share: bool = True) -> dict[str, Any]:
    """Forward arguments for a batch's images, in sequence order. With ``share``, an image that
    occurs more than once (the high-resolution image each rollout of a group that asked received,
    the prompt image of G rollouts) goes through the vision tower once: the model places its
    features at every occurrence and autograd sums their gradients. ``generate`` takes only
    ``pixel_values`` (``share=False``)."""
    return encoded_image_inputs(model, images, share, lambda features, order: BaseModelOutputWithPooling(
        pooler_output=tuple(features.pooler_output[i] for i in order)
    ))  # fmt: skip


def encoded_image_inputs(
    model: Any, images: Sequence[EncodedImage], share: bool, repeat: Callable[[Any, list[int]], Any]
) -> dict[str, Any]:
    """``image_inputs`` of a family whose vision tower output ``repeat(features, order)`` lays out
    per occurrence (``order``: each image's index among the distinct ones)."""
    if not images:
        return {}
    device = next(model.parameters()).device
    grid = torch.stack([image.grid_thw for image in images]).to(device)
    slots: dict[int, int] = {}  # image object -> its index among the distinct images
    distinct: list[EncodedImage] = []
    for image in images:
        if id(image) not in slots:
            slots[id(image)] = len(distinct)
            distinct.append(image)
    if not share or len(distinct) == len(images):
        pixel_values = torch.cat([image.pixel_values for image in images]).to(device, model.dtype)
        return {"pixel_values": pixel_values, "image_grid_thw": grid}
    features = rope_model(model).get_image_features(
        torch.cat([image.pixel_values for image in distinct]).to(device, model.dtype),
        torch.stack([image.grid_thw for image in distinct]).to(device),
        return_dict=True,
    )
    shared = repeat(features, [slots[id(image)] for image in images])
    return {"mm_encoder_outputs": {"image": shared}, "image_grid_thw": grid}


def rope_positions(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int, image_grid_thw: Any
) -> torch.Tensor:
    """3-D M-RoPE positions (3, B, L) of whole sequences, padding anywhere in them, from the
    model's own ``get_rope_index`` (``image_grid_thw``: every image of the batch, in order)."""
    positions, _ = rope_model(model).get_rope_index(
        input_ids,
        mm_token_type_ids=mm_token_type_ids(input_ids, attention_mask, image_token_id),
        image_grid_thw=image_grid_thw,
        attention_mask=attention_mask,
    )
    return positions


def rope_model(model: Any) -> Any:
    """The inner ``Qwen2_5_VLModel`` (which owns ``get_rope_index``), also through PEFT wrappers."""
    inner = model
    while not hasattr(inner, "get_rope_index"):
        inner = inner.model
    return inner


def tiny_processor(tokenizer: Any, chat_template: str) -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from visionthink.models.processor import ImageOnlyQwen2_5_VLProcessor

    return ImageOnlyQwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(), tokenizer=tokenizer, chat_template=chat_template
    )


def mrope_section(head_dim: int) -> list[int]:
    """Split half the head dimension into (temporal, height, width) like Qwen's [16, 24, 24] for 128."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def tiny_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    """A random Qwen2.5-VL of ``spec``'s sizes (window attention in all vision layers but the last)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text_config = tiny_text_config(
        spec,
        tokenizer,
        {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section(spec.head_dim)},
    )
    vision_config = tiny_vision_config(spec, fullatt_block_indexes=[spec.vision_depth - 1], window_size=112)
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **special_token_config(tokenizer),
    )
    torch.manual_seed(spec.seed)
    return Qwen2_5_VLForConditionalGeneration(config)


def tiny_text_config(spec: TinyModelSpec, tokenizer: Any, rope_parameters: dict[str, Any]) -> dict[str, Any]:
    """The language model settings of a tiny Qwen VL model of ``spec``'s sizes."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden_size,
        intermediate_size=spec.text_intermediate_size,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=32768,
        rope_parameters=rope_parameters,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )


def tiny_vision_config(spec: TinyModelSpec, **family_settings: Any) -> dict[str, Any]:
    """The vision tower settings of a tiny Qwen VL model of ``spec``'s sizes."""
    return dict(
        depth=spec.vision_depth,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_heads=spec.vision_heads,
        out_hidden_size=spec.text_hidden_size,
        **family_settings,
    )


def special_token_config(tokenizer: Any) -> dict[str, int]:
    """The token ids a Qwen VL config names, from ``tokenizer``."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }
