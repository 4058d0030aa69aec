"""DIP-VAE (Kumar et al. 2018): the ELBO plus a penalty that pulls a covariance of the codes towards the
identity, so that the aggregate posterior's dimensions come out uncorrelated with unit variance.

With mu(x) [B, D] the posterior means of the batch and sigma^2(x) their variances, the matched
covariance C [D, D] is (biased batch estimates, dividing by B, as disentanglement_lib does)

    DIP-VAE-I   C = Cov_batch[mu(x)] = mean_b mu_b mu_b^T - mean_b mu_b (mean_b mu_b)^T
    DIP-VAE-II  C = Cov_batch[mu(x)] + mean_b diag sigma^2_b          (Cov_q(z)[z], by total covariance)

    penalty = lambda_od * sum_{i != j} C_ij^2  +  lambda_d * sum_i (C_ii - 1)^2

The penalty is a property of the batch, not of one example: it is added to the loss of every example,
so ``Terms.loss`` stays [B] and its batch mean is the paper's loss, mean_b(recon + beta * kl) + penalty
(with the gradient of the penalty on the whole batch). It is logged as ``dip`` (the batch's value for
each example: ``train/dip``; ``val/dip`` the mean over batches weighted by their size).

Defaults follow disentanglement_lib (``lambda_d_factor``: lambda_d = 10 lambda_od for DIP-VAE-I, lambda_d =
lambda_od for DIP-VAE-II; lambda_od swept over 1, 2, 5, 10, 20, 50): lambda_od = 10, and lambda_d null for
that factor times lambda_od.
"""

from __future__ import annotations

import torch

from ..checks import require_choice, require_number
from ..errors import ConfigError
from ..posteriors import DiagonalGaussian
from .base import Objective, Terms, full_precision, iwae_bound

DIP_TYPES = ("i", "ii")
#: lambda_d / lambda_od when lambda_d is not given (disentanglement_lib's lambda_d_factor).
LAMBDA_D_FACTOR = {"i": 10.0, "ii": 1.0}


def batch_covariance(values: torch.Tensor) -> torch.Tensor:
    """The biased covariance of a batch, dividing by B: [B, D] -> [D, D]."""
    centred = values - values.mean(dim=0)
    return centred.T @ centred / values.shape[0]


def dip_penalty(covariance: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2: [D, D] -> 0-dim."""
    diagonal = covariance.diagonal()
    off_diagonal = covariance.pow(2).sum() - diagonal.pow(2).sum()
    return lambda_od * off_diagonal + lambda_d * (diagonal - 1).pow(2).sum()


class DIPVAE(Objective):
    """Training minimises recon + beta * kl + the DIP penalty of the batch (beta: the KL weight, 1 by
    default, with its schedule).

    dip_type:  ``i`` (the covariance of the posterior means) or ``ii`` (of the codes: plus the mean of the
               posterior variances; needs a diagonal Gaussian q(z|x)).
    lambda_od: the weight of the off-diagonal entries; lambda_d: of the diagonal's distance to 1 (null:
               10 * lambda_od for ``i``, lambda_od for ``ii``).
    """

    def __init__(self, num_samples: int = 1, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto", dip_type: str = "i",
                 lambda_od: float = 10.0, lambda_d: float | None = None):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.dip_type = require_choice("dip_type", dip_type, DIP_TYPES)
        self.lambda_od = require_number("lambda_od", lambda_od, least=0)
        self.lambda_d = (LAMBDA_D_FACTOR[dip_type] * self.lambda_od if lambda_d is None
                         else require_number("lambda_d", lambda_d, least=0))

    def check(self, q, prior) -> str:
        if self.dip_type == "ii" and not isinstance(q, DiagonalGaussian):
            raise ConfigError("dip_type", self.dip_type,
                              f"needs a diagonal Gaussian q(z|x) (its variances enter the covariance); "
                              f"{type(q).__name__} is not one: use dip_type=i or model/posterior=diagonal_gaussian")
        return super().check(q, prior)

    def covariance(self, q) -> torch.Tensor:
        """The covariance the penalty matches to the identity: [D, D], in float32 at least."""
        covariance = batch_covariance(full_precision(q.mean))
        if self.dip_type == "ii":
            covariance = covariance + torch.diag(full_precision(q.logvar).exp().mean(dim=0))
        return covariance

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        if self.dip_type == "ii":
            self.check(q, prior)
        beta = self.beta_at(step)
        log_px_z, log_ratio, kl, kl_per_dim = self.sample_terms(x, q, decode, prior, likelihood, with_iwae)
        recon = -log_px_z.mean(dim=0)  # [B]
        penalty = dip_penalty(self.covariance(q), self.lambda_od, self.lambda_d).expand(x.shape[0])  # [B], one value
        iwae = iwae_bound(log_px_z + log_ratio) if with_iwae else None
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=recon + beta * kl + penalty, iwae=iwae,
                     kl_per_dim=kl_per_dim, beta=beta, extras={"dip": penalty})
