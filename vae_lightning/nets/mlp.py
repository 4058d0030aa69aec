"""Fully connected encoder and decoder."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import require_int, require_sizes
from .activations import activation_class


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes, the activation between them (not after the last)."""
    act = activation_class(activation)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x [B, *input_shape] -> [B, out_features] through hidden layers of ``hidden_dims``."""

    def __init__(self, input_shape: Sequence[int], out_features: int, hidden_dims: Sequence[int] = (512, 256),
                 activation: str = "relu"):
        super().__init__()
        hidden_dims = require_sizes("hidden_dims", hidden_dims)
        self.input_shape = tuple(input_shape)
        self.net = mlp([math.prod(self.input_shape), *hidden_dims, require_int("out_features", out_features, 1)],
                       activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(start_dim=-len(self.input_shape)))  # [B, out_features]


class MLPDecoder(nn.Module):
    """z [..., D] -> [..., *output_shape] through hidden layers of ``hidden_dims`` (from z upwards)."""

    def __init__(self, latent_dim: int, output_shape: Sequence[int], hidden_dims: Sequence[int] = (256, 512),
                 activation: str = "relu"):
        super().__init__()
        hidden_dims = require_sizes("hidden_dims", hidden_dims)
        self.output_shape = tuple(output_shape)
        self.net = mlp([require_int("latent_dim", latent_dim, 1), *hidden_dims, math.prod(self.output_shape)],
                       activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        return out.view(out.shape[:-1] + self.output_shape)  # (Tensor.unflatten's Python costs ~2 us a call)
