"""A diagonal Gaussian pushed through invertible steps: the posterior every normalising flow here returns."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .base import Posterior
from .diagonal_gaussian import DiagonalGaussian

#: One invertible step of a flow: z [K, B, D] -> (f(z) [K, B, D], log |det df/dz| [K, B]).
FlowStep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

class FlowGaussian(Posterior):
    """q(z|x): N(loc, diag exp(logvar)) pushed through invertible ``steps``; loc, logvar [B, D].

    Each step holds whatever it needs of x (its own per-example parameters, or a context), so the
    same class serves every flow of this package.
    """

    def __init__(self, loc: torch.Tensor, logvar: torch.Tensor, steps: Sequence[FlowStep]):
        self.base = DiagonalGaussian(loc, logvar)
        self.steps = list(steps)

    @property
    def mean(self) -> torch.Tensor:
        """The flow applied to the base mean mu(x): [B, D].

        Not E_q[z], which has no closed form, but a deterministic point of q that moves with x:
        what reconstructions, the latent pictures and the active-unit count are drawn from. With
        every step at the identity it is mu(x)."""
        z, _ = self.flow(self.base.loc.unsqueeze(0))  # [1, B, D]
        return z.squeeze(0)

    def flow(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 [K, B, D] through every step: (z_K [K, B, D], sum_k log |det J_k| [K, B])."""
        log_det = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            z, step_log_det = step(z)
            log_det = log_det + step_log_det
        return z, log_det

    def rsample_and_log_prob(self, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_K [K, B, D] and log q(z_K|x) = log N(z_0) - sum_k log |det J_k| [K, B]."""
        z0 = self.base.rsample(num_samples, generator=generator)  # [K, B, D]
        z, log_det = self.flow(z0)
        return z, self.base.log_prob(z0) - log_det

    def rsample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_K [K, B, D]: the same draws as :meth:`rsample_and_log_prob` for the same generator."""
        return self.flow(self.base.rsample(num_samples, generator=generator))[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}.log_prob(z): the density of a flow is known only at the points it draws "
            f"(inverting it has no closed form). Draw samples with their log q from rsample_and_log_prob(K).")
