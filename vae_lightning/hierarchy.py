"""A VAE with two stochastic layers (the second MNIST architecture of Burda et al. 2016), as three parts.

    generative:  z2 ~ N(0, I),   z1 | z2 ~ N(mu_p(z2), diag sigma_p^2(z2)),   x | z1 ~ p(x | z1)
    inference:   z1 | x ~ N(mu_q(x), diag sigma_q^2(x)),   z2 | z1 ~ N(mu_r(z1), diag sigma_r^2(z1))

The rest of the framework sees one latent code z = [z1, z2] of d1 + d2 dimensions, and the objectives,
the IWAE bound and the test NLL work unchanged on it:

    log w = log p(x|z1)  +  log p(z1|z2) + log p(z2)  -  log q(z1|x) - log q(z2|z1)
            (decoder)       (TwoLayerPrior.log_prob)     (TwoLayerGaussian.log_prob)

    model/posterior=two_layer  TwoLayerPosterior: the encoder gives q(z1|x)'s 2 d1 numbers; it owns the
                               q(z2|z1) network and gives q(z1, z2 | x) = q(z1|x) q(z2|z1).
    model/prior=two_layer      TwoLayerPrior: owns the p(z1|z2) network; p(z2) = N(0, I); samples ancestrally.
    model/decoder=two_layer    TwoLayerDecoder: an MLP that reads z1 only.

No pair of them has a closed-form KL: the objective takes the Monte-Carlo KL from its own samples.

Sizes: ``model.latent_dim`` is d2, the size of the top layer (the one whose prior is N(0, I), 50 in
Burda's model and the size ``+experiment=burda`` sets), and ``model.posterior.lower_dim`` is d1 (100).
The model's latent code, what ``VAE.latent_dim`` and every metric see, is z = [z1, z2] of d1 + d2
(150). The prior and the decoder ask for the posterior (by naming it in ``__init__``) to learn d1 and d2.

Networks (``model=two_layer``), the sizes of Burda et al.'s released code (github.com/yburda/iwae,
``experiments.py --layers 2``: latent units [100, 50], q's hidden units [[200, 200], [100, 100]], p's
[[100, 100], [200, 200]]), tanh deterministic layers, the generative network mirroring the recognition
network:

    q:  x -> 200 -> 200 -> z1 (100) -> 100 -> 100 -> z2 (50)    (encoder: mlp [200, 200]; posterior [100, 100])
    p:  z2 (50) -> 100 -> 100 -> z1 (100) -> 200 -> 200 -> x    (prior [100, 100]; decoder [200, 200])

(The classes' own defaults for the q(z2|z1) and p(z1|z2) networks are smaller, [50, 50]; the configs
``model/posterior=two_layer`` and ``model/prior=two_layer`` set Burda's [100, 100].)

Each Gaussian layer's network outputs its mean and log-variance; ``hidden_dims: []`` makes it one linear map.

Active units (``val/active_units``): the posterior's ``mean`` is [E_q[z1], mu_r(E_q[z1])], the mean of
z1 and then the mean of q(z2|z1) at z1 = E_q[z1] (one deterministic pass; the exact E_q[z2] would need
samples). ``val/active_units`` counts the active units of both layers together: dimensions 0..d1-1 are
z1, d1..d1+d2-1 are z2. ``val/active_units/z1`` and ``z2`` split the count by layer
(:func:`vae_lightning.evaluation.active_units_per_layer`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import torch
from torch import nn

from .checks import is_int, require_int, require_sizes
from .errors import ConfigError
from .nets.mlp import mlp
from .posteriors.base import Posterior, PosteriorFamily
from .posteriors.diagonal_gaussian import DiagonalGaussian
from .priors.base import Prior
from .priors.standard_normal import StandardNormal


def _hidden_sizes(key: str, values: Any) -> list[int]:
    """Layer sizes, possibly none (``[]``: one linear map)."""
    if isinstance(values, (list, tuple)) and len(values) == 0:
        return []
    return require_sizes(key, values, example="[50, 50], or [] for a linear map")


class GaussianLayer(nn.Module):
    """A conditional diagonal Gaussian N(mu(h), diag exp(logvar(h))), its mean and log-variance from an MLP:
    h [..., in_dim] -> a DiagonalGaussian over [..., out_dim] (leading dimensions pass through)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dims: Sequence[int], activation: str):
        super().__init__()
        self.out_dim = out_dim
        self.net = mlp([in_dim, *hidden_dims, 2 * out_dim], activation)

    def forward(self, h: torch.Tensor) -> DiagonalGaussian:
        loc, logvar = self.net(h).chunk(2, dim=-1)  # [..., out_dim] each
        return DiagonalGaussian(loc, logvar)


def draw(conditional: DiagonalGaussian, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reparameterised draw for each conditioning value: [..., d] -> [..., d]."""
    return conditional.rsample(1, generator=generator)[0]


# -- the posterior: q(z1, z2 | x) = q(z1|x) q(z2|z1) ---------------------------------------------------

class TwoLayerGaussian(Posterior):
    """q(z1|x) q(z2|z1) for a batch of B examples, over z = [z1, z2]: [..., B, d1 + d2].

    ``lower``: q(z1|x), a DiagonalGaussian with loc [B, d1]; ``upper``: the q(z2|z1) layer."""

    def __init__(self, lower: DiagonalGaussian, upper: GaussianLayer):
        self.lower, self.upper = lower, upper
        self.layer_dims = (lower.loc.shape[-1], upper.out_dim)

    @functools.cached_property
    def mean(self) -> torch.Tensor:
        """[E_q[z1], mean of q(z2 | z1 = E_q[z1])]: [B, d1 + d2] (see the module docstring)."""
        return torch.cat([self.lower.loc, self.upper(self.lower.loc).loc], dim=-1)

    @property
    def layer_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` split by layer: [B, d1], [B, d2]."""
        return self.mean.split(self.layer_dims, dim=-1)

    def rsample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z1 ~ q(z1|x), then z2 ~ q(z2|z1): [K, B, d1 + d2]."""
        z1 = self.lower.rsample(num_samples, generator=generator)  # [K, B, d1]
        return torch.cat([z1, draw(self.upper(z1), generator)], dim=-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z1|x) + log q(z2|z1), summed over both layers: [..., B, d1 + d2] -> [..., B]. Broadcasts."""
        z1, z2 = z.split(self.layer_dims, dim=-1)  # [..., B, d1], [..., B, d2]
        return self.lower.log_prob(z1) + self.upper(z1).log_prob(z2)

    def rsample_and_log_prob(self, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of :meth:`rsample` (the same for the same generator) and their log-density, the
        q(z2|z1) network run once: z [K, B, d1 + d2], log q [K, B]."""
        z1 = self.lower.rsample(num_samples, generator=generator)  # [K, B, d1]
        upper = self.upper(z1)  # q(z2 | z1) for each sample
        z2 = draw(upper, generator)  # [K, B, d2]
        return torch.cat([z1, z2], dim=-1), self.lower.log_prob(z1) + upper.log_prob(z2)


class TwoLayerPosterior(PosteriorFamily):
    """The encoder's [B, 2 d1] output read as q(z1|x)'s (mu, log sigma^2); the q(z2|z1) network is its own.

    latent_dim: d2, the top layer's size (``model.latent_dim``); lower_dim: d1. Its ``latent_dim`` is
    then that of z = [z1, z2], d1 + d2; ``layer_dims`` is (d1, d2).
    hidden_dims, activation: the q(z2|z1) network's deterministic layers."""

    def __init__(self, latent_dim: int, lower_dim: int = 100, hidden_dims: Sequence[int] = (50, 50),
                 activation: str = "tanh"):
        top, lower = require_int("latent_dim", latent_dim, 1), require_int("lower_dim", lower_dim, 1)
        super().__init__(lower + top)
        self.layer_dims = (lower, top)
        self.upper = GaussianLayer(lower, top, _hidden_sizes("hidden_dims", hidden_dims), activation)

    @property
    def num_params(self) -> int:
        return 2 * self.layer_dims[0]

    def forward(self, params: torch.Tensor) -> TwoLayerGaussian:
        loc, logvar = params.chunk(2, dim=-1)  # [B, d1] each
        return TwoLayerGaussian(DiagonalGaussian(loc, logvar), self.upper)


def _layer_dims(part: type, posterior: Any, latent_dim: Any) -> tuple[int, int]:
    """(d1, d2) of the two-layer posterior the prior or the decoder is built with; a ConfigError otherwise."""
    if not isinstance(posterior, TwoLayerPosterior):
        raise ConfigError("_target_", f"{part.__module__}.{part.__qualname__}",
                          f"needs the two-layer posterior (model/posterior=two_layer, as model=two_layer sets), "
                          f"not {type(posterior).__name__}")
    if not is_int(latent_dim) or latent_dim != posterior.layer_dims[1]:
        raise ConfigError("latent_dim", latent_dim, f"must be the top layer's size, {posterior.layer_dims[1]}, "
                                                    f"as for the posterior")
    return posterior.layer_dims


# -- the prior: p(z1, z2) = p(z2) p(z1|z2) -------------------------------------------------------------

class TwoLayerPrior(Prior):
    """p(z2) p(z1|z2) over z = [z1, z2], p(z2) = N(0, I), p(z1|z2) a Gaussian layer of its own.

    latent_dim: d2 (``model.latent_dim``); the sizes come from the two-layer ``posterior``, which the
    builder passes. hidden_dims, activation: the p(z1|z2) network's deterministic layers."""

    def __init__(self, latent_dim: int, posterior: PosteriorFamily, hidden_dims: Sequence[int] = (50, 50),
                 activation: str = "tanh"):
        lower, top = _layer_dims(type(self), posterior, latent_dim)
        super().__init__(lower + top)
        self.layer_dims = (lower, top)
        self.top = StandardNormal(top)
        self.lower = GaussianLayer(top, lower, _hidden_sizes("hidden_dims", hidden_dims), activation)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z2) + log p(z1|z2): [..., d1 + d2] -> [...]."""
        z1, z2 = z.split(self.layer_dims, dim=-1)  # [..., d1], [..., d2]
        return self.top.log_prob(z2) + self.lower(z2).log_prob(z1)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestrally: z2 ~ N(0, I), then z1 ~ p(z1|z2): [num, d1 + d2]."""
        z2 = self.top.sample(num, generator=generator)  # [num, d2]
        return torch.cat([draw(self.lower(z2), generator), z2], dim=-1)

    def extra_repr(self) -> str:
        return f"layer_dims={list(self.layer_dims)}"


# -- the decoder: p(x | z1) ----------------------------------------------------------------------------

class TwoLayerDecoder(nn.Module):
    """z = [z1, z2] [..., d1 + d2] -> the parameters of p(x | z1) [..., *output_shape], from z1 alone.

    latent_dim: d2 (``model.latent_dim``); d1 comes from the two-layer ``posterior``. hidden_dims,
    activation: its deterministic layers (by default mirroring the encoder's)."""

    def __init__(self, latent_dim: int, output_shape: Sequence[int], posterior: PosteriorFamily,
                 hidden_dims: Sequence[int] = (100, 100), activation: str = "tanh"):
        super().__init__()
        self.lower_dim, _ = _layer_dims(type(self), posterior, latent_dim)
        self.output_shape = tuple(output_shape)
        self.net = mlp([self.lower_dim, *_hidden_sizes("hidden_dims", hidden_dims), math.prod(self.output_shape)],
                       activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[..., : self.lower_dim]).unflatten(-1, self.output_shape)
