"""Decoder likelihoods p(x|z).

Each likelihood turns what the decoder outputs (its *parameters*) into
log p(x|z) for every example, summed over the data dimensions, in nats, with
every normalising constant kept. Shapes follow ``torch.distributions``: leading
sample and batch dimensions are kept, the ``event_dim`` trailing dimensions of
the data (e.g. ``(1, 28, 28)``) are summed away.

A likelihood with P parameters per data value asks the decoder for P times as
many channels: ``param_shape((C, H, W)) == (P * C, H, W)``; they are split
along that first event dimension.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import ContinuousBernoulli as _ContinuousBernoulli


def _sum_event(t: torch.Tensor, event_dim: int) -> torch.Tensor:
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim > 0 else t


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, sigma^2) elementwise: -0.5 [log(2 pi sigma^2) + (x - mean)^2 / sigma^2]."""
    var = sigma**2 if isinstance(sigma, float) else sigma.pow(2)
    log_var = math.log(var) if isinstance(var, float) else var.log()
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / var)


class Likelihood(nn.Module):
    """Base class: ``log_prob(x, params, event_dim)`` -> tensor of the leading (sample, batch) dims."""

    #: How many parameter tensors shaped like x the decoder outputs.
    num_params = 1

    def param_shape(self, event_shape: Sequence[int]) -> tuple[int, ...]:
        """The decoder's output shape for data of ``event_shape``."""
        first, *rest = event_shape
        return (self.num_params * first, *rest)

    def split(self, params: torch.Tensor, event_dim: int) -> tuple[torch.Tensor, ...]:
        return params.chunk(self.num_params, dim=-event_dim)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The mean of p(x|z): what a reconstruction or a sample shows."""
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Bernoulli over each pixel, parameterised by logits (for binarised images).

    log p(x|z) = -BCE-with-logits(logits, x), summed over pixels. The logits form
    never takes the log of a probability that underflowed to 0 or 1.
    """

    def log_prob(self, x, params, event_dim):
        x = x.expand_as(params)  # [B, *event] -> [K, B, *event] when K samples are drawn
        return _sum_event(-F.binary_cross_entropy_with_logits(params, x, reduction="none"), event_dim)

    def mean(self, params, event_dim):
        return torch.sigmoid(params)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli (Loaiza-Ganem and Cunningham 2019), for intensities in [0, 1].

    The Bernoulli log-likelihood applied to non-binary x is not a density; this
    is: it adds log C(lambda), the normaliser, computed stably by
    ``torch.distributions.ContinuousBernoulli``. Its mean is not sigmoid(logits).
    """

    def log_prob(self, x, params, event_dim):
        return _sum_event(_ContinuousBernoulli(logits=params).log_prob(x.expand_as(params)), event_dim)

    def mean(self, params, event_dim):
        return _ContinuousBernoulli(logits=params).mean


class Gaussian(Likelihood):
    """Gaussian with a fixed standard deviation ``sigma``: N(x; mu_theta(z), sigma^2 I).

    log p(x|z) = -0.5 * sum_d [ log(2 pi sigma^2) + (x_d - mu_d)^2 / sigma^2 ].

    The normalising constant is kept, so the value is a true log-density in nats
    and can be compared across sigmas and with other likelihoods. (The source
    derivation writes ``ln((x - mu)^2 / (2 sigma^2))``: that is not a
    log-density; this is.)
    """

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"Gaussian likelihood: sigma must be > 0, got {sigma} (config key model.sigma).")
        self.sigma = float(sigma)

    def log_prob(self, x, params, event_dim):
        return _sum_event(_gaussian_log_prob(x, params, self.sigma), event_dim)

    def mean(self, params, event_dim):
        return params

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LearnedGaussian(Likelihood):
    """Gaussian whose sigma is a learned parameter: one scalar, or one per data value.

    sigma = min_sigma + softplus(raw), so it can never reach 0 (where the density
    of binary or quantised data would grow without bound); it starts at ``sigma``.
    """

    def __init__(self, event_shape: Sequence[int], per_pixel: bool = False, sigma: float = 1.0,
                 min_sigma: float = 1e-2):
        super().__init__()
        if not sigma > min_sigma >= 0:
            raise ValueError(f"Learned Gaussian: need sigma > min_sigma >= 0, got sigma={sigma}, "
                             f"min_sigma={min_sigma} (config keys model.sigma, model.min_sigma).")
        self.min_sigma = float(min_sigma)
        shape = tuple(event_shape) if per_pixel else ()
        self.raw_sigma = nn.Parameter(torch.full(shape, _softplus_inverse(sigma - min_sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.min_sigma + F.softplus(self.raw_sigma)

    def log_prob(self, x, params, event_dim):
        return _sum_event(_gaussian_log_prob(x, params, self.sigma), event_dim)

    def mean(self, params, event_dim):
        return params


class PredictedGaussian(Likelihood):
    """Gaussian whose mean and sigma the decoder predicts for each data value.

    sigma = min_sigma + softplus(output), bounded below so it cannot collapse.
    """

    num_params = 2

    def __init__(self, min_sigma: float = 1e-2):
        super().__init__()
        if not min_sigma > 0:
            raise ValueError(f"Predicted Gaussian: min_sigma must be > 0, got {min_sigma} (config key model.min_sigma).")
        self.min_sigma = float(min_sigma)

    def log_prob(self, x, params, event_dim):
        mean, raw = self.split(params, event_dim)
        return _sum_event(_gaussian_log_prob(x, mean, self.min_sigma + F.softplus(raw)), event_dim)

    def mean(self, params, event_dim):
        return self.split(params, event_dim)[0]


LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned",
               "gaussian_learned_per_pixel", "gaussian_predicted")


def make_likelihood(name: str, event_shape: Sequence[int] = (1,), sigma: float = 1.0,
                    min_sigma: float = 1e-2) -> Likelihood:
    """Build a likelihood by its config name (``model.likelihood``)."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "continuous_bernoulli":
        return ContinuousBernoulli()
    if name == "gaussian":
        return Gaussian(sigma)
    if name in ("gaussian_learned", "gaussian_learned_per_pixel"):
        return LearnedGaussian(event_shape, per_pixel=name.endswith("per_pixel"), sigma=sigma, min_sigma=min_sigma)
    if name == "gaussian_predicted":
        return PredictedGaussian(min_sigma)
    raise ValueError(f"Unknown likelihood {name!r}: choose one of {list(LIKELIHOODS)} (config key model.likelihood).")
