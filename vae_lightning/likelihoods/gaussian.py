"""Gaussian likelihoods: a fixed sigma, a learned one (scalar or per pixel), or one the decoder predicts.

Each is a density on intensities; ``dequantize="uniform"`` makes it a bound on the probability mass
of 8-bit data (see :class:`~vae_lightning.likelihoods.base.Density`)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import require_bool, require_number
from ..errors import ConfigError
from .base import Density, sum_event


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, sigma^2) elementwise: -0.5 [log(2 pi sigma^2) + (x - mean)^2 / sigma^2]."""
    var = sigma**2 if isinstance(sigma, float) else sigma.pow(2)
    log_var = math.log(var) if isinstance(var, float) else var.log()
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / var)


class Gaussian(Density):
    """Gaussian with a fixed standard deviation ``sigma``: N(x; mu_theta(z), sigma^2 I).

    log p(x|z) = -0.5 * sum_d [ log(2 pi sigma^2) + (x_d - mu_d)^2 / sigma^2 ].

    The normalising constant is kept, so the value is a true log-density in nats
    and can be compared across sigmas and with other likelihoods. (The source
    derivation writes ``ln((x - mu)^2 / (2 sigma^2))``: that is not a
    log-density; this is.)
    """

    def __init__(self, event_shape: Sequence[int] = (), sigma: float = 1.0, dequantize: str = "none"):
        super().__init__(event_shape, dequantize)
        self.sigma = require_number("sigma", sigma, above=0)

    def log_density(self, x, params, event_dim):
        return sum_event(gaussian_log_prob(x, params, self.sigma), event_dim)

    def mean(self, params, event_dim):
        return params

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [f"sigma={self.sigma}", super().extra_repr()]))


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LearnedGaussian(Density):
    """Gaussian whose sigma is a learned parameter: one scalar, or one per data value (``per_pixel``).

    sigma = min_sigma + softplus(raw), so it can never reach 0 (where the density
    of binary or quantised data would grow without bound); it starts at ``sigma``.
    """

    def __init__(self, event_shape: Sequence[int] = (), sigma: float = 1.0, min_sigma: float = 1e-2,
                 per_pixel: bool = False, dequantize: str = "none"):
        super().__init__(event_shape, dequantize)
        require_number("min_sigma", min_sigma, least=0)
        if not require_number("sigma", sigma) > min_sigma:
            raise ConfigError("sigma", sigma, f"must be > min_sigma={min_sigma} (it is where sigma starts)")
        self.min_sigma = float(min_sigma)
        shape = tuple(event_shape) if require_bool("per_pixel", per_pixel) else ()
        self.raw_sigma = nn.Parameter(torch.full(shape, _softplus_inverse(sigma - min_sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.min_sigma + F.softplus(self.raw_sigma)

    def log_density(self, x, params, event_dim):
        return sum_event(gaussian_log_prob(x, params, self.sigma), event_dim)

    def mean(self, params, event_dim):
        return params


class PredictedGaussian(Density):
    """Gaussian whose mean and sigma the decoder predicts for each data value.

    sigma = min_sigma + softplus(output), bounded below so it cannot collapse.
    """

    num_params = 2

    def __init__(self, event_shape: Sequence[int] = (), min_sigma: float = 1e-2, dequantize: str = "none"):
        super().__init__(event_shape, dequantize)
        self.min_sigma = require_number("min_sigma", min_sigma, above=0)

    def log_density(self, x, params, event_dim):
        mean, raw = self.split(params, event_dim)
        return sum_event(gaussian_log_prob(x, mean, self.min_sigma + F.softplus(raw)), event_dim)

    def mean(self, params, event_dim):
        return self.split(params, event_dim)[0]
