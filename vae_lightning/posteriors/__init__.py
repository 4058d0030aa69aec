"""Posterior families q(z|x): the encoder's output -> a distribution over z.

Contract (see :mod:`.base`): a family is an ``nn.Module`` built as ``Family(latent_dim, **config)``
with ``num_params`` (how many numbers per example it wants from the encoder) and
``forward(params [B, num_params]) -> Posterior``. A :class:`Posterior` has ``rsample(K)`` ->
[K, B, D], ``rsample_and_log_prob(K)`` -> (z [K, B, D], log q(z|x) [K, B]) (what the objectives and
the test NLL call), ``log_prob(z)`` -> [K, B], ``mean`` [B, D], and, where a closed form exists,
``kl(prior)`` -> [B].

Families: :class:`DiagonalGaussianPosterior`, ``full_covariance.FullCovariancePosterior``, and two
normalising flows on a diagonal Gaussian, :class:`PlanarFlowPosterior` and :class:`IAFPosterior`.
A flow's :class:`FlowGaussian` knows log q only at the samples it draws: its ``log_prob(z)`` raises,
and its KL is always the Monte-Carlo one.
"""

from .base import Posterior, PosteriorFamily
from .diagonal_gaussian import DiagonalGaussian, DiagonalGaussianPosterior
from .iaf import IAFPosterior
from .flow import FlowGaussian
from .planar import PlanarFlowPosterior

__all__ = ["DiagonalGaussian", "DiagonalGaussianPosterior", "FlowGaussian", "IAFPosterior", "PlanarFlowPosterior",
           "Posterior", "PosteriorFamily"]
