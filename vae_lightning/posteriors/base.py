"""What a posterior family and its distributions provide."""

from __future__ import annotations

import torch
from torch import nn

from ..checks import require_int
from ..kl import analytic_kl


class Posterior:
    """q(z|x) for a batch of B examples, over D latent dimensions.

    Subclasses set ``mean`` [B, D] and implement ``rsample`` and ``log_prob``. Where the density of
    any z is not available in closed form (a normalising flow knows it only for the samples it
    draws), override :meth:`rsample_and_log_prob` instead, which is what the objectives and the
    test NLL call.
    """

    mean: torch.Tensor

    def rsample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """K differentiable samples (reparameterised): [K, B, D]."""
        raise NotImplementedError

    def rsample_one(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One differentiable sample per example, without the sample axis: [B, D]. What the objectives draw when
        K = 1 (the common case), so that the decoder and the likelihood see [B, ...], not [1, B, ...]. By
        default ``rsample(1)[0]``; a posterior may draw it directly (the diagonal Gaussian does)."""
        return self.rsample(1, generator=generator)[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x), summed over the latent dimensions: [..., B, D] -> [..., B]."""
        raise NotImplementedError

    def rsample_and_log_prob(self, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """K samples and their log-density: z [K, B, D], log q(z|x) [K, B]."""
        z = self.rsample(num_samples, generator=generator)
        return z, self.log_prob(z)

    def kl(self, prior) -> torch.Tensor | None:
        """Analytic KL(q || prior) [B] when the pair has a closed form (see :mod:`vae_lightning.kl`), else None."""
        found = analytic_kl(self, prior)
        return None if found is None else found[0]

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise like ``mean`` (its device and dtype). With a generator the draws are
        made on the generator's device and moved, so a CPU generator works for a model on a GPU."""
        like = self.mean
        if generator is None:  # (no generator argument at all: torch.compile traces this call)
            return torch.randn(shape, dtype=like.dtype, device=like.device)
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)

    def kl_per_dim(self, prior) -> torch.Tensor | None:
        """The analytic KL of each latent dimension [B, D], when the pair factorises over them, else None."""
        found = analytic_kl(self, prior)
        return None if found is None else found[1]


class PosteriorFamily(nn.Module):
    """Builds q(z|x) from the encoder's output: ``forward(params [B, num_params]) -> Posterior``."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = require_int("latent_dim", latent_dim, 1)

    @property
    def num_params(self) -> int:
        """How many numbers per example the encoder must output."""
        raise NotImplementedError

    def forward(self, params: torch.Tensor) -> Posterior:
        raise NotImplementedError
