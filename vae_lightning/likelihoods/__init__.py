"""Decoder likelihoods p(x|z): turn the decoder's output (its *parameters*) into log p(x|z).

Contract (see :class:`~vae_lightning.likelihoods.base.Likelihood`): built as
``Likelihood(event_shape, **config)``; ``param_shape(event_shape)`` is the decoder's output
shape; ``log_prob(x, params, event_dim)`` sums over the ``event_dim`` trailing data dimensions
and keeps the leading (sample, batch) ones; ``mean(params, event_dim)`` is what pictures show.

Each says what data it is a distribution over (``data_kind``):
  binary      a probability mass on {0, 1}, for binarised images: Bernoulli
  discrete    a probability mass over the 256 values of 8-bit data (x = k / 255): DiscretizedLogistic,
              DiscretizedMixtureOfLogistics, Categorical, and any density with dequantize=uniform
              (Gaussian, LearnedGaussian, PredictedGaussian, ContinuousBernoulli), which is then a
              lower bound on that mass
  continuous  a density over intensities in [0, 1]: the densities with dequantize=none
For binary and discrete data the test NLL (nats per example) is also reported in bits per
dimension, test/bpd = nll / (D ln 2) for D data values per example; a density's NLL is not a code
length, so it gets none.
"""

from .base import Density, Likelihood
from .bernoulli import Bernoulli, ContinuousBernoulli
from .discretized import Categorical, DiscretizedLogistic, DiscretizedMixtureOfLogistics
from .gaussian import Gaussian, LearnedGaussian, PredictedGaussian

__all__ = ["Bernoulli", "Categorical", "ContinuousBernoulli", "Density", "DiscretizedLogistic",
           "DiscretizedMixtureOfLogistics", "Gaussian", "LearnedGaussian", "Likelihood", "PredictedGaussian"]
