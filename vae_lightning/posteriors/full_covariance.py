"""A full-covariance Gaussian q(z|x) = N(mu(x), L(x) L(x)^T), L lower triangular with a positive diagonal.

The encoder outputs D means, D log-diagonal entries of L and D(D-1)/2 entries below the diagonal:
D(D + 3)/2 numbers. Correlated posteriors (a linear Gaussian model with non-orthogonal columns,
for one) are then representable exactly, which no diagonal q can do. Closed-form KL against N(0, I):

    KL = 0.5 * (tr(L L^T) + mu^T mu - D - 2 sum_d log L_dd)
"""

from __future__ import annotations

import math

import torch

from ..kl import register_kl
from ..priors.standard_normal import StandardNormal
from .base import Posterior, PosteriorFamily


class FullCovarianceGaussian(Posterior):
    """N(loc, scale_tril scale_tril^T) for a batch: loc [B, D], scale_tril [B, D, D]."""

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor):
        self.loc, self.scale_tril = loc, scale_tril

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def log_diag(self) -> torch.Tensor:
        return torch.diagonal(self.scale_tril, dim1=-2, dim2=-1).log()  # [B, D]

    def rsample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_k = mu + L eps_k, eps_k ~ N(0, I): [K, B, D]."""
        eps = torch.randn((num_samples, *self.loc.shape), dtype=self.loc.dtype, device=self.loc.device,
                          generator=generator)
        return self.loc + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu, L L^T) = -0.5 |L^-1 (z - mu)|^2 - sum_d log L_dd - D/2 log 2 pi: [..., B, D] -> [..., B]."""
        diff = (z - self.loc).unsqueeze(-1)  # [..., B, D, 1]
        tril = self.scale_tril.expand(*diff.shape[:-2], *self.scale_tril.shape[-2:])
        white = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)  # L^-1 (z - mu)
        dim = self.loc.shape[-1]
        return -0.5 * (white.pow(2).sum(-1) + dim * math.log(2 * math.pi)) - self.log_diag.sum(-1)


class FullCovariancePosterior(PosteriorFamily):
    """The encoder's [B, D(D+3)/2] output read as (mu, log diag L, strictly-lower L)."""

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    @property
    def num_params(self) -> int:
        d = self.latent_dim
        return 2 * d + d * (d - 1) // 2

    def forward(self, params: torch.Tensor) -> FullCovarianceGaussian:
        d = self.latent_dim
        loc, log_diag, below = params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]
        strict = loc.new_zeros(*loc.shape, d)  # [B, D, D]
        strict[..., self._rows, self._cols] = below
        return FullCovarianceGaussian(loc, strict + torch.diag_embed(log_diag.exp()))


@register_kl(FullCovarianceGaussian, StandardNormal)
def _kl_full_covariance_standard_normal(q: FullCovarianceGaussian, p: StandardNormal) -> torch.Tensor:
    trace = q.scale_tril.pow(2).sum(dim=(-2, -1))  # tr(L L^T) = |L|_F^2
    return 0.5 * (trace + q.loc.pow(2).sum(-1) - q.loc.shape[-1] - 2 * q.log_diag.sum(-1))  # [B]
