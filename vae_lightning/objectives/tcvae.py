"""beta-TCVAE (Chen et al. 2018): the KL term split into mutual information, total correlation and
dimension-wise KL, each with its own weight.

With q(z) = (1/N) sum_n q(z|x_n) the aggregate posterior over the N training examples and q(z_d) its
marginals, the KL term averaged over the data splits as

    E_x KL(q(z|x) || p(z)) = E[log q(z|x) - log q(z)]              mi    index-code mutual information
                           + E[log q(z) - sum_d log q(z_d)]         tc    total correlation
                           + E[sum_d log q(z_d) - log p(z)]         dwkl  dimension-wise KL (p factorised)

For each example and each of its K samples z ~ q(z|x) the three terms telescope: mi + tc + dwkl is
log q(z|x) - log p(z), the Monte-Carlo KL, exactly, whatever estimate of log q(z) stands in. log q(z)
and log q(z_d) are estimated from the batch of B examples (``estimator``):

    mws       minibatch-weighted sampling (Chen et al.): log q(z) ~ log sum_j q(z|x_j) - log(N B).
              Its weights 1/(NB) add up to 1/N, not 1: log q(z) comes out as the log of the batch's
              average density minus log N, and so does each marginal. The logged terms are offset by
              constants, mi by +log N, tc by +(D - 1) log N, dwkl by -D log N (a batch of identical
              posteriors, whose true mi and tc are 0, gives exactly those), which cancel in their sum and
              do not change the gradient.
    unbiased  weight 1/N on the sample's own example and (N - 1) / (N (B - 1)) on each of the others:
              an unbiased estimate of q(z) when the batch is a uniform draw from the data, with weights
              that add up to 1, so a batch of identical posteriors gives mi = tc = 0.

N is ``dataset_size``, the number of training examples: by default (None) the training split's size,
which the VAE tells the objective before training or testing (55000 for MNIST with the default 5000 held
out for validation, 722,280 for dSprites); an integer fixes it.
"""

from __future__ import annotations

import math

import torch

from ..checks import require_choice, require_int, require_number
from ..errors import ConfigError, VAEUserError
from ..posteriors import DiagonalGaussian
from .base import Objective, Terms, full_precision, iwae_bound

ESTIMATORS = ("mws", "unbiased")


def log_batch_weights(batch: int, dataset_size: int, estimator: str, like: torch.Tensor) -> torch.Tensor:
    """log of the weight of example j in the estimate of q(z) for a sample of example i: [B_i, B_j]."""
    n = dataset_size
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(n * batch), dtype=like.dtype, device=like.device)
    others = math.log((n - 1) / (n * (batch - 1))) if batch > 1 and n > 1 else -math.inf
    weights = torch.full((batch, batch), others, dtype=like.dtype, device=like.device)
    return weights.fill_diagonal_(-math.log(n))


def pairwise_log_density_per_dim(q: DiagonalGaussian, z: torch.Tensor) -> torch.Tensor:
    """log q(z_{k,i,d} | x_j) of each latent dimension, for every sample i against every example j of the batch:
    z [K, B_i, D] -> [K, B_i, B_j, D]."""
    diff = z.unsqueeze(-2) - q.loc  # [K, B, 1, D] against [B, D] -> [K, B, B, D]
    return -0.5 * (math.log(2 * math.pi) + q.logvar + diff.pow(2) * torch.exp(-q.logvar))


def decompose_kl(q: DiagonalGaussian, z: torch.Tensor, log_q: torch.Tensor, log_pz: torch.Tensor, dataset_size: int,
                 estimator: str = "mws") -> dict[str, torch.Tensor]:
    """mi, tc and dwkl of each example, averaged over its K samples: z [K, B, D], log q(z|x) and log p(z)
    [K, B] -> {"mi", "tc", "dwkl"}, [B] each, whose sum is mean_k (log q - log p) to round-off."""
    batch = z.shape[1]
    log_w = log_batch_weights(batch, dataset_size, estimator, z)  # [B_i, B_j]
    # log q(z_i|x_j) for all pairs, from the posterior's own density: q.log_prob broadcasts [K, B, 1, D]
    # against its [B, D] parameters.
    pairs = q.log_prob(z.unsqueeze(-2))  # [K, B_i, B_j]
    log_qz = torch.logsumexp(pairs + log_w, dim=-1)  # [K, B]
    pairs_per_dim = pairwise_log_density_per_dim(q, z)  # [K, B_i, B_j, D]
    log_qz_dims = torch.logsumexp(pairs_per_dim + log_w[..., None], dim=-2).sum(-1)  # sum_d log q(z_d): [K, B]
    return {"mi": (log_q - log_qz).mean(0), "tc": (log_qz - log_qz_dims).mean(0),
            "dwkl": (log_qz_dims - log_pz).mean(0)}


class BetaTCVAE(Objective):
    """Training minimises recon + mi_weight * mi + beta * tc + dwkl_weight * dwkl (the alpha, beta, gamma
    of Chen et al.; beta is the objective's beta, the total-correlation weight, with its KL schedule).

    ``mi``, ``tc`` and ``dwkl`` are logged per example (``train/tc``, ``val/tc``, ...). With all three
    weights 1 the loss is recon plus the Monte-Carlo KL of the same samples; the logged ``kl`` and
    ``elbo`` are those of every objective (the analytic KL where the pair has one).

    The posterior must be a diagonal Gaussian (:class:`DiagonalGaussian`): the decomposition needs
    ``q.log_prob(z)`` to broadcast z [K, B, 1, D] against the batch's parameters (the density of every
    sample under every example's posterior) and the density of each latent dimension alone, which it
    computes from ``loc`` and ``logvar``. Memory: K * B * B * D values.
    """

    def __init__(self, num_samples: int = 1, beta: float = 6.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto",
                 dataset_size: int | None = None, mi_weight: float = 1.0, dwkl_weight: float = 1.0,
                 estimator: str = "mws"):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.from_data = dataset_size is None  # N is the training split's size, told by the VAE
        self.dataset_size = None if self.from_data else require_int("dataset_size", dataset_size, 1)
        self.mi_weight = require_number("mi_weight", mi_weight, least=0)
        self.dwkl_weight = require_number("dwkl_weight", dwkl_weight, least=0)
        self.estimator = require_choice("estimator", estimator, ESTIMATORS)

    def check(self, q, prior) -> str:
        if not isinstance(q, DiagonalGaussian):
            raise ConfigError("_target_", f"{type(self).__module__}.{type(self).__qualname__}",
                              f"needs a diagonal Gaussian q(z|x), whose density factorises over the latent "
                              f"dimensions; {type(q).__name__} does not: use model/posterior=diagonal_gaussian")
        return super().check(q, prior)

    def set_training_size(self, num_examples: int) -> None:
        if self.from_data:
            self.dataset_size = int(num_examples)

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        self.check(q, prior)
        if self.dataset_size is None:
            raise VAEUserError("objective.dataset_size=null takes N from the training data, which this objective "
                               "was not given: set objective.dataset_size=N (the number of training examples), or "
                               "call set_training_size(N) first.")
        beta = self.beta_at(step)
        z, log_q = q.rsample_and_log_prob(self.num_samples)  # [K, B, D], [K, B]
        log_px_z = likelihood.log_prob(x, full_precision(decode(z)), x.dim() - 1)  # [K, B]
        log_pz = prior.log_prob(z)  # [K, B]
        # Sums over the batch and the latent dimensions: in float32 at least.
        parts = decompose_kl(q, full_precision(z), full_precision(log_q), full_precision(log_pz),
                             self.dataset_size, self.estimator)  # [B] each
        recon = -log_px_z.mean(dim=0)  # [B]
        loss = recon + self.mi_weight * parts["mi"] + beta * parts["tc"] + self.dwkl_weight * parts["dwkl"]

        kl, kl_per_dim = self.kl_terms(q, prior, log_pz - log_q)
        iwae = iwae_bound(log_px_z + log_pz - log_q) if with_iwae else None
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=loss, iwae=iwae, kl_per_dim=kl_per_dim,
                     beta=beta, extras=parts)
