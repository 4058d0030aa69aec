"""Schedules for beta, the weight of the KL term, as a function of the optimiser step."""

from __future__ import annotations

def beta_at(step: int, beta: float, schedule: str = "constant", warmup_steps: int = 0,
            cycle_steps: int = 0, cycle_ratio: float = 0.5) -> float:
    """The beta in use at optimiser step ``step`` (0-based).

    constant: ``beta`` throughout.
    linear:   warm-up from 0 to ``beta`` over ``warmup_steps`` steps, then ``beta``
              (beta = beta * step / warmup_steps while step < warmup_steps).
    cyclical: cyclical annealing (Fu et al. 2019): cycles of ``cycle_steps`` steps;
              in each, beta rises linearly from 0 over the first ``cycle_ratio``
              of the cycle and then stays at ``beta``.
    """
    if schedule == "constant":
        return beta
    if schedule == "linear":
        return beta * min(1.0, step / warmup_steps) if warmup_steps > 0 else beta
    if schedule == "cyclical":
        tau = (step % cycle_steps) / cycle_steps  # position in the cycle, in [0, 1)
        return beta * min(1.0, tau / cycle_ratio)
    raise ValueError(f"Unknown KL schedule {schedule!r}: choose constant, linear or cyclical.")
