"""A planar-flow posterior (Rezende and Mohamed 2015): a diagonal Gaussian pushed through planar layers.

    z_0 ~ N(mu(x), diag sigma^2(x)),   z_k = f_k(z_{k-1}) = z_{k-1} + u_hat_k tanh(w_k^T z_{k-1} + b_k)
    log q(z_K|x) = log N(z_0; mu, diag sigma^2) - sum_k log |1 + u_hat_k^T psi_k(z_{k-1})|,
    psi_k(z) = tanh'(w_k^T z + b_k) w_k

Amortised, as in the paper: the encoder outputs, per example, mu and log sigma^2 and then each layer's
(u, w, b) side by side: 2D + num_flows (2D + 1) numbers.

Invertibility: f_k is invertible when w^T u_hat >= -1, so u is replaced by
u_hat = u + (m(w^T u) - w^T u) w / |w|^2, for which w^T u_hat = m(w^T u) > -1, and the determinant
1 + tanh'(.) w^T u_hat stays positive. Here m(a) = softplus(a + log(e - 1)) - 1: the paper's
m(a) = -1 + softplus(a) moved left so that m(0) = 0. It has the same range (-1, inf), and u = 0 now
gives u_hat = 0, the identity layer (the paper's m turns u = 0 into u_hat = (log 2 - 1) w / |w|^2, so
zero outputs of the encoder would not be the identity).

A flow knows the density only of the points it draws: :meth:`FlowGaussian.rsample_and_log_prob`
gives samples with their log q, and ``log_prob`` of any other z raises. There is no closed-form KL:
the objectives use the Monte-Carlo KL from their own samples.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..checks import require_int
from .base import PosteriorFamily
from .flow import FlowGaussian

#: Where the paper's m(a) = -1 + softplus(a) is 0: the shift that makes m(0) = 0.
_M_SHIFT = math.log(math.e - 1)


def constrain(u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u_hat = u + (m(w^T u) - w^T u) w / |w|^2, which makes the layer invertible: u, w [B, D] ->
    (u_hat [B, D], w^T u_hat = m(w^T u) [B], above -1).

    w^T u_hat is returned as m(w^T u) rather than recomputed, so round-off cannot push it to -1."""
    wu = (w * u).sum(-1)  # [B]
    m = F.softplus(wu + _M_SHIFT) - 1
    # |w|^2 = 0 only with w = 0, where wu = m = 0: 0 / tiny = 0 rather than 0 / 0.
    w_norm2 = w.pow(2).sum(-1).clamp_min(torch.finfo(w.dtype).tiny)
    return u + ((m - wu) / w_norm2).unsqueeze(-1) * w, m


def planar_layer(z: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                 wu_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(z) = z + u_hat tanh(w^T z + b), log |det df/dz| = log(1 + tanh'(w^T z + b) w^T u_hat).

    z [K, B, D]; u_hat, w [B, D]; b, wu_hat [B] -> (f(z) [K, B, D], log det [K, B])."""
    h = torch.tanh((z * w).sum(-1) + b)  # [K, B]
    # tanh' = 1 - tanh^2 lies in (0, 1] and wu_hat > -1: the argument of log1p stays above -1.
    return z + h.unsqueeze(-1) * u_hat, torch.log1p((1 - h.pow(2)) * wu_hat)


class PlanarFlowPosterior(PosteriorFamily):
    """The encoder's [B, 2D + num_flows (2D + 1)] output read as (mu, log sigma^2, then (u, w, b) per layer).

    num_flows: how many planar layers (0: the diagonal Gaussian, with a Monte-Carlo KL).
    """

    def __init__(self, latent_dim: int, num_flows: int = 8):
        super().__init__(latent_dim)
        self.num_flows = require_int("num_flows", num_flows, 0)

    @property
    def num_params(self) -> int:
        d = self.latent_dim
        return 2 * d + self.num_flows * (2 * d + 1)

    def forward(self, params: torch.Tensor) -> FlowGaussian:
        d = self.latent_dim
        loc, logvar = params[..., :d], params[..., d : 2 * d]  # [B, D] each
        layers = params[..., 2 * d :].unflatten(-1, (self.num_flows, 2 * d + 1))  # [B, L, 2D + 1]
        steps = []
        for k in range(self.num_flows):
            u, w, b = layers[..., k, :d], layers[..., k, d : 2 * d], layers[..., k, 2 * d]  # [B, D], [B, D], [B]
            u_hat, wu_hat = constrain(u, w)
            steps.append(functools.partial(planar_layer, u_hat=u_hat, w=w, b=b, wu_hat=wu_hat))
        return FlowGaussian(loc, logvar, steps)
