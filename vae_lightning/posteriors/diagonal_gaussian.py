"""The diagonal Gaussian q(z|x) = N(mu(x), diag sigma^2(x)): the encoder outputs mu and log sigma^2."""

from __future__ import annotations

import math

import torch

from .base import Posterior, PosteriorFamily


class DiagonalGaussian(Posterior):
    """N(loc, diag exp(logvar)) for a batch: loc, logvar [B, D]."""

    def __init__(self, loc: torch.Tensor, logvar: torch.Tensor):
        self.loc, self.logvar = loc, logvar

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def rsample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_k = mu + sigma * eps_k, eps_k ~ N(0, I): [K, B, D]."""
        return self.loc + (0.5 * self.logvar).exp() * self._noise((num_samples, *self.loc.shape), generator)

    def rsample_one(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): [B, D] (the same draw as ``rsample(1)[0]``)."""
        if type(self).rsample is not DiagonalGaussian.rsample:  # a subclass's own draw is the draw
            return self.rsample(1, generator=generator)[0]
        noise = torch.randn_like(self.loc) if generator is None else self._noise(self.loc.shape, generator)
        return self.loc + (0.5 * self.logvar).exp() * noise

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mu, diag exp(logvar)), summed over the last dim. Broadcasts: [..., D] -> [...]."""
        return -0.5 * (math.log(2 * math.pi) + self.logvar + (z - self.loc).pow(2) / self.logvar.exp()).sum(dim=-1)


class DiagonalGaussianPosterior(PosteriorFamily):
    """The encoder's [B, 2D] output read as (mu, log sigma^2), side by side."""

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim

    def forward(self, params: torch.Tensor) -> DiagonalGaussian:
        loc, logvar = params.chunk(2, dim=-1)  # [B, D] each
        return DiagonalGaussian(loc, logvar)
