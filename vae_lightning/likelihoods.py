"""Decoder likelihoods p(x|z).

Each likelihood turns what the decoder outputs (its *parameters*, one tensor
shaped like the data) into log p(x|z) for every example, summed over the data
dimensions, in nats. Shapes follow ``torch.distributions``: leading sample and
batch dimensions are kept, the event dimensions (the last ``len(event_shape)``
ones, e.g. ``(1, 28, 28)``) are summed away.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Likelihood(nn.Module):
    """Base class: ``log_prob(x, params)`` -> tensor of ``params.shape[:-event_dim]``."""

    #: What the decoder's output means, for messages and docs.
    param_name = "params"

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): what a reconstruction or a sample shows."""
        raise NotImplementedError


def _sum_event(t: torch.Tensor, event_dim: int) -> torch.Tensor:
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim > 0 else t


class Bernoulli(Likelihood):
    """Bernoulli over each pixel, parameterised by logits (for binarised images).

    log p(x|z) = -BCE-with-logits(logits, x), summed over pixels. The logits form
    never takes the log of a probability that underflowed to 0 or 1.
    """

    param_name = "logits"

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        x = x.expand_as(params)  # [B, *event] -> [K, B, *event] when K samples are drawn
        log_px = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
        return _sum_event(log_px, event_dim)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class Gaussian(Likelihood):
    """Gaussian with a fixed standard deviation ``sigma``: N(x; mu_theta(z), sigma^2 I).

    log p(x|z) = -0.5 * sum_d [ log(2 pi sigma^2) + (x_d - mu_d)^2 / sigma^2 ].

    The normalising constant is kept, so the value is a true log-density in nats
    and can be compared across sigmas and with other likelihoods. (The source
    derivation writes ``ln((x - mu)^2 / (2 sigma^2))``: that is not a
    log-density; this is.)
    """

    param_name = "mean"

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"Gaussian likelihood: sigma must be > 0, got {sigma}.")
        self.sigma = float(sigma)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        var = self.sigma**2
        log_px = -0.5 * (math.log(2 * math.pi * var) + (x - params) ** 2 / var)
        return _sum_event(log_px, event_dim)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


LIKELIHOODS: dict[str, type[Likelihood]] = {"bernoulli": Bernoulli, "gaussian": Gaussian}


def make_likelihood(name: str, **kwargs) -> Likelihood:
    """Build a likelihood by its config name, with a clear error for an unknown one."""
    try:
        cls = LIKELIHOODS[name]
    except KeyError:
        raise ValueError(
            f"Unknown likelihood {name!r}: choose one of {sorted(LIKELIHOODS)} "
            f"(config key model.likelihood)."
        ) from None
    return cls(**kwargs)
