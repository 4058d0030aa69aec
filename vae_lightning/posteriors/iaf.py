"""An inverse autoregressive flow posterior (Kingma et al. 2016): a diagonal Gaussian pushed through IAF steps.

    z_0 ~ N(mu(x), diag sigma^2(x)),   h = h(x)                      (from the encoder)
    [m, s] = AutoregressiveNN_k(z_{k-1}, h),  g = sigmoid(s)
    z_k = g * z_{k-1} + (1 - g) * m                                   (the paper's LSTM-type update)
    log q(z_K|x) = log N(z_0; mu, diag sigma^2) - sum_k sum_d log g_d

m_d and s_d depend on z_{<d} only (a MADE network: masked linear layers), so each step's Jacobian is
triangular with diagonal g and its log-determinant is sum_d log g_d. The encoder outputs mu,
log sigma^2 and the context h of ``context_dim`` features (2D + context_dim numbers per example),
which enters every step's first hidden layer; the networks' weights are parameters of the family
and train with the model. Successive steps use the reverse order of the variables (step k's
network sees them in reverse for odd k): the paper's reversal between steps, without moving z, so
z_K comes out in the order of z_0.

``forget_bias`` is added to the bias of s, so g = sigmoid(s) starts near 1 and each step near the
identity (the paper: "+1 or +2"). A step is exactly the identity when its output layer gives m = 0 and
an s so large that g = 1 in floating point (weights 0, biases (0, large)).

As for every flow, log q is known only at the samples drawn: ``rsample_and_log_prob`` (see
:class:`~.planar.FlowGaussian`); ``log_prob`` of any other z raises. The KL is the Monte-Carlo one.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import require_int, require_number, require_sizes
from .base import PosteriorFamily
from .flow import FlowGaussian


class MaskedLinear(nn.Linear):
    """A linear layer whose unit j sees input i only when out_degrees[j] >= in_degrees[i] (``strict``: >)."""

    def __init__(self, in_degrees: torch.Tensor, out_degrees: torch.Tensor, strict: bool = False):
        super().__init__(len(in_degrees), len(out_degrees))
        allowed = out_degrees[:, None] > in_degrees if strict else out_degrees[:, None] >= in_degrees  # [out, in]
        # Not in checkpoints: the mask follows from the sizes, and the model is rebuilt from its config.
        self.register_buffer("mask", allowed.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One IAF step: a MADE network z [K, B, D] (+ context [B, C]) -> m, s [K, B, D], then the update.

    Degrees (MADE): input d has its place in the order, 1..D (reversed when ``reverse``); hidden units
    cycle through 0..D-1 and see inputs of degree <= theirs; output d sees hidden units of degree
    < its input's. Units of degree 0 see no z, only the context, so the context reaches every output.
    """

    def __init__(self, latent_dim: int, context_dim: int, hidden_dims: Sequence[int], forget_bias: float,
                 reverse: bool = False):
        super().__init__()
        order = torch.arange(1, latent_dim + 1)
        order = order.flip(0) if reverse else order
        degrees = [order] + [torch.arange(width) % latent_dim for width in hidden_dims]
        self.hidden = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(degrees, degrees[1:]))
        self.context = nn.Linear(context_dim, hidden_dims[0], bias=False) if context_dim else None
        self.output = MaskedLinear(degrees[-1], order.repeat(2), strict=True)  # m, then s
        with torch.no_grad():
            self.output.bias[latent_dim:] += forget_bias

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [K, B, D], context [B, C] -> (g * z + (1 - g) * m [K, B, D], sum_d log g_d [K, B])."""
        y = self.hidden[0](z)  # [K, B, H_1]
        if self.context is not None:
            y = y + self.context(context)  # [B, H_1], the same for every sample
        y = F.elu(y)
        for layer in self.hidden[1:]:
            y = F.elu(layer(y))
        m, s = self.output(y).chunk(2, dim=-1)  # [K, B, D] each
        # 1 - sigmoid(s) = sigmoid(-s), and log sigmoid(s), in the forms that keep their precision near g = 1.
        return torch.sigmoid(s) * z + torch.sigmoid(-s) * m, F.logsigmoid(s).sum(-1)


class IAFPosterior(PosteriorFamily):
    """The encoder's [B, 2D + context_dim] output read as (mu, log sigma^2, h); ``num_flows`` IAF steps.

    num_flows:    how many steps (0: the diagonal Gaussian, with a Monte-Carlo KL).
    hidden_dims:  the hidden layers of each step's MADE network.
    context_dim:  the features of h(x) the encoder gives every step (0: none).
    forget_bias:  added to s at the start, so g = sigmoid(s) starts near 1.
    """

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden_dims: Sequence[int] = (64, 64),
                 context_dim: int = 32, forget_bias: float = 2.0):
        super().__init__(latent_dim)
        self.num_flows = require_int("num_flows", num_flows, 0)
        hidden_dims = require_sizes("hidden_dims", hidden_dims, "[64, 64]")
        self.context_dim = require_int("context_dim", context_dim, 0)
        forget_bias = require_number("forget_bias", forget_bias)
        self.steps = nn.ModuleList(IAFStep(latent_dim, self.context_dim, hidden_dims, forget_bias, reverse=k % 2 == 1)
                                   for k in range(self.num_flows))

    @property
    def num_params(self) -> int:
        return 2 * self.latent_dim + self.context_dim

    def forward(self, params: torch.Tensor) -> FlowGaussian:
        d = self.latent_dim
        loc, logvar, context = params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]  # [B, D], [B, D], [B, C]
        return FlowGaussian(loc, logvar, [functools.partial(step, context=context) for step in self.steps])
