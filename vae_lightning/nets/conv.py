"""Convolutional encoder and decoder for images [C, H, W]."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import require_int, require_sizes
from ..errors import ConfigError
from .activations import activation_class


def _check_halvable(input_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError("input_shape", list(input_shape), "must be (C, H, W) for a conv network: use an mlp for "
                                                            "flat data")
    c, h, w = input_shape
    scale = 2 ** len(channels)
    if h % scale or w % scale:
        raise ConfigError("channels", list(channels), f"gives {len(channels)} stride-2 layers, which need H and W "
                                                      f"divisible by {scale}; the data is {h}x{w}: use fewer "
                                                      f"channels entries")
    return c, h, w


class ConvEncoder(nn.Module):
    """x [B, C, H, W] -> [B, out_features].

    Each entry of ``channels`` is a stride-2 convolution (4x4 kernel, padding 1)
    that halves H and W: 28 -> 14 -> 7, or 32 -> 16 -> 8; a linear layer then
    maps the feature map to the parameters of q(z|x).
    """

    def __init__(self, input_shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64),
                 activation: str = "relu"):
        super().__init__()
        channels = require_sizes("channels", channels, "[32, 64]")
        c, h, w = _check_halvable(input_shape, channels)
        act = activation_class(activation)
        layers: list[nn.Module] = []
        for n_in, n_out in zip([c, *channels[:-1]], channels):
            layers += [nn.Conv2d(n_in, n_out, kernel_size=4, stride=2, padding=1), act()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        scale = 2 ** len(channels)
        self.head = nn.Linear(channels[-1] * (h // scale) * (w // scale), require_int("out_features", out_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # [B, out_features]


class ConvDecoder(nn.Module):
    """z [..., D] -> [..., C_out, H, W], mirroring ConvEncoder (``channels`` in the encoder's order).

    A linear layer makes a [channels[-1], H/2^n, W/2^n] map; stride-2 transposed
    convolutions double it back to H x W; the last outputs C_out channels.
    """

    def __init__(self, latent_dim: int, output_shape: Sequence[int], channels: Sequence[int] = (32, 64),
                 activation: str = "relu"):
        super().__init__()
        channels = require_sizes("channels", channels, "[32, 64]")
        c_out, h, w = _check_halvable(output_shape, channels)
        act = activation_class(activation)
        scale = 2 ** len(channels)
        self.start_shape = (channels[-1], h // scale, w // scale)
        self.head = nn.Sequential(nn.Linear(require_int("latent_dim", latent_dim, 1), math.prod(self.start_shape)),
                                  act())
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
