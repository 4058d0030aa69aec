"""One count of training progress that every reader shares: the training batches seen.

Each training batch is one update of the VAE. Under automatic optimisation it is also one optimiser
step, and ``trainer.global_step`` counts it; when the objective trains parameters of its own with an
optimiser of its own, the module steps two optimisers per batch and Lightning counts both in
``global_step`` (manual optimisation counts every ``optimizer.step()``). So the batches seen are

    batches_seen = trainer.global_step // optimizer_steps_per_batch

with ``optimizer_steps_per_batch`` an attribute of the module (1 unless its objective owns an
optimiser). It needs no state of its own: a checkpoint's ``global_step`` gives it back on resume.
The beta schedule, the per-batch seeds, the data position on resume, the logging cadence, the NaN
guard, the LR schedule's length and the run's reported ``steps`` all read it.
"""

from __future__ import annotations

import math
from typing import Any


def optimizer_steps_per_batch(module: Any) -> int:
    """How many optimiser steps the module takes per training batch (1 when it does not say)."""
    return int(getattr(module, "optimizer_steps_per_batch", 1)) if module is not None else 1


def batches_seen(trainer: Any) -> int:
    """Training batches done since the run began (its resumes included): the VAE's updates."""
    return trainer.global_step // optimizer_steps_per_batch(trainer.lightning_module)


def batches_done_this_epoch(trainer: Any) -> int:
    """Training batches of the current epoch already done: 0 at an epoch's start, the checkpoint's
    position when a run resumes mid-epoch. From the trainer's public counters, which a resumed run
    restores before its first batch (it assumes the epochs before had as many batches as this one)."""
    per_epoch = trainer.num_training_batches
    if not per_epoch or per_epoch == float("inf"):
        return 0
    accumulate = trainer.accumulate_grad_batches
    updates_done = batches_seen(trainer) - trainer.current_epoch * math.ceil(per_epoch / accumulate)
    return int(max(0, min(per_epoch, updates_done * accumulate)))


def planned_batches(trainer: Any) -> int | float:
    """The training batches the run will take (what an LR schedule's ``total_steps`` counts): Lightning's
    ``estimated_stepping_batches``, whose ``max_steps`` counts optimiser steps, brought back to batches."""
    estimate = trainer.estimated_stepping_batches
    per = optimizer_steps_per_batch(trainer.lightning_module)
    if per == 1 or trainer.max_steps == -1:
        return estimate
    # estimate = min(batches of max_epochs, max_steps); the batches are min(those, max_steps // per).
    return min(estimate, trainer.max_steps // per)
