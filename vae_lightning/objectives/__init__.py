"""Objectives: (x, q(z|x), decoder, prior, likelihood) -> the per-example terms of the bound.

Contract (see :mod:`.base`): an objective is called as
``objective(x, q, decode, prior, likelihood, step=0, with_iwae=False) -> Terms`` and returns
[B] tensors ``recon``, ``kl``, ``elbo``, ``loss`` (and ``iwae`` when asked or trained on). It
owns the number of samples K and the beta schedule. The KL is analytic when the
posterior/prior pair has a closed form, else the Monte-Carlo estimate from the same K samples.

Objectives: ELBO (beta, free bits), IWAE; MIWAE, CIWAE, PIWAE (Rainforth et al. 2018); BetaTCVAE (the KL
split into mi, tc, dwkl); MMD (InfoVAE, WAE-MMD); FactorVAE (a discriminator's total correlation, trained
with an optimiser of its own); DIPVAE (DIP-VAE-I and -II); AnnealedVAE (beta-VAE with an annealed
capacity). What an objective reports beyond the bound goes in ``Terms.extras`` and is logged under its
name.

An objective is a ``torch.nn.Module``; one with parameters of its own to train sets ``optimizer`` and
implements ``own_loss()`` (see :class:`Objective`).
"""

from .base import Objective, Terms, free_bits_kl, iwae_bound, log_importance_weights
from .capacity import AnnealedVAE
from .dip_vae import DIPVAE
from .elbo import ELBO
from .factor_vae import FactorVAE
from .iwae import IWAE
from .miwae import CIWAE, MIWAE, PIWAE
from .mmd import MMD
from .tcvae import BetaTCVAE

__all__ = ["AnnealedVAE", "BetaTCVAE", "CIWAE", "DIPVAE", "ELBO", "FactorVAE", "IWAE", "MIWAE", "MMD", "Objective",
           "PIWAE", "Terms", "free_bits_kl", "iwae_bound", "log_importance_weights"]
