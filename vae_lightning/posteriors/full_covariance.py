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
    """N(loc, scale_tril scale_tril^T) for a batch: loc [B, D], scale_tril [B, D, D] (lower triangular);
    ``log_diag`` [B, D], the log of its diagonal, when known (else taken from scale_tril)."""

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, log_diag: torch.Tensor | None = None):
        self.loc, self.scale_tril = loc, scale_tril
        self.log_diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log() if log_diag is None else log_diag

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def rsample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_k = mu + L eps_k, eps_k ~ N(0, I): [K, B, D]."""
        eps = self._noise((num_samples, *self.loc.shape), generator)
        return self.loc + torch.einsum("bij,kbj->kbi", self.scale_tril, eps)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu, L L^T) = -0.5 |L^-1 (z - mu)|^2 - sum_d log L_dd - D/2 log 2 pi: [..., B, D] -> [..., B].

        One triangular solve per example with all samples as columns (no copy of L per sample), in
        float32 at least (there is no half-precision triangular solve)."""
        lead, (batch, dim) = z.shape[:-2], self.loc.shape
        dtype = torch.promote_types(z.dtype, torch.float32)
        diff = (z - self.loc).reshape(-1, batch, dim).to(dtype)  # [S, B, D]
        white = torch.linalg.solve_triangular(self.scale_tril.to(dtype), diff.permute(1, 2, 0), upper=False)
        maha = white.pow(2).sum(-2).T.reshape(*lead, batch)  # |L^-1 (z - mu)|^2: [..., B]
        return (-0.5 * (maha + dim * math.log(2 * math.pi)) - self.log_diag.sum(-1).to(dtype)).to(z.dtype)


class FullCovariancePosterior(PosteriorFamily):
    """The encoder's [B, D(D+3)/2] output read as (mu, log diag L, strictly-lower L)."""


    @property
    def num_params(self) -> int:
        d = self.latent_dim
        return 2 * d + d * (d - 1) // 2

    def forward(self, params: torch.Tensor) -> FullCovarianceGaussian:
        d = self.latent_dim
        loc, log_diag, below = params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]
        rows, cols = torch.tril_indices(d, d, offset=-1, device=params.device)
        strict = loc.new_zeros(*loc.shape, d)  # [B, D, D]
        strict[..., rows, cols] = below
        return FullCovarianceGaussian(loc, strict + torch.diag_embed(log_diag.exp()), log_diag)


@register_kl(FullCovarianceGaussian, StandardNormal)
def _kl_full_covariance_standard_normal(q: FullCovarianceGaussian, p: StandardNormal) -> torch.Tensor:
    trace = q.scale_tril.pow(2).sum(dim=(-2, -1))  # tr(L L^T) = |L|_F^2
    return 0.5 * (trace + q.loc.pow(2).sum(-1) - q.loc.shape[-1] - 2 * q.log_diag.sum(-1))  # [B]
