"""The evidence lower bound (ELBO), in plain PyTorch.

    log p(x) = KL(q(z|x) || p(z|x)) + ELBO,    so ELBO <= log p(x)
    ELBO     = E_q[log p(x|z)] - KL(q(z|x) || p(z))
             =   -recon        -      kl

with prior p(z) = N(0, I) and encoder q(z|x) = N(mu, diag sigma^2). All values
are per example, in nats: summed over data dimensions and latent dimensions,
not averaged. Nothing here knows about Lightning, so it can be tested and
reused alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .likelihoods import Likelihood


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), analytic, summed over the last dim.

    mu, logvar: [..., D]  ->  [...]
    KL = 0.5 * sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Draw K samples z_k = mu + sigma * eps_k, eps_k ~ N(0, I), differentiably.

    mu, logvar: [B, D]  ->  z: [K, B, D]
    """
    std = (0.5 * logvar).exp()
    eps = torch.randn((num_samples, *mu.shape), dtype=mu.dtype, device=mu.device)
    return mu + std * eps


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last dim. Broadcasts: [..., D] -> [...]."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dim: [..., D] -> [...]."""
    return -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(dim=-1)


def log_importance_weights(
    x: torch.Tensor,
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    likelihood: Likelihood,
) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) for samples z_k of q.

    x: [B, *event], z: [K, B, D], mu/logvar: [B, D]  ->  [K, B]

    Its mean over k is another unbiased ELBO estimate (the KL estimated too);
    its log-mean-exp is the importance-weighted bound. When q is the exact
    posterior, log w is the same for every z: it is log p(x).
    """
    event_dim = x.dim() - 1
    log_px_z = likelihood.log_prob(x, decode(z), event_dim)
    return log_px_z + standard_normal_log_density(z) - gaussian_log_density(z, mu, logvar)


@dataclass
class ElboTerms:
    """Per-example terms of the bound, each of shape [B], in nats.

    recon: -E_q[log p(x|z)], the reconstruction loss, estimated with K samples.
    kl:    KL(q(z|x) || p(z)), analytic.
    elbo:  -(recon + kl), the true bound on log p(x) whatever beta is.
    loss:  recon + beta * kl, what training minimises (equals -elbo when beta = 1).
    """

    recon: torch.Tensor
    kl: torch.Tensor
    elbo: torch.Tensor
    loss: torch.Tensor


def elbo_terms(
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    likelihood: Likelihood,
    num_samples: int = 1,
    beta: float = 1.0,
) -> ElboTerms:
    """Estimate the ELBO of a batch with K Monte-Carlo samples of z per example.

    x:          [B, *event]   the data (event e.g. (1, 28, 28) or (784,))
    mu, logvar: [B, D]        the encoder's q(z|x)
    decode:     [K, B, D] -> [K, B, *event], the decoder's parameters of p(x|z)
    Returns ElboTerms of [B] tensors.

    The reconstruction term is (1/K) sum_k log p(x|z_k); the average is over the
    K samples for each x, not over the data (the seed derivation's N is the
    number of training points the loss is later summed over).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    event_dim = x.dim() - 1
    z = reparameterize(mu, logvar, num_samples)  # [K, B, D]
    log_px_z = likelihood.log_prob(x, decode(z), event_dim)  # [K, B]
    recon = -log_px_z.mean(dim=0)  # [B]
    kl = gaussian_kl(mu, logvar)  # [B]
    return ElboTerms(recon=recon, kl=kl, elbo=-(recon + kl), loss=recon + beta * kl)
