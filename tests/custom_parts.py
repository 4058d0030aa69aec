"""A part of a user's own, outside the package: a learnable diagonal Gaussian prior N(loc, diag scale^2),
with its closed-form KL from a diagonal Gaussian q registered here. Runs name it by its _target_."""

import math

import torch
from torch import nn

from vae_lightning.checks import require_number
from vae_lightning.kl import register_kl
from vae_lightning.posteriors.diagonal_gaussian import DiagonalGaussian
from vae_lightning.priors.base import Prior


class LearnedDiagonalPrior(Prior):
    def __init__(self, latent_dim: int, init_scale: float = 1.0):
        super().__init__(latent_dim)
        init_scale = require_number("init_scale", init_scale, above=0)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.full((latent_dim,), math.log(init_scale)))

    def log_prob(self, z):
        return (-0.5 * (math.log(2 * math.pi) + 2 * self.log_scale
                        + (z - self.loc).pow(2) * torch.exp(-2 * self.log_scale))).sum(-1)

    def sample(self, num, generator=None):
        return self.loc + self.log_scale.exp() * self._noise((num, self.latent_dim), generator)


@register_kl(DiagonalGaussian, LearnedDiagonalPrior)
def _kl(q, p):
    """KL(N(m, v) || N(loc, s^2)) per dimension: log s - log sqrt(v) + (v + (m - loc)^2) / (2 s^2) - 1/2."""
    return p.log_scale - 0.5 * q.logvar + (q.logvar.exp() + (q.loc - p.loc).pow(2)) * torch.exp(-2 * p.log_scale) / 2 - 0.5
