"""Importance-weighted bounds that trade the encoder's gradient against the decoder's (Rainforth et al. 2018).

As K grows, L_K gives the decoder a better gradient but the encoder a noisier one (its signal-to-noise
ratio falls as 1/sqrt(K)). With M groups of K samples of z per example (M * K in all):

    MIWAE(M, K) = (1/M) sum_m L_K^(m)                the mean of M K-sample bounds
    CIWAE(c)    = c * ELBO + (1 - c) * L_K            on the same K samples
    PIWAE(M, K) the encoder trained on MIWAE(M, K), the decoder (with the prior and the likelihood)
                on L_{MK}, both on the same M * K samples

MIWAE(1, K) is IWAE(K) and MIWAE(M, 1) the ELBO estimated with M samples. With beta < 1 (a warm-up,
through the KL schedule) every bound uses IWAE's weights log w = log p(x|z) + beta * (log p(z) - log q(z|x));
the logged ``iwae`` keeps beta = 1. ``recon``, ``kl`` and ``elbo`` come from the same samples.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..checks import require_int, require_number
from ..errors import ConfigError
from ..likelihoods import Likelihood
from .base import Objective, Terms, full_precision, iwae_bound


def grouped_bound(log_w: torch.Tensor, num_groups: int) -> torch.Tensor:
    """MIWAE: the mean over M groups of the K-sample bound of each, stably: [M*K, B] -> [B].

    Group m holds the samples m*K, ..., (m+1)*K - 1, so M = 1 is L_K over all of them and K = 1 the
    mean of log w (the ELBO estimate).
    """
    total, batch = log_w.shape
    per_group = log_w.view(num_groups, total // num_groups, batch)  # [M, K, B]
    return (torch.logsumexp(per_group, dim=1) - math.log(per_group.shape[1])).mean(dim=0)


class _Model(nn.Module):
    """The decoder, the prior and the likelihood as one module: log p(x|z) and log p(z) for codes z.

    One module so that :func:`torch.func.functional_call` can evaluate it with all its parameters
    swapped at once (detached ones, for PIWAE's encoder term). A ``decode`` that is a plain function
    has no parameters and is kept as it is.
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], prior, likelihood: Likelihood):
        super().__init__()
        self.decode, self.prior, self.likelihood = decode, prior, likelihood

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, *event], z [S, B, D] -> log p(x|z) [S, B], log p(z) [S, B]."""
        log_px_z = self.likelihood.log_prob(x, full_precision(self.decode(z)), x.dim() - 1)
        return log_px_z, self.prior.log_prob(z)


class MIWAE(Objective):
    """Training maximises MIWAE(M, K): M = ``num_groups`` groups of K = ``num_samples`` samples of z.

    The logged ``iwae`` is L_{MK} over all M * K samples (the tightest bound they give); the bound trained
    on is logged as ``miwae``. The cost is that of IWAE with M * K samples.
    """

    def __init__(self, num_samples: int = 4, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto", num_groups: int = 4):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.num_groups = require_int("num_groups", num_groups, 1)

    @property
    def total_samples(self) -> int:
        """M * K: the samples of z drawn per example."""
        return self.num_groups * self.num_samples

    @property
    def reports_iwae(self) -> bool:
        return True

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = True) -> Terms:
        beta = self.beta_at(step)
        z, log_q = q.rsample_and_log_prob(self.total_samples)  # [M*K, B, D], [M*K, B]
        log_px_z, log_pz = _Model(decode, prior, likelihood)(x, z)  # [M*K, B] each
        log_ratio = log_pz - log_q
        kl, kl_per_dim = self.kl_terms(q, prior, log_ratio)
        recon = -log_px_z.mean(dim=0)  # [B]
        miwae = grouped_bound(log_px_z + log_ratio, self.num_groups)
        loss = -(miwae if beta == 1.0 else grouped_bound(log_px_z + beta * log_ratio, self.num_groups))
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=loss, iwae=iwae_bound(log_px_z + log_ratio),
                     kl_per_dim=kl_per_dim, beta=beta, extras={"miwae": miwae})


class PIWAE(MIWAE):
    """The encoder's gradient from MIWAE(M, K), the decoder's, the prior's and the likelihood's from
    IWAE(M * K), on the same M * K samples.

    Two terms whose gradients reach disjoint parameters:
      encoder term  MIWAE(M, K) with the model (decoder, prior, likelihood) evaluated on detached copies of
                    its parameters: its gradient reaches the encoder only, through z and log q(z|x);
      model term    L_{MK} on detached z and log q(z|x): its gradient reaches the model's parameters only.
    The model is evaluated twice (one more decoder pass than MIWAE), with the same random state both
    times, so noise it draws (dequantisation, dropout) is the same in the two. The loss's value is
    -MIWAE(M, K) (logged as ``miwae``); ``iwae`` is L_{MK}. A parameter the encoder shares with the
    prior (a VampPrior's) gets the model term's gradient through the prior and the encoder term's
    through q.
    """

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = True) -> Terms:
        beta = self.beta_at(step)
        model = _Model(decode, prior, likelihood)
        z, log_q = q.rsample_and_log_prob(self.total_samples)  # [M*K, B, D], [M*K, B]
        frozen = {name: p.detach() for name, p in model.named_parameters()}
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            log_px_z_enc, log_pz_enc = functional_call(model, frozen, (x, z))  # no gradient to the model
        log_px_z, log_pz = model(x, z.detach())  # no gradient to the encoder
        log_ratio = log_pz - log_q.detach()
        encoder_term = grouped_bound(log_px_z_enc + beta * (log_pz_enc - log_q), self.num_groups)
        model_term = iwae_bound(log_px_z + beta * log_ratio)
        loss = -encoder_term - (model_term - model_term.detach())  # the value of -MIWAE, each part its gradient

        kl, kl_per_dim = self.kl_terms(q, prior, log_ratio)
        recon = -log_px_z.mean(dim=0)  # [B]
        log_w = (log_px_z + log_ratio).detach()  # beta = 1, for the logs
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=loss, iwae=iwae_bound(log_w),
                     kl_per_dim=kl_per_dim, beta=beta, extras={"miwae": grouped_bound(log_w, self.num_groups)})


class CIWAE(Objective):
    """Training maximises ciwae_beta * ELBO + (1 - ciwae_beta) * L_K on the same K samples.

    ``ciwae_beta`` (in [0, 1]) mixes the two bounds; ``beta`` stays the KL weight (with its schedule):
    the loss is ciwae_beta * (recon + beta * kl) + (1 - ciwae_beta) * (-L_K with IWAE's warmed weights),
    so ciwae_beta = 1 is the ELBO's loss and 0 IWAE's. The mixed bound (beta = 1) is logged as ``ciwae``.
    """

    def __init__(self, num_samples: int = 5, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto", ciwae_beta: float = 0.5):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.ciwae_beta = require_number("ciwae_beta", ciwae_beta)
        if not 0 <= self.ciwae_beta <= 1:
            raise ConfigError("ciwae_beta", ciwae_beta, "must be in [0, 1] (1: the ELBO, 0: IWAE)")

    @property
    def reports_iwae(self) -> bool:
        return True

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = True) -> Terms:
        beta, c = self.beta_at(step), self.ciwae_beta
        log_px_z, log_ratio, kl, kl_per_dim = self.sample_terms(x, q, decode, prior, likelihood, need_log_ratio=True)
        recon = -log_px_z.mean(dim=0)  # [B]
        elbo, iwae = -(recon + kl), iwae_bound(log_px_z + log_ratio)
        iwae_loss = -(iwae if beta == 1.0 else iwae_bound(log_px_z + beta * log_ratio))
        loss = c * (recon + beta * kl) + (1 - c) * iwae_loss
        return Terms(recon=recon, kl=kl, elbo=elbo, loss=loss, iwae=iwae, kl_per_dim=kl_per_dim, beta=beta,
                     extras={"ciwae": c * elbo + (1 - c) * iwae})
