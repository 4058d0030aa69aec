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


def activation_class(name: str) -> type[nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"Unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)} (config key model.activation)."
        ) from None


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


class ConvEncoder(nn.Module):
    """x [B, C, H, W] -> (mu [B, D], logvar [B, D]).

    Each entry of ``channels`` is a stride-2 convolution (4x4 kernel, padding 1)
    that halves H and W: 28 -> 14 -> 7, or 32 -> 16 -> 8; a linear layer then
    maps the feature map to mu and logvar.
    """

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], latent_dim: int,
                 activation: str = "relu"):
        super().__init__()
        c, h, w = input_shape
        _check_halvable(h, w, len(channels))
        act = activation_class(activation)
        layers: list[nn.Module] = []
        for n_in, n_out in zip([c, *channels[:-1]], channels):
            layers += [nn.Conv2d(n_in, n_out, kernel_size=4, stride=2, padding=1), act()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        scale = 2 ** len(channels)
        self.head = nn.Linear(channels[-1] * (h // scale) * (w // scale), 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=-1)  # [B, D] each
        return mu, logvar


class ConvDecoder(nn.Module):
    """z [..., D] -> parameters of p(x|z) [..., C_out, H, W], mirroring ConvEncoder.

    A linear layer makes a [channels[-1], H/2^n, W/2^n] map; stride-2 transposed
    convolutions double it back to H x W; the last outputs C_out channels.
    """

    def __init__(self, latent_dim: int, channels: Sequence[int], output_shape: Sequence[int],
                 activation: str = "relu"):
        super().__init__()
        c_out, h, w = output_shape
        _check_halvable(h, w, len(channels))
        act = activation_class(activation)
        scale = 2 ** len(channels)
        self.start_shape = (channels[-1], h // scale, w // scale)
        self.head = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start_shape)), act())
        reversed_channels = list(channels[::-1])
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(reversed_channels, [*reversed_channels[1:], c_out])):
            layers.append(nn.ConvTranspose2d(n_in, n_out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # e.g. (K, B): convolutions take one batch dimension
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self.start_shape)
        out = self.net(h)
        return out.view(*lead, *out.shape[1:])


def _check_halvable(h: int, w: int, times: int) -> None:
    scale = 2**times
    if h % scale or w % scale:
        raise ValueError(f"A conv model with {times} stride-2 layers needs H and W divisible by {scale}; "
                         f"the data is {h}x{w}: change model.channels.")
