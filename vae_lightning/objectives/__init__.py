"""Objectives: (x, q(z|x), decoder, prior, likelihood) -> the per-example terms of the bound.

Contract (see :mod:`.base`): an objective is called as
``objective(x, q, decode, prior, likelihood, step=0, with_iwae=False) -> Terms`` and returns
[B] tensors ``recon``, ``kl``, ``elbo``, ``loss`` (and ``iwae`` when asked or trained on). It
owns the number of samples K and the beta schedule. The KL is analytic when the
posterior/prior pair has a closed form, else the Monte-Carlo estimate from the same K samples.

Objectives: ELBO (beta, free bits), IWAE; MIWAE, CIWAE, PIWAE (Rainforth et al. 2018); BetaTCVAE (the KL
split into mi, tc, dwkl); MMD (InfoVAE, WAE-MMD). What an objective reports beyond the bound goes in
``Terms.extras`` and is logged under its name.
"""

from .base import Objective, Terms, free_bits_kl, iwae_bound, log_importance_weights
from .elbo import ELBO
from .iwae import IWAE
from .miwae import CIWAE, MIWAE, PIWAE
from .mmd import MMD
from .tcvae import BetaTCVAE

__all__ = ["BetaTCVAE", "CIWAE", "ELBO", "IWAE", "MIWAE", "MMD", "Objective", "PIWAE", "Terms", "free_bits_kl",
           "iwae_bound", "log_importance_weights"]
