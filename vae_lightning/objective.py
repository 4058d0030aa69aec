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


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_d, exp(logvar_d)) || N(0, 1)) for each latent dimension: [..., D] -> [..., D]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), analytic, summed over the last dim.

    mu, logvar: [..., D]  ->  [...]
    KL = 0.5 * sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)
    """
    return gaussian_kl_per_dim(mu, logvar).sum(dim=-1)


def free_bits_kl(kl_per_dim: torch.Tensor, floor: float, group_size: int = 1) -> torch.Tensor:
    """The KL term of the loss with free bits (Kingma et al. 2016): [B, D] -> [B].

    Latent dimensions are taken in groups of ``group_size``; a group whose KL,
    averaged over the minibatch, is below ``floor`` nats contributes the floor
    (a constant: no gradient) instead of its KL. The batch mean of the result is
    sum_g max(floor, mean_batch KL_g), the objective of the paper; above the
    floor the gradient is exactly that of the plain KL.
    """
    batch, dims = kl_per_dim.shape
    if dims % group_size:
        raise ValueError(f"free_bits_group_size={group_size} does not divide the latent size {dims}.")
    groups = kl_per_dim.view(batch, dims // group_size, group_size).sum(-1)  # [B, G]
    above = groups.detach().mean(0, keepdim=True) > floor  # [1, G]
    return torch.where(above, groups, torch.full_like(groups, floor)).sum(-1)


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


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound L_K = log (1/K) sum_k w_k, stably: [K, B] -> [B].

    (Burda et al. 2016.) L_1 is the ELBO; L_K rises with K towards log p(x).
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


@dataclass
class ElboTerms:
    """Per-example terms of the bound, each of shape [B], in nats.

    recon: -E_q[log p(x|z)], the reconstruction loss, estimated with K samples.
    kl:    KL(q(z|x) || p(z)), analytic.
    elbo:  -(recon + kl), the true bound on log p(x) whatever beta is.
    loss:  what training minimises: recon + beta * kl for the ELBO (with the
           free-bits floor if set), -L_K for IWAE.
    iwae:  the importance-weighted bound L_K over the same K samples (with the
           true weights, beta = 1); None unless asked for (``with_iwae``) or trained on.
    kl_per_dim: [B, D], the KL of each latent dimension.
    mu, logvar: [B, D], the q(z|x) they were computed with.
    """

    recon: torch.Tensor
    kl: torch.Tensor
    elbo: torch.Tensor
    loss: torch.Tensor
    iwae: torch.Tensor | None
    kl_per_dim: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def elbo_terms(
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    likelihood: Likelihood,
    num_samples: int = 1,
    beta: float = 1.0,
    objective: str = "elbo",
    free_bits: float = 0.0,
    free_bits_group_size: int = 1,
    with_iwae: bool = False,
) -> ElboTerms:
    """Estimate the bounds of a batch with K Monte-Carlo samples of z per example.

    x:          [B, *event]   the data (event e.g. (1, 28, 28) or (784,))
    mu, logvar: [B, D]        the encoder's q(z|x)
    decode:     [K, B, D] -> decoder output for p(x|z), [K, B, *param_shape]
    Returns ElboTerms of [B] tensors.

    The reconstruction term is (1/K) sum_k log p(x|z_k); the average is over the
    K samples for each x, not over the data (the seed derivation's N is the
    number of training points the loss is later summed over). The IWAE bound
    uses the same K samples.

    objective ``elbo``: loss = recon + beta * kl (kl floored per group by free bits).
    objective ``iwae``: loss = -L_K with log w_k = log p(x|z_k) + beta * log p(z_k)/q(z_k|x);
    beta = 1 is the bound of Burda et al., beta < 1 a warm-up of it.
    ``with_iwae``: also return L_K for an ELBO objective (the log densities of z it needs
    are not computed otherwise).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"Unknown objective {objective!r}: choose elbo or iwae.")
    event_dim = x.dim() - 1
    z = reparameterize(mu, logvar, num_samples)  # [K, B, D]
    log_px_z = likelihood.log_prob(x, decode(z), event_dim)  # [K, B]
    recon = -log_px_z.mean(dim=0)  # [B]
    kl_per_dim = gaussian_kl_per_dim(mu, logvar)  # [B, D]
    kl = kl_per_dim.sum(-1)  # [B]
    iwae = None
    if objective == "iwae" or with_iwae:
        log_prior_ratio = standard_normal_log_density(z) - gaussian_log_density(z, mu, logvar)  # [K, B]
        iwae = iwae_bound(log_px_z + log_prior_ratio)
    if objective == "iwae":
        loss = -(iwae if beta == 1.0 else iwae_bound(log_px_z + beta * log_prior_ratio))
    elif free_bits > 0:
        loss = recon + beta * free_bits_kl(kl_per_dim, free_bits, free_bits_group_size)
    else:
        loss = recon + beta * kl
    return ElboTerms(recon=recon, kl=kl, elbo=-(recon + kl), loss=loss, iwae=iwae, kl_per_dim=kl_per_dim,
                     mu=mu, logvar=logvar)
