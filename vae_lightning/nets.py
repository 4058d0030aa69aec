"""Encoder and decoder networks.

The encoder maps x [B, *event] to the parameters of q(z|x): (mu, logvar), each
[B, D]. The decoder maps z [..., D] to the parameters of p(x|z), shaped
[..., *event]; any leading dimensions (K samples, batch) pass through.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes, the activation between them (not after the last)."""
    try:
        act = ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"Unknown activation {activation!r}: choose one of {sorted(ACTIVATIONS)} "
            f"(config key model.activation)."
        ) from None
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x [B, *event] -> (mu [B, D], logvar [B, D]) through hidden layers."""

    def __init__(self, input_shape: Sequence[int], hidden_dims: Sequence[int], latent_dim: int,
                 activation: str = "relu"):
        super().__init__()
        self.input_shape = tuple(input_shape)
        in_features = math.prod(self.input_shape)
        # The last layer outputs mu and logvar side by side: [B, 2 * D].
        self.net = mlp([in_features, *hidden_dims, 2 * latent_dim], activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x.flatten(start_dim=-len(self.input_shape)))  # [B, 2D]
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


class MLPDecoder(nn.Module):
    """z [..., D] -> parameters of p(x|z) [..., *event] (logits or means)."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int], output_shape: Sequence[int],
                 activation: str = "relu"):
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.net = mlp([latent_dim, *hidden_dims, math.prod(self.output_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.output_shape)
