"""The importance-weighted bound of Burda et al. (2016) as the training objective."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Objective, Terms, iwae_bound


class IWAE(Objective):
    """Training maximises L_K = log (1/K) sum_k p(x, z_k) / q(z_k|x) over K samples.

    With beta < 1 (a warm-up, through the KL schedule) the weights are
    log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x)); the logged ``iwae``
    keeps beta = 1. ``recon``, ``kl`` and ``elbo`` come from the same samples.
    """

    def __init__(self, num_samples: int = 5, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto", free_bits: float = 0.0):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        if free_bits:  # accepted only to say where it belongs
            raise ConfigError("free_bits", free_bits, "applies to the ELBO only: set it to 0 with objective=iwae")

    @property
    def reports_iwae(self) -> bool:
        return True

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = True) -> Terms:
        beta = self.beta_at(step)
        log_px_z, log_ratio, kl, kl_per_dim = self.sample_terms(x, q, decode, prior, likelihood, need_log_ratio=True)
        recon = -log_px_z.mean(dim=0)
        iwae = iwae_bound(log_px_z + log_ratio)  # [B]
        loss = -(iwae if beta == 1.0 else iwae_bound(log_px_z + beta * log_ratio))
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=loss, iwae=iwae, kl_per_dim=kl_per_dim, beta=beta)
