"""The ELBO with beta, K samples, KL schedules and free bits."""

from __future__ import annotations

from ..checks import require_int, require_number
from ..errors import ConfigError
from ..kl import analytic_kl
from .base import Objective, Terms, free_bits_kl, iwae_bound


class ELBO(Objective):
    """Training minimises recon + beta * kl, with K Monte-Carlo samples of z.

    The reconstruction term is (1/K) sum_k -log p(x|z_k); the average is over the K
    samples for each x, not over the data (the seed derivation's N is the number of
    training points the loss is later summed over). The logged ``elbo`` is always the
    true bound, -(recon + kl), whatever beta is.

    free_bits: a floor, in nats, on the batch-mean KL of each group of ``free_bits_group_size``
    latent dimensions (Kingma et al. 2016; 0 = off). It needs a KL per dimension (an analytic,
    factorised pair) unless the group is the whole latent space.
    """

    def __init__(self, num_samples: int = 1, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto", free_bits: float = 0.0,
                 free_bits_group_size: int = 1):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        self.free_bits = require_number("free_bits", free_bits, least=0)
        self.free_bits_group_size = require_int("free_bits_group_size", free_bits_group_size, 1)

    def check(self, q, prior) -> str:
        kind = super().check(q, prior)
        latent_dim, group = q.mean.shape[-1], self.free_bits_group_size
        if latent_dim % group:
            raise ConfigError("free_bits_group_size", group, f"must divide model.latent_dim={latent_dim}")
        per_dim = kind == "analytic" and analytic_kl(q, prior)[1] is not None
        if self.free_bits > 0 and not per_dim and group != latent_dim:
            raise ConfigError("free_bits_group_size", group,
                              f"needs a KL per latent dimension, which {type(q).__name__} against "
                              f"{type(prior).__name__} ({kind.replace('_', '-')} KL) does not give: set it to "
                              f"{latent_dim} (one group: the whole KL) or objective.free_bits=0")
        return kind

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        beta = self.beta_at(step)
        if self.one_sample(q, prior, with_iwae):
            # K = 1 with a closed-form KL, the default: -log p(x|z) of one sample, no sample axis (the fast path)
            recon, iwae = self.one_sample_recon(x, q, decode, likelihood), None  # [B]
            kl, kl_per_dim = self.kl_terms(q, prior, None)
        else:
            log_px_z, log_ratio, kl, kl_per_dim = self.sample_terms(x, q, decode, prior, likelihood, with_iwae)
            recon = -log_px_z.mean(dim=0)  # [B]
            iwae = iwae_bound(log_px_z + log_ratio) if with_iwae else None
        if self.free_bits > 0:
            per_group = kl_per_dim if kl_per_dim is not None else kl[:, None]  # one group: the whole KL
            group = self.free_bits_group_size if kl_per_dim is not None else 1
            kl_loss = free_bits_kl(per_group, self.free_bits, group)
        else:
            kl_loss = kl
        loss = recon + (kl_loss if beta == 1.0 else beta * kl_loss)
        return Terms(recon=recon, kl=kl, loss=loss, iwae=iwae, kl_per_dim=kl_per_dim, beta=beta)  # elbo: when read

