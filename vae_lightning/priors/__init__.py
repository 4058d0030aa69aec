"""Priors p(z).

Contract (see :mod:`.base`): an ``nn.Module`` built as ``Prior(latent_dim, **config)`` with
``log_prob(z)`` [..., D] -> [...], ``sample(n, generator=None)`` -> [n, D], optional learnable
parameters (they train with the rest of the model), and optionally a closed-form KL with a posterior
family, registered with :func:`vae_lightning.kl.register_kl`. The base class gives every prior
``device`` and ``dtype`` (the model's) and ``randn`` / ``rand`` (noise there, from an optional
generator), so that ``sample`` makes its draws where the model lives.
"""

from .base import Prior
from .standard_normal import StandardNormal

__all__ = ["Prior", "StandardNormal"]
