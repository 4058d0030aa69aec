"""A mixture of M diagonal Gaussians as the prior, with learnable means, scales and weights.

    p(z) = sum_m pi_m N(z; mu_m, diag s_m^2),   pi = softmax(logits)

Its KL with a Gaussian q(z|x) has no closed form, so the objective estimates it by Monte Carlo
from its own samples of z (``kl_estimator`` says ``monte_carlo``). The means start at
``init_spread`` * N(0, I) draws (from the run's seed, by a generator of their own: choosing this
prior changes no other draw of a seeded run), the scales at
``init_scale``, the weights equal. With ``learnable: false`` the mixture stays as it starts:
M = 1, ``init_spread: 0``, ``init_scale: 1`` is N(0, I) exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import require_bool, require_int, require_number
from .base import Prior


class MixtureOfGaussians(Prior):
    def __init__(self, latent_dim: int, num_components: int = 10, learnable: bool = True, init_spread: float = 1.0,
                 init_scale: float = 1.0):
        super().__init__(latent_dim)
        m = require_int("num_components", num_components, 1)
        spread = require_number("init_spread", init_spread, least=0)
        # From the run's seed, by a generator of their own: the global random stream is left as it was.
        generator = torch.Generator().manual_seed(torch.initial_seed() + 1)
        means = spread * torch.randn(m, self.latent_dim, generator=generator)
        log_scales = torch.full((m, self.latent_dim), math.log(require_number("init_scale", init_scale, above=0)))
        logits = torch.zeros(m)
        learnable = require_bool("learnable", learnable)
        for name, value in (("means", means), ("log_scales", log_scales), ("logits", logits)):
            if learnable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    @property
    def num_components(self) -> int:
        return self.logits.shape[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_m pi_m N(z; mu_m, s_m^2), stably: [..., D] -> [...]."""
        z = z.unsqueeze(-2)  # [..., 1, D] against the components [M, D]
        log_normal = -0.5 * (math.log(2 * math.pi) + 2 * self.log_scales
                             + (z - self.means).pow(2) * torch.exp(-2 * self.log_scales)).sum(-1)  # [..., M]
        return torch.logsumexp(torch.log_softmax(self.logits, dim=0) + log_normal, dim=-1)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A component m ~ pi, then z = mu_m + s_m * eps: [num, D]."""
        probs = torch.softmax(self.logits.detach().float(), dim=0)
        if generator is not None:
            probs = probs.to(generator.device)
        component = torch.multinomial(probs, num, replacement=True, generator=generator).to(self.device)
        eps = self.randn(num, self.latent_dim, generator=generator)
        return self.means[component] + torch.exp(self.log_scales[component]) * eps

    def extra_repr(self) -> str:
        learnable = isinstance(self.logits, nn.Parameter)
        return f"latent_dim={self.latent_dim}, num_components={self.num_components}, learnable={learnable}"
