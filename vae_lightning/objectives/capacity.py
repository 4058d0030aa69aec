"""The beta-VAE with an annealed capacity (Burgess et al. 2018, "Understanding disentangling in beta-VAE"):
the KL term is held near a target C that rises during training, so the posterior carries information
about the data a few nats at a time.

    loss = recon + beta * | KL - C(step) |          (beta: Burgess et al.'s gamma)
    C(step) = c_min + (c_max - c_min) * min(1, step / capacity_steps)

``step`` counts training batches (VAE updates). KL is the batch mean of the per-example KL, as in
disentanglement_lib (|mean_b KL_b - C|, not mean_b |KL_b - C|): the penalty is a property of the batch,
added to the loss of every example, so ``Terms.loss`` stays [B] and its batch mean is
mean_b recon_b + beta * |mean_b KL_b - C|. C is logged as ``capacity`` (``train/capacity``).

Defaults follow disentanglement_lib (and the paper's dSprites run): gamma = 1000, c_max = 25 nats reached
after 100,000 steps (``iteration_threshold``), from c_min = 0. ``beta`` is gamma here: a sweep over
``objective.beta`` sweeps the weight of the capacity constraint (with the KL schedule, if one is set).
"""

from __future__ import annotations

import torch

from ..checks import require_int, require_number
from ..errors import ConfigError
from .base import Objective, Terms, iwae_bound


class AnnealedVAE(Objective):
    """Training minimises recon + beta * |KL - C(step)| over the batch, with C rising linearly from ``c_min``
    to ``c_max`` nats over ``capacity_steps`` training batches and held there (``capacity_steps=0``: c_max
    from the start)."""

    def __init__(self, num_samples: int = 1, beta: float = 1000.0, kl_schedule: str = "constant",
                 warmup_steps: int = 0, cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto",
                 c_min: float = 0.0, c_max: float = 25.0, capacity_steps: int = 100_000):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.c_min = require_number("c_min", c_min, least=0)
        self.c_max = require_number("c_max", c_max, least=0)
        if self.c_max < self.c_min:
            raise ConfigError("c_max", c_max, f"must be >= c_min={c_min}")
        self.capacity_steps = require_int("capacity_steps", capacity_steps, 0)

    def capacity_at(self, step: int) -> float:
        """C, in nats, after ``step`` training batches."""
        if self.capacity_steps == 0:
            return self.c_max
        return self.c_min + (self.c_max - self.c_min) * min(1.0, step / self.capacity_steps)

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        beta, capacity = self.beta_at(step), self.capacity_at(step)
        log_px_z, log_ratio, kl, kl_per_dim = self.sample_terms(x, q, decode, prior, likelihood, with_iwae)
        recon = -log_px_z.mean(dim=0)  # [B]
        penalty = beta * (kl.mean() - capacity).abs()  # of the batch: 0-dim
        iwae = iwae_bound(log_px_z + log_ratio) if with_iwae else None
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=recon + penalty, iwae=iwae, kl_per_dim=kl_per_dim,
                     beta=beta, extras={"capacity": torch.full_like(recon, capacity)})
