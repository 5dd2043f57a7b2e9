"""What the sharded strategies need to know about the model, for any model family."""

from __future__ import annotations

from torch import nn


class TransformerBlocks:
    """FSDP's units of sharding: one per block the model's transformers class keeps whole on one
    device (its ``_no_split_modules``: the decoder layers and the vision blocks), so the FSDP
    config names no model class. FSDP visits modules parents first, so a model announces its block
    names before its blocks are met."""

    def __init__(self) -> None:
        self.block_names: set[str] = set()

    def __call__(self, module: nn.Module) -> bool:
        self.block_names.update(getattr(module, "_no_split_modules", None) or ())
        return type(module).__name__ in self.block_names
