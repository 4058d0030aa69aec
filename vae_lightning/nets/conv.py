"""Convolutional encoder and decoder for images [C, H, W] of any size.

Each stage halves the feature map with a 4x4 convolution of stride 2 and padding 1, which
maps a size h to floor(h / 2): 28 -> 14 -> 7, 32 -> 16 -> 8, 30 -> 15 -> 7, 9 -> 4 -> 2.
The decoder undoes it with 4x4 transposed convolutions of stride 2 and padding 1, which map
h to 2h + output_padding: an output_padding of 1 where the encoder rounded an odd size down
lands exactly on the encoder's sizes in reverse. The helpers below are shared with the
residual networks of ``resnet.py``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import require_int, require_sizes
from ..errors import ConfigError
from .activations import activation_class

Size = tuple[int, int]  # (H, W) of a feature map


def image_shape(key: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as (C, H, W), or a ConfigError naming ``key`` (``input_shape`` or ``output_shape``)."""
    if len(shape) != 3:
        raise ConfigError(key, list(shape), "must be (C, H, W) for a convolutional network: use an mlp for flat data")
    c, h, w = shape
    return c, h, w


def halved_sizes(size: Size, channels: Sequence[int]) -> list[Size]:
    """The feature map's (H, W) before the first and after each stride-2 stage (one per entry of ``channels``):
    (28, 28) and two stages -> [(28, 28), (14, 14), (7, 7)]. A ConfigError naming ``channels`` when a map
    would shrink below 1x1."""
    sizes = [size]
    for _ in channels:
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))  # a 4x4 kernel, stride 2, padding 1: floor(h / 2)
    if min(sizes[-1]) < 1:
        raise _too_many_stages(size, channels)
    return sizes


def _too_many_stages(size: Size, channels: Sequence[int]) -> ConfigError:
    most = min(size).bit_length() - 1  # floor(log2(min(H, W))): the halvings before a side reaches 0
    if most >= 1:
        fix = f"use at most {most} " + ("entry" if most == 1 else "entries")
    else:
        fix = "use an mlp for data this small"
    stages = f"{len(channels)} stride-2 stage" + ("s" if len(channels) > 1 else "")
    return ConfigError("channels", list(channels), f"gives {stages}, each halving H and W (rounding down): the "
                                                   f"{size[0]}x{size[1]} image would shrink below 1x1; {fix}")


def output_padding(small: Size, large: Size) -> Size:
    """What a stride-2 transposed convolution (4x4, padding 1) from ``small`` adds to land on ``large``:
    it gives 2h + output_padding, so 1 where the halving rounded an odd size down, 0 otherwise."""
    return large[0] - 2 * small[0], large[1] - 2 * small[1]


def down(n_in: int, n_out: int) -> nn.Conv2d:
    """[B, n_in, h, w] -> [B, n_out, h // 2, w // 2]."""
    return nn.Conv2d(n_in, n_out, kernel_size=4, stride=2, padding=1)


def up(n_in: int, n_out: int, small: Size, large: Size) -> nn.ConvTranspose2d:
    """[B, n_in, *small] -> [B, n_out, *large], the inverse in shape of ``down`` from ``large`` to ``small``."""
    return nn.ConvTranspose2d(n_in, n_out, kernel_size=4, stride=2, padding=1,
                              output_padding=output_padding(small, large))


class ConvEncoder(nn.Module):
    """x [B, C, H, W] -> [B, out_features].

    Each entry of ``channels`` is a stride-2 convolution with that many output channels,
    which halves H and W (rounding down); fully connected layers of ``hidden_dims`` (none by
    default) and a linear layer then map the last feature map to the parameters of q(z|x). Any
    H x W works as long as the map stays at least 1x1.

    The encoder of the disentanglement literature (Higgins et al. 2017, Locatello et al. 2019) on
    64x64 images is ``channels=[32, 32, 64, 64], hidden_dims=[256]``.
    """

    def __init__(self, input_shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64),
                 activation: str = "relu", hidden_dims: Sequence[int] = ()):
        super().__init__()
        channels = require_sizes("channels", channels, "[32, 64]")
        hidden_dims = require_sizes("hidden_dims", hidden_dims, "[256]") if len(hidden_dims) else []
        c, h, w = image_shape("input_shape", input_shape)
        sizes = halved_sizes((h, w), channels)
        act = activation_class(activation)
        layers: list[nn.Module] = []
        for n_in, n_out in zip([c, *channels[:-1]], channels):
            layers += [down(n_in, n_out), act()]
        flat = channels[-1] * math.prod(sizes[-1])
        layers.append(nn.Flatten())  # [B, C, H, W] -> [B, channels[-1] * h_n * w_n]
        for n_in, n_out in zip([flat, *hidden_dims[:-1]], hidden_dims):
            layers += [nn.Linear(n_in, n_out), act()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden_dims[-1] if hidden_dims else flat, require_int("out_features", out_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # [B, out_features]


class ConvDecoder(nn.Module):
    """z [..., D] -> [..., C_out, H, W], mirroring ConvEncoder (``channels`` in the encoder's order).

    Fully connected layers of ``hidden_dims`` (the encoder's in reverse order; none by default) and a
    linear layer make a [channels[-1], h_n, w_n] map, the encoder's last; stride-2 transposed
    convolutions grow it back through the encoder's sizes in reverse to H x W; the last outputs
    C_out channels (the likelihood's parameters, often more than the data's).
    """

    def __init__(self, latent_dim: int, output_shape: Sequence[int], channels: Sequence[int] = (32, 64),
                 activation: str = "relu", hidden_dims: Sequence[int] = ()):
        super().__init__()
        channels = require_sizes("channels", channels, "[32, 64]")
        hidden_dims = require_sizes("hidden_dims", hidden_dims, "[256]") if len(hidden_dims) else []
        c_out, h, w = image_shape("output_shape", output_shape)
        sizes = halved_sizes((h, w), channels)
        act = activation_class(activation)
        self.start_shape = (channels[-1], *sizes[-1])
        dims = [require_int("latent_dim", latent_dim, 1), *hidden_dims, math.prod(self.start_shape)]
        layers = []
        for n_in, n_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(n_in, n_out), act()]
        self.head = nn.Sequential(*layers)
        # Stage i (from the smallest map) goes from sizes[n - i] to sizes[n - i - 1].
        reversed_channels = channels[::-1]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(reversed_channels, [*reversed_channels[1:], c_out])):
            layers.append(up(n_in, n_out, small=sizes[-1 - i], large=sizes[-2 - i]))
            if i < len(channels) - 1:
                layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # e.g. (K, B): convolutions take one batch dimension
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self.start_shape)  # [K * B, channels[-1], h_n, w_n]
        out = self.net(h)  # [K * B, C_out, H, W]
        return out.view(*lead, *out.shape[1:])
