"""The optimizer from config, with the vision tower at its own learning rate.

A randomly initialised vision tower trained at the language model's learning rate collapses to
a direction shared by every image (measured on the tiny models), so the tower and its merger get
``vision_lr_scale`` times the learning rate; 0 freezes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from visionthink.models.family import family_of


def check_vision_lr_scale(scale: float) -> None:
    if scale < 0:
        raise ValueError(f"optim.vision_lr_scale must be >= 0 (0 freezes the vision tower), got {scale}")


def freeze_vision_tower(policy: Any, vision_lr_scale: float) -> None:
    """With scale 0 the tower takes no gradient (before any wrapper registers its parameters)."""
    check_vision_lr_scale(vision_lr_scale)
    if vision_lr_scale == 0:
        is_vision = family_of(policy).is_vision_parameter
        for name, parameter in policy.named_parameters():
            if is_vision(name):
                parameter.requires_grad_(False)


def build_optimizer(factory: Callable[..., torch.optim.Optimizer], policy: Any, vision_lr_scale: float):
    """Two parameter groups, ``language`` (everything but the tower) and ``vision``."""
    lr = factory.keywords["lr"]
    language, vision = [], []
    is_vision = family_of(policy).is_vision_parameter
    for name, parameter in policy.named_parameters():
        if parameter.requires_grad:
            (vision if is_vision(name) else language).append(parameter)
    groups = [{"params": language, "name": "language"}]
    if vision:
        groups.append({"params": vision, "lr": lr * vision_lr_scale, "name": "vision"})
    return factory(params=groups)


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"lr": ..., "lr_vision": ...}`` as the schedule has set them now."""
    rates = {}
    for group in optimizer.param_groups:
        rates["lr" if group.get("name", "language") == "language" else f"lr_{group['name']}"] = float(group["lr"])
    return rates


def configure_optimization(
    policy: Any, optimizer_factory: Callable, scheduler_factory: Callable | None, vision_lr_scale: float, steps: int
) -> Any:
    """What a LightningModule's ``configure_optimizers`` returns: the optimizer, and its per-step
    schedule when one is configured."""
    optimizer = build_optimizer(optimizer_factory, policy, vision_lr_scale)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer=optimizer, num_training_steps=max(1, steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parameter_summary(policy: Any, vision_lr_scale: float, reference: bool) -> str:
    """One line: what trains, at which rate, and whether a frozen reference copy is held."""
    total = sum(p.numel() for p in policy.parameters())
    is_vision = family_of(policy).is_vision_parameter
    vision = sum(p.numel() for n, p in policy.named_parameters() if is_vision(n))
    rate = "frozen" if vision_lr_scale == 0 else f"lr x {vision_lr_scale:g}"
    return (f"policy: {total / 1e6:.2f}M parameters, vision tower {vision / 1e6:.2f}M ({rate})"
            + ("; a frozen reference copy for the KL term" if reference else ""))  # fmt: skip
