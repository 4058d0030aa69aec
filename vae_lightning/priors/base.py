"""What a prior provides."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..checks import require_int


class Prior(nn.Module):
    """p(z) over ``latent_dim`` dimensions.

    Subclasses implement ``log_prob`` and ``sample``; parameters they register train with
    the model. ``quantiles`` (for the 2-D manifold picture) has a sampling default.

    ``device`` and ``dtype`` say where the model lives (they follow ``.to()``, ``.cuda()``,
    ``.double()`` and Lightning's precision, also for a prior without parameters), and
    ``randn`` / ``rand`` draw standard normal / uniform noise there: what a ``sample`` builds on, so
    that its draws come out on the model's device and dtype, and the same from the same generator
    on every device.
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

    @property
    def device(self) -> torch.device:
        """The device of the model the prior belongs to: where its samples are made."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model the prior belongs to (float32 unless moved): its samples'."""
        return self._anchor.dtype

    def randn(self, *shape: int | Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """N(0, 1) noise of ``shape`` (``randn(n, d)`` or ``randn((n, d))``, as ``torch.randn``) on the prior's
        device and dtype. With a ``generator`` the draws are made on the generator's device and moved, so a
        CPU generator gives the same draws whatever the model's device."""
        return self._draw(torch.randn, shape, generator)

    def rand(self, *shape: int | Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """U[0, 1) noise of ``shape`` on the prior's device and dtype; ``generator`` as for :meth:`randn`."""
        return self._draw(torch.rand, shape, generator)

    def _draw(self, fn: Callable[..., torch.Tensor], shape: tuple, generator: torch.Generator | None) -> torch.Tensor:
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        if generator is None:  # (no generator argument at all: torch.compile traces this call)
            return fn(shape, dtype=self.dtype, device=self.device)
        return fn(shape, generator=generator, dtype=self.dtype, device=generator.device).to(self.device)

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """The older name of :meth:`randn` (kept for parts written against it)."""
        return self.randn(shape, generator=generator)
