"""Objectives: (x, q(z|x), decoder, prior, likelihood) -> the per-example terms of the bound.

Contract (see :mod:`.base`): an objective is called as
``objective(x, q, decode, prior, likelihood, step=0, with_iwae=False) -> Terms`` and returns
[B] tensors ``recon``, ``kl``, ``elbo``, ``loss`` (and ``iwae`` when asked or trained on). It
owns the number of samples K and the beta schedule. The KL is analytic when the
posterior/prior pair has a closed form, else the Monte-Carlo estimate from the same K samples.
"""

from .base import Objective, Terms, free_bits_kl, iwae_bound, log_importance_weights
from .elbo import ELBO
from .iwae import IWAE

__all__ = ["ELBO", "IWAE", "Objective", "Terms", "free_bits_kl", "iwae_bound", "log_importance_weights"]
