"""The likelihood contract.

Each likelihood turns what the decoder outputs (its *parameters*) into
log p(x|z) for every example, summed over the data dimensions, in nats, with
every normalising constant kept. Shapes follow ``torch.distributions``: leading
sample and batch dimensions are kept, the ``event_dim`` trailing dimensions of
the data (e.g. ``(1, 28, 28)``) are summed away.

A likelihood with P parameters per data value asks the decoder for P times as
many channels: ``param_shape((C, H, W)) == (P * C, H, W)``; they are split
along that first event dimension (a likelihood that needs another count, such as
a mixture, overrides ``param_shape`` and ``split`` together).

8-bit data: the DataModules hand the model x = k / 255 for the integers k = 0..255
(:func:`pixel_values` gets k back). A density on [0, 1] (:class:`Density`) becomes a
bound on the probability mass of those integers with ``dequantize="uniform"``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import require_choice

#: The number of values of 8-bit data, and the largest one.
LEVELS = 256
MAX_VALUE = LEVELS - 1

DEQUANTIZATIONS = ("none", "uniform")


def sum_event(t: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Sum the ``event_dim`` trailing dimensions: [..., *event] -> [...]."""
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim > 0 else t


def pixel_values(x: torch.Tensor) -> torch.Tensor:
    """The integers k = round(255 x) of 8-bit data x = k / 255, as floats (at least float32: in bfloat16
    255 x itself would round; x = k / 255 survives bfloat16 and k comes back exact)."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.round(x * MAX_VALUE).clamp(0, MAX_VALUE)


def uniform_dequantize(x: torch.Tensor, leading_shape: Sequence[int] = ()) -> torch.Tensor:
    """y = (k + u) / 256 with k = round(255 x) and fresh u ~ U[0, 1) for each value (and for each of the
    ``leading_shape`` samples): [B, *event] -> [*leading_shape, B, *event], y in [k/256, (k+1)/256).

    The noise comes from torch's global generator (``torch.rand_like``), which the training loop seeds.
    """
    k = pixel_values(x).expand(*leading_shape, *x.shape)
    return (k + torch.rand_like(k)) / LEVELS


class Likelihood(nn.Module):
    """Base class. Subclasses take ``event_shape`` (the data's shape, e.g. (1, 28, 28)) as their
    first argument, whether they need it or not, so every likelihood is built the same way."""

    #: How many parameter tensors shaped like x the decoder outputs.
    num_params = 1
    #: What data it is a distribution over: "binary" (a probability mass on {0, 1}), "discrete" (a
    #: probability mass on the 256 values of 8-bit data) or "continuous" (a density). For the first two
    #: the test NLL is also reported in bits per dimension. An instance may override it (a density on
    #: dequantised data is a bound on a probability mass: see :class:`Density`).
    data_kind = "continuous"

    def __init__(self, event_shape: Sequence[int] = ()):
        super().__init__()
        self.event_shape = tuple(event_shape)

    def param_shape(self, event_shape: Sequence[int]) -> tuple[int, ...]:
        """The decoder's output shape for data of ``event_shape``."""
        first, *rest = event_shape
        return (self.num_params * first, *rest)

    def split(self, params: torch.Tensor, event_dim: int) -> tuple[torch.Tensor, ...]:
        return params.chunk(self.num_params, dim=-event_dim)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """log p(x|z): x [B, *event], params [..., B, *param_event] -> [..., B]."""
        raise NotImplementedError

    def nll(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """-log p(x|z), the reconstruction term of one sample: ``-log_prob``, which a likelihood computed as a
        loss (the Bernoulli's cross-entropy) overrides to skip two negations on the training's hot path."""
        return -self.log_prob(x, params, event_dim)

    def mean(self, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The mean of p(x|z): what a reconstruction or a sample shows."""
        raise NotImplementedError


class Density(Likelihood):
    """A density over intensities in [0, 1], optionally on uniformly dequantised 8-bit data.

    Subclasses implement :meth:`log_density`; ``log_prob`` applies it to x (``dequantize="none"``) or,
    with ``dequantize="uniform"``, to y = (k + u) / 256, k = round(255 x), u ~ U[0, 1)^D, and returns

        log p(y|z) - D log 256,

    a lower bound on the log probability mass of the 8-bit x in expectation over u. Why: let P(x) be the
    mass the density gives to the cell [k/256, (k+1)/256)^D of x. Then, with y = (k + u) / 256 and
    dy = du / 256^D,

        log P(x) = log  integral_cell p(y) dy  =  log E_u[p(y)] - D log 256  >=  E_u[log p(y)] - D log 256

    (Jensen). So the instance is a bound on a probability mass over the 256^D values: its ``data_kind``
    is "discrete" and test/bpd is comparable with the discrete likelihoods'. Each of the K samples of z
    gets its own u, so (z, u) are drawn together from q(z|x) U[0, 1)^D: the importance-sampled test
    log p(x) then tends to log P(x) itself as the number of samples grows, not only to the bound.
    """

    def __init__(self, event_shape: Sequence[int] = (), dequantize: str = "none"):
        super().__init__(event_shape)
        self.dequantize = require_choice("dequantize", dequantize, DEQUANTIZATIONS)
        if self.dequantize == "uniform":
            self.data_kind = "discrete"

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        if self.dequantize == "none":
            return self.log_density(x, params, event_dim)
        leading = params.shape[: params.dim() - x.dim()]  # (K,) when K samples of z are decoded
        y = uniform_dequantize(x, leading).to(params.dtype)  # [*leading, B, *event]
        num_values = math.prod(x.shape[x.dim() - event_dim:])
        return self.log_density(y, params, event_dim) - num_values * math.log(LEVELS)

    def log_density(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """log p(x|z) of the density: x [..., B, *event], params [..., B, *param_event] -> [..., B]."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"dequantize={self.dequantize}" if self.dequantize != "none" else ""
