"""The standard normal prior p(z) = N(0, I), with the closed-form KL from a diagonal Gaussian q."""

from __future__ import annotations

import math

import torch

from ..kl import register_kl
from ..posteriors.diagonal_gaussian import DiagonalGaussian
from .base import Prior


class StandardNormal(Prior):
    """N(0, I): no parameters."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I), summed over the last dim: [..., D] -> [...]."""
        return -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(dim=-1)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.randn(num, self.latent_dim, generator=generator)

    def quantiles(self, probs: torch.Tensor, num_samples: int = 0) -> torch.Tensor:
        """Exactly the N(0, 1) quantiles, the same for every dimension: [P, D]."""
        values = torch.distributions.Normal(0.0, 1.0).icdf(probs.double()).float()
        return values[:, None].expand(-1, self.latent_dim)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_d, exp(logvar_d)) || N(0, 1)) for each latent dimension: [..., D] -> [..., D].

    KL = 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2), summed over d for the whole KL.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


@register_kl(DiagonalGaussian, StandardNormal)
def _kl_diagonal_gaussian_standard_normal(q: DiagonalGaussian, p: StandardNormal) -> torch.Tensor:
    return gaussian_kl_per_dim(q.loc, q.logvar)  # [B, D]
