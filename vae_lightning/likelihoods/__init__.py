"""Decoder likelihoods p(x|z): turn the decoder's output (its *parameters*) into log p(x|z).

Contract (see :class:`~vae_lightning.likelihoods.base.Likelihood`): built as
``Likelihood(event_shape, **config)``; ``param_shape(event_shape)`` is the decoder's output
shape; ``log_prob(x, params, event_dim)`` sums over the ``event_dim`` trailing data dimensions
and keeps the leading (sample, batch) ones; ``mean(params, event_dim)`` is what pictures show.
"""

from .base import Likelihood
from .bernoulli import Bernoulli, ContinuousBernoulli
from .gaussian import Gaussian, LearnedGaussian, PredictedGaussian

__all__ = ["Bernoulli", "ContinuousBernoulli", "Gaussian", "LearnedGaussian", "Likelihood", "PredictedGaussian"]
