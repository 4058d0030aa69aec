"""The ELBO plus a maximum mean discrepancy between the aggregate posterior and the prior: InfoVAE's MMD-VAE
(Zhao et al. 2019) and, with beta = 0, the WAE-MMD (Tolstikhin et al. 2018).

    loss = recon + beta * kl + mmd_weight * MMD^2(q(z), p(z))

The KL term pulls each q(z|x) towards the prior; the MMD only the aggregate q(z) = E_x q(z|x), which it
compares with the prior through samples: the batch's codes z ~ q(z|x) (K per example, B * K in all)
against as many draws from p(z). MMD^2 is estimated with the unbiased U-statistic

    MMD^2_u = 1/(n(n-1)) sum_{i!=j} k(z_i, z_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(z_i, y_j)

(zero in expectation when the two distributions are the same; a single draw may be below zero), with
one of two kernels of scale C:

    rbf   k(a, b) = exp(-|a - b|^2 / C)
    imq   k(a, b) = C / (C + |a - b|^2)          the inverse multiquadric of the WAE paper

C defaults to 2 * D * sigma^2 with sigma^2 = 1, the WAE paper's choice for a N(0, I) prior over D dimensions.
"""

from __future__ import annotations

import torch

from ..checks import require_choice, require_number
from .base import Objective, Terms, full_precision, iwae_bound

KERNELS = ("rbf", "imq")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i - b_j|^2 for every pair: [n, D], [m, D] -> [n, m] (never below 0, finite gradient at 0)."""
    return (a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0)


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, scale: float) -> torch.Tensor:
    """k(a_i, b_j) for every pair: [n, D], [m, D] -> [n, m]."""
    sq = squared_distances(a, b)
    return torch.exp(-sq / scale) if kernel == "rbf" else scale / (scale + sq)


def mmd(a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", scale: float | None = None,
        unbiased: bool = True) -> torch.Tensor:
    """MMD^2 between the samples a [n, D] and b [m, D]: a 0-dim tensor.

    unbiased: the U-statistic (the pairs of a sample with itself left out); else the V-statistic, which
    keeps them (biased upwards, 0 for identical sample sets). A set of one sample has no pairs: it
    falls back to the V-statistic. ``scale`` None: 2 * D.
    """
    scale = 2.0 * a.shape[-1] if scale is None else scale
    n, m = a.shape[0], b.shape[0]
    k_aa, k_bb, k_ab = (kernel_matrix(u, v, kernel, scale) for u, v in ((a, a), (b, b), (a, b)))
    if not unbiased or n < 2 or m < 2:
        return k_aa.mean() + k_bb.mean() - 2 * k_ab.mean()
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return within_a + within_b - 2 * k_ab.mean()


class MMD(Objective):
    """Training minimises recon + beta * kl + mmd_weight * MMD^2 between the batch's codes and prior draws.

    ``mmd`` is a property of the batch, not of one example: it is logged as an extra with the batch's
    value repeated for each example (``train/mmd``; ``val/mmd`` is then the mean over batches, weighted
    by their size). ``recon``, ``kl`` and ``elbo`` are those of every objective, on the same samples.

    kernel: ``rbf`` or ``imq``; kernel_scale: C, or null for 2 * latent_dim; mmd_weight: the weight of
    MMD^2 (lambda). beta = 0 drops the KL term: the WAE-MMD with a stochastic encoder.
    """

    def __init__(self, num_samples: int = 1, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto",
                 mmd_weight: float = 100.0, kernel: str = "imq", kernel_scale: float | None = None):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.mmd_weight = require_number("mmd_weight", mmd_weight, least=0)
        self.kernel = require_choice("kernel", kernel, KERNELS)
        self.kernel_scale = None if kernel_scale is None else require_number("kernel_scale", kernel_scale, above=0)

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        beta = self.beta_at(step)
        z, log_q = q.rsample_and_log_prob(self.num_samples)  # [K, B, D], [K, B]
        log_px_z = likelihood.log_prob(x, full_precision(decode(z)), x.dim() - 1)  # [K, B]
        codes = full_precision(z.reshape(-1, z.shape[-1]))  # the aggregate q(z)'s samples: [K*B, D]
        draws = full_precision(prior.sample(codes.shape[0]))  # [K*B, D]
        discrepancy = mmd(codes, draws, self.kernel, self.kernel_scale).expand(x.shape[0])  # [B], one value

        log_ratio = prior.log_prob(z) - log_q  # [K, B]
        kl, kl_per_dim = self.kl_terms(q, prior, log_ratio)
        recon = -log_px_z.mean(dim=0)  # [B]
        loss = recon + beta * kl + self.mmd_weight * discrepancy
        iwae = iwae_bound(log_px_z + log_ratio) if with_iwae else None
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=loss, iwae=iwae, kl_per_dim=kl_per_dim,
                     beta=beta, extras={"mmd": discrepancy})
