"""What a prior provides."""

from __future__ import annotations

import torch
from torch import nn

from ..checks import require_int


class Prior(nn.Module):
    """p(z) over ``latent_dim`` dimensions.

    Subclasses implement ``log_prob`` and ``sample``; parameters they register train with
    the model. ``quantiles`` (for the 2-D manifold picture) has a sampling default.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = require_int("latent_dim", latent_dim, 1)
        # Follows the module's device and dtype (see _apply), so samples are made where the model lives.
        # Not a buffer: DDP would broadcast it before every step.
        self._anchor = torch.zeros(())

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._anchor = fn(self._anchor)
        return self

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), summed over the latent dimensions: [..., D] -> [...]."""
        raise NotImplementedError

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` draws z ~ p(z): [num, D], on the prior's device. With a (CPU) ``generator`` the
        same generator state gives the same draws, whatever the device."""
        raise NotImplementedError

    @torch.no_grad()
    def quantiles(self, probs: torch.Tensor, num_samples: int = 20_000) -> torch.Tensor:
        """Quantiles of each marginal p(z_d) at ``probs`` [P]: [P, D]. By default from
        ``num_samples`` draws with a fixed generator; a prior with a closed form overrides it."""
        draws = self.sample(num_samples, generator=torch.Generator().manual_seed(0)).float().cpu()
        return torch.quantile(draws, probs.float(), dim=0)

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal noise on this prior's device (drawn on the generator's device first)."""
        anchor = self._anchor
        if generator is None:
            return torch.randn(shape, dtype=anchor.dtype, device=anchor.device)
        return torch.randn(shape, generator=generator, dtype=anchor.dtype,
                           device=generator.device).to(anchor.device)
