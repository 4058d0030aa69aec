"""Optimisers and learning-rate schedules from their partials (``model.optimizer``, ``model.lr_scheduler``,
an objective's ``optimizer``). A leaf: it imports nothing of the package, so the builder and the
module both use it."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch


def build_optimizer(make: Callable[..., torch.optim.Optimizer], params: list, precision: str = "32-true"):
    """``make(params)``, with a fused kernel only where it works: not with fp16 loss scaling (which must
    unscale before clipping), and not where the device or dtype has none (the default implementation
    then, with the same maths)."""
    fused = bool(getattr(make, "keywords", {}).get("fused"))
    if fused and precision in ("16-mixed", "16"):
        return make(params, fused=False)
    try:
        return make(params)
    except RuntimeError:
        if not fused:
            raise
        return make(params, fused=False)


def build_lr_scheduler(make: Callable[..., Any], optimizer: torch.optim.Optimizer, total_steps: int) -> dict:
    """Lightning's scheduler dict from ``make(optimizer[, total_steps])`` (total_steps only if it takes it)."""
    takes_total = "total_steps" in inspect.signature(make).parameters
    scheduler = make(optimizer, total_steps=int(total_steps)) if takes_total else make(optimizer)
    return scheduler if isinstance(scheduler, dict) else {"scheduler": scheduler, "interval": "epoch"}
