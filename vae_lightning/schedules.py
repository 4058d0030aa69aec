"""Schedules: beta (the weight of the KL term) against the training batches seen, and learning-rate schedules.

A learning-rate schedule is a partial (``model.lr_scheduler`` in the config) that the model calls
with its optimizer, and with ``total_steps`` (the run's training batches, which are its optimiser steps
unless the objective has an optimiser of its own) when it takes that argument,
as ``torch.optim.lr_scheduler.OneCycleLR`` does. It returns a torch scheduler (stepped every epoch)
or Lightning's dict (``{"scheduler": ..., "interval": "step"}``).
"""

from __future__ import annotations

from typing import Any

import torch

KL_SCHEDULES = ("constant", "linear", "cyclical")


def beta_at(step: int, beta: float, schedule: str = "constant", warmup_steps: int = 0,
            cycle_steps: int = 0, cycle_ratio: float = 0.5) -> float:
    """The beta in use after ``step`` training batches (0-based; see :mod:`vae_lightning.steps`).

    constant: ``beta`` throughout.
    linear:   warm-up from 0 to ``beta`` over ``warmup_steps`` steps, then ``beta``
              (beta = beta * step / warmup_steps while step < warmup_steps).
    cyclical: cyclical annealing (Fu et al. 2019): cycles of ``cycle_steps`` steps;
              in each, beta rises linearly from 0 over the first ``cycle_ratio`` of
              the cycle and then stays at ``beta``.
    """
    if schedule == "constant":
        return beta
    if schedule == "linear":
        return beta * min(1.0, step / warmup_steps) if warmup_steps > 0 else beta
    if schedule == "cyclical":
        tau = (step % cycle_steps) / cycle_steps  # position in the cycle, in [0, 1)
        return beta * min(1.0, tau / cycle_ratio)
    raise ValueError(f"Unknown KL schedule {schedule!r}: choose one of {list(KL_SCHEDULES)}.")


def cosine_annealing(optimizer: torch.optim.Optimizer, total_steps: int, eta_min: float = 0.0) -> dict[str, Any]:
    """From the optimiser's lr down to ``eta_min`` over the whole run, every training batch."""
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total_steps)), eta_min=eta_min)
    return {"scheduler": scheduler, "interval": "step"}


def burda_lr_factor(epoch: int, stages: int = 8) -> float:
    """Burda et al. (2016): stage i lasts 3^i epochs at lr * 10^(-i/7), i = 0..7 (3280 epochs in all)."""
    stage, end = 0, 1
    while epoch >= end and stage < stages - 1:
        stage += 1
        end += 3**stage
    return 10 ** (-stage / 7)


def burda(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Burda et al.'s (2016) stages of 3^i epochs at lr * 10^(-i/7), stepped every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_factor)
