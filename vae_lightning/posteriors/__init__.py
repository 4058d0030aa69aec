"""Posterior families q(z|x): the encoder's output -> a distribution over z.

Contract (see :mod:`.base`): a family is an ``nn.Module`` built as ``Family(latent_dim, **config)``
with ``num_params`` (how many numbers per example it wants from the encoder) and
``forward(params [B, num_params]) -> Posterior``. A :class:`Posterior` has ``rsample(K)`` ->
[K, B, D], ``log_prob(z)`` -> [K, B], ``mean`` [B, D], and, where a closed form exists,
``kl(prior)`` -> [B].
"""

from .base import Posterior, PosteriorFamily
from .diagonal_gaussian import DiagonalGaussian, DiagonalGaussianPosterior

__all__ = ["DiagonalGaussian", "DiagonalGaussianPosterior", "Posterior", "PosteriorFamily"]
