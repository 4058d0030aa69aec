"""Likelihoods of 8-bit data: probability masses over the 256 values k = 0..255 of each data value.

The DataModules hand the model x = k / 255; :func:`~vae_lightning.likelihoods.base.pixel_values`
gets k back. Each likelihood here sums to exactly 1 over the 256 values (256^C colours of a pixel
for the mixture), so -log p(x|z) is a code length and test/bpd = nll / (D ln 2) is the usual figure.

The logistic ones work on PixelCNN++'s scale (Salimans et al. 2017): x' = 2x - 1 in [-1, 1], where
value k is the bin of width 2/255 around 2k/255 - 1. The decoder's means and log-scales are in those
units, so ``min_log_scale = -7`` and the channel coefficients mean what they mean in PixelCNN++, and
a decoder that outputs 0 starts at grey. (A mass is the same whatever the scale: no Jacobian.)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..checks import require_int, require_number
from .base import LEVELS, MAX_VALUE, Likelihood, pixel_values, sum_event

#: Half the width of a bin on the [-1, 1] scale.
HALF_BIN = 1.0 / MAX_VALUE


def to_signed_scale(k: torch.Tensor) -> torch.Tensor:
    """The centre 2k/255 - 1 in [-1, 1] of bin k."""
    return 2 * k / MAX_VALUE - 1


def to_unit_interval(v: torch.Tensor) -> torch.Tensor:
    """A value on the [-1, 1] scale as an intensity x = (v + 1) / 2, clamped to [0, 1]."""
    return ((v + 1) / 2).clamp(0, 1)


def logistic_bin_log_mass(k: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin k) under Logistic(mean, exp(log_scale)) on the [-1, 1] scale, elementwise (broadcasting).

    Bin k is [c - 1/255, c + 1/255] around c = 2k/255 - 1, except that bin 0 reaches down to -inf and
    bin 255 up to +inf, so the 256 masses sum to 1. With the standardised edges
    a = (c + 1/255 - mean) / s and b = (c - 1/255 - mean) / s, the identity

        sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(-(a - b)))

    gives the mass in log space with no cancellation, far in either tail or for a sharp logistic:

        log P = logsigmoid(a) + logsigmoid(-b) + log(-expm1(-(a - b))),

    and the edge bins are logsigmoid(a) (bin 0) and logsigmoid(-b) (bin 255). The width a - b = 2 / (255 s)
    is computed directly. Only where it underflows (s beyond ~1e35 in float32) does PixelCNN++'s
    fallback take over: the log density at the bin's centre plus the log of the bin's width.
    """
    inv_scale = torch.exp(-log_scale)
    centred = to_signed_scale(k) - mean
    upper = inv_scale * (centred + HALF_BIN)  # a
    lower = inv_scale * (centred - HALF_BIN)  # b
    width = inv_scale * (2 * HALF_BIN)  # a - b
    log_cdf_upper = F.logsigmoid(upper)  # log P(X <= upper edge)
    log_sf_lower = F.logsigmoid(-lower)  # log P(X > lower edge)

    # The clamp keeps the unused branch finite, so that torch.where passes no NaN gradient back.
    tiny = torch.finfo(width.dtype).tiny
    log_interior = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-width.clamp_min(tiny)))
    mid = inv_scale * centred
    log_pdf_centre = mid - log_scale - 2 * F.softplus(mid)  # log of the logistic density at c
    log_interior = torch.where(width > tiny, log_interior, log_pdf_centre + math.log(2 * HALF_BIN))

    return torch.where(k == 0, log_cdf_upper, torch.where(k == MAX_VALUE, log_sf_lower, log_interior))


class DiscretizedLogistic(Likelihood):
    """A logistic per data value, discretised to the 256 values (Salimans et al. 2017, one component).

    The decoder outputs a mean and a log-scale per data value (twice the channels), on the [-1, 1]
    scale of this module's docstring. The log-scale is bounded below by ``min_log_scale`` (-7, as in
    PixelCNN++: a bin then holds at most ~97% of the mass), so the loss cannot run off to a spike.
    """

    num_params = 2
    data_kind = "discrete"

    def __init__(self, event_shape: Sequence[int] = (), min_log_scale: float = -7.0):
        super().__init__(event_shape)
        self.min_log_scale = require_number("min_log_scale", min_log_scale)

    def log_prob(self, x, params, event_dim):
        mean, log_scale = self.split(params, event_dim)  # [..., B, C, H, W] each
        log_mass = logistic_bin_log_mass(pixel_values(x), mean, log_scale.clamp_min(self.min_log_scale))
        return sum_event(log_mass, event_dim)

    def mean(self, params, event_dim):
        """The logistic's mean as an intensity, clamped to [0, 1]."""
        return to_unit_interval(self.split(params, event_dim)[0])

    def extra_repr(self) -> str:
        return f"min_log_scale={self.min_log_scale}"


def channel_pairs(num_channels: int) -> list[tuple[int, int]]:
    """The pairs (c, j), j < c, of a pixel's channels, in PixelCNN++'s order: (1, 0), (2, 0), (2, 1), ..."""
    return [(c, j) for c in range(num_channels) for j in range(c)]


def params_per_component(num_channels: int) -> int:
    """1 logit + C means + C log-scales + C(C-1)/2 coefficients = (C + 1)(C + 2) / 2 (10 for RGB)."""
    return (num_channels + 1) * (num_channels + 2) // 2


def couple_channels(means: torch.Tensor, coefficients: torch.Tensor, values: torch.Tensor | None,
                    channel_dim: int) -> torch.Tensor:
    """PixelCNN++'s linear coupling of a pixel's channels: mean_c + sum_{j<c} coefficient_cj * value_j.

    means [..., C, *S], coefficients [..., C(C-1)/2, *S] (in ``channel_pairs`` order, already in (-1, 1)),
    values [..., C, *S] broadcastable to means (the true values of the channels), or None: the coupled
    means themselves (for the mean of the distribution). Returns [..., C, *S].
    """
    coupled = list(means.unbind(channel_dim))
    # With values=None, `earlier` is `coupled` itself: the pairs come in order of c, so channel j < c
    # is final when channel c reads it.
    earlier = coupled if values is None else list(values.unbind(channel_dim))
    weights = coefficients.unbind(channel_dim)
    for t, (c, j) in enumerate(channel_pairs(len(coupled))):
        coupled[c] = coupled[c] + weights[t] * earlier[j]
    return torch.stack(torch.broadcast_tensors(*coupled), channel_dim)  # channel 0 may not have met the values


class DiscretizedMixtureOfLogistics(Likelihood):
    """PixelCNN++'s discretised mixture of logistics (Salimans et al. 2017), for C channels.

    Each pixel has ``num_mixtures`` (M) components, whose weights are shared by the pixel's channels.
    In component m, channel c is a discretised logistic whose mean depends linearly on the true values
    of the earlier channels of the same pixel:

        mean_mc = mu_mc + sum_{j<c} tanh(alpha_m,cj) * x'_j          (x' = 2x - 1)

    which for C = 3 is PixelCNN++'s RGB model exactly. The decoder's channels, per pixel, in order:

        logits        [M]            mixture weights (softmax)
        means         [M, C]         mu, on the [-1, 1] scale
        log-scales    [M, C]         bounded below by min_log_scale
        coefficients  [M, C(C-1)/2]  alpha, for the pairs (1, 0), (2, 0), (2, 1), ...

    so M (C + 1)(C + 2) / 2 channels in all (``param_shape``; 10 M for RGB), each block component-major.
    """

    data_kind = "discrete"

    def __init__(self, event_shape: Sequence[int] = (), num_mixtures: int = 10, min_log_scale: float = -7.0):
        super().__init__(event_shape)
        self.num_mixtures = require_int("num_mixtures", num_mixtures, least=1)
        self.min_log_scale = require_number("min_log_scale", min_log_scale)

    def param_shape(self, event_shape: Sequence[int]) -> tuple[int, ...]:
        channels, *rest = event_shape
        return (self.num_mixtures * params_per_component(channels), *rest)

    def num_channels(self, num_param_channels: int) -> int:
        """C from the decoder's M (C + 1)(C + 2) / 2 channels."""
        per_component = num_param_channels // self.num_mixtures
        channels = (math.isqrt(8 * per_component + 1) - 3) // 2
        if channels < 1 or self.num_mixtures * params_per_component(channels) != num_param_channels:
            raise ValueError(f"{num_param_channels} parameter channels are not num_mixtures={self.num_mixtures} "
                             f"times (C + 1)(C + 2) / 2 for any number of channels C: see param_shape.")
        return channels

    def split(self, params, event_dim):
        """params [..., P, *S] -> logits [..., M, *S], means and log-scales [..., M, C, *S] each,
        coefficients [..., M, C(C-1)/2, *S] (P = M (C + 1)(C + 2) / 2 channels, *S the pixel dims)."""
        m = self.num_mixtures
        c = self.num_channels(params.shape[-event_dim])
        pairs = c * (c - 1) // 2
        logits, means, log_scales, coefficients = params.split([m, m * c, m * c, m * pairs], dim=-event_dim)
        return (logits, means.unflatten(-event_dim, (m, c)), log_scales.unflatten(-event_dim, (m, c)),
                coefficients.unflatten(-event_dim, (m, pairs)))

    def log_prob(self, x, params, event_dim):
        channel_dim = -event_dim  # of x, and of the [..., M, C, *S] blocks; their component dim is before it
        logits, means, log_scales, coefficients = self.split(params, event_dim)
        k = pixel_values(x).unsqueeze(x.dim() - event_dim)  # [B, C, *S] -> [B, 1, C, *S]
        means = couple_channels(means, torch.tanh(coefficients), to_signed_scale(k), channel_dim)
        log_mass = logistic_bin_log_mass(k, means, log_scales.clamp_min(self.min_log_scale))  # [..., B, M, C, *S]
        # Summed over channels, the component dim takes the channels' place: [..., B, M, *S].
        log_joint = log_mass.sum(channel_dim) + F.log_softmax(logits, dim=channel_dim)
        return sum_event(torch.logsumexp(log_joint, dim=channel_dim), event_dim - 1)  # [..., B, *S] -> [..., B]

    def mean(self, params, event_dim):
        """The mixture's mean, each component's channels coupled to the means of its earlier channels,
        as an intensity clamped to [0, 1]: [..., C, *S]."""
        channel_dim = -event_dim
        logits, means, _, coefficients = self.split(params, event_dim)
        means = couple_channels(means, torch.tanh(coefficients), None, channel_dim)  # [..., M, C, *S]
        weights = F.softmax(logits, dim=channel_dim).unsqueeze(channel_dim)  # [..., M, *S] -> [..., M, 1, *S]
        return to_unit_interval((weights * means).sum(channel_dim - 1))  # [..., C, *S]

    def extra_repr(self) -> str:
        return f"num_mixtures={self.num_mixtures}, min_log_scale={self.min_log_scale}"


class Categorical(Likelihood):
    """A 256-way softmax over the values of each data value (van den Oord et al. 2016), no assumption of
    order or smoothness between neighbouring values.

    The decoder outputs 256 logits per data value, value-major: ``param_shape((C, H, W)) == (256 C, H, W)``
    and channel v C + c is the logit of value v in channel c (the base class's ``split`` into 256 chunks
    gives the same order). Zero logits are the uniform distribution: exactly 8 bits per value.
    """

    num_params = LEVELS
    data_kind = "discrete"

    def log_softmax(self, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """params [..., 256 C, *S] -> log-probabilities [..., 256, C, *S]."""
        logits = params.unflatten(-event_dim, (LEVELS, -1))
        return F.log_softmax(logits, dim=-event_dim - 1)

    def log_prob(self, x, params, event_dim):
        value_dim = -event_dim - 1
        log_p = self.log_softmax(params, event_dim)  # [..., B, 256, C, *S]
        k = pixel_values(x).long().unsqueeze(x.dim() - event_dim)  # [B, C, *S] -> [B, 1, C, *S]
        k = k.expand(*log_p.shape[:value_dim], 1, *log_p.shape[value_dim + 1:])  # [..., B, 1, C, *S]
        return sum_event(log_p.gather(value_dim, k).squeeze(value_dim), event_dim)

    def mean(self, params, event_dim):
        """The expected value / 255: [..., C, *S]."""
        probs = self.log_softmax(params, event_dim).exp()  # [..., 256, C, *S]
        values = torch.arange(LEVELS, dtype=probs.dtype, device=probs.device) / MAX_VALUE
        return (probs * values.view(LEVELS, *([1] * event_dim))).sum(-event_dim - 1)
