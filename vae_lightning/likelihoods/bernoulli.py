"""Bernoulli likelihoods: for binarised images, and the continuous Bernoulli for intensities in [0, 1]
(optionally on dequantised 8-bit data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import ContinuousBernoulli as _ContinuousBernoulli

from .base import Density, Likelihood, sum_event


class Bernoulli(Likelihood):
    """Bernoulli over each pixel, parameterised by logits (for binarised images).

    log p(x|z) = -BCE-with-logits(logits, x), summed over pixels. The logits form
    never takes the log of a probability that underflowed to 0 or 1.
    """

    data_kind = "binary"

    def log_prob(self, x, params, event_dim):
        return -self._cross_entropy(x, params, event_dim)

    def nll(self, x, params, event_dim):
        if type(self).log_prob is not Bernoulli.log_prob:  # a subclass's own log_prob defines it
            return -self.log_prob(x, params, event_dim)
        return self._cross_entropy(x, params, event_dim)

    @staticmethod
    def _cross_entropy(x, params, event_dim):
        if x.shape != params.shape:
            x = x.expand_as(params)  # [B, *event] -> [K, B, *event] when K samples are drawn
        return sum_event(F.binary_cross_entropy_with_logits(params, x, reduction="none"), event_dim)

    def mean(self, params, event_dim):
        return torch.sigmoid(params)


class ContinuousBernoulli(Density):
    """The continuous Bernoulli (Loaiza-Ganem and Cunningham 2019), for intensities in [0, 1].

    The Bernoulli log-likelihood applied to non-binary x is not a density; this
    is: it adds log C(lambda), the normaliser, computed stably by
    ``torch.distributions.ContinuousBernoulli``. Its mean is not sigmoid(logits). With
    ``dequantize="uniform"`` it bounds the probability mass of 8-bit data (see ``Density``).
    """

    def log_density(self, x, params, event_dim):
        return sum_event(_ContinuousBernoulli(logits=params).log_prob(x.expand_as(params)), event_dim)

    def mean(self, params, event_dim):
        return _ContinuousBernoulli(logits=params).mean
