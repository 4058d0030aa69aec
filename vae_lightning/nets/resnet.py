"""Residual encoder and decoder for images [C, H, W] of any size and channel count.

    encoder   x -> stem conv3x3 -> per entry of ``channels``: [stride-2 conv, residual blocks] -> linear
    decoder   z -> linear -> per entry, in reverse: [residual blocks, stride-2 transposed conv] -> conv1x1

with the activation after every layer but the linear head, a residual branch's last conv and
the decoder's output conv.

The stride-2 layers are those of ``conv.py`` (a size h becomes floor(h / 2), and the decoder
lands exactly on the encoder's sizes in reverse), so any H x W works while the smallest map
stays at least 1x1.

No normalisation layers. BatchNorm is ruled out: its statistics mix the examples of a batch,
so a test NLL (K samples per example) would depend on what else is in the batch and on
train/eval mode, and the builder checks the parts on a single zero input. GroupNorm would be
per-example, but costs time on a CPU and constrains the channel counts; it is not needed
here because every residual branch starts at zero (see :class:`ResidualBlock`), so a deep
stack starts as the shallow network and trains without it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import require_int, require_sizes
from .activations import activation_class
from .conv import Size, down, halved_sizes, image_shape, up


def conv3x3(n_in: int, n_out: int) -> nn.Conv2d:
    """[B, n_in, h, w] -> [B, n_out, h, w]."""
    return nn.Conv2d(n_in, n_out, kernel_size=3, padding=1)


class ResidualBlock(nn.Module):
    """x [B, C, h, w] -> x + conv3x3(act(conv3x3(x))), the same shape.

    The branch's last convolution starts at zero, so a fresh block is exactly the identity:
    signals and gradients pass through a deep stack unchanged at first, and each block
    learns its correction from there.
    """

    def __init__(self, channels: int, act: type[nn.Module]):
        super().__init__()
        self.branch = nn.Sequential(conv3x3(channels, channels), act(), conv3x3(channels, channels))
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def blocks(channels: int, count: int, act: type[nn.Module]) -> list[nn.Module]:
    """``count`` residual blocks, each [B, channels, h, w] -> the same shape."""
    return [ResidualBlock(channels, act) for _ in range(count)]


def _check(channels: Sequence[int], blocks_per_stage: int, activation: str) -> tuple[list[int], int, type[nn.Module]]:
    """The arguments both networks take, checked: (channels, blocks_per_stage, the activation's class)."""
    return (require_sizes("channels", channels, "[32, 64, 128]"),
            require_int("blocks_per_stage", blocks_per_stage, 0),
            activation_class(activation))


class ResNetEncoder(nn.Module):
    """x [B, C, H, W] -> [B, out_features].

    A 3x3 stem makes ``channels[0]`` channels at full size; each entry of ``channels`` is then
    a stage: a stride-2 convolution to that many channels (halving H and W, rounding down)
    and ``blocks_per_stage`` residual blocks; a linear layer maps the last feature map to the
    parameters of q(z|x).
    """

    def __init__(self, input_shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, activation: str = "relu"):
        super().__init__()
        channels, num_blocks, act = _check(channels, blocks_per_stage, activation)
        c, h, w = image_shape("input_shape", input_shape)
        sizes = halved_sizes((h, w), channels)
        # The stem lifts the data's C channels (1, 3, ...) to channels[0] at full size, so the first stage
        # and its blocks work on features rather than on raw pixels.
        self.stem = nn.Sequential(conv3x3(c, channels[0]), act())
        self.stages = nn.Sequential(*(self._stage(n_in, n_out, num_blocks, act)
                                      for n_in, n_out in zip([channels[0], *channels[:-1]], channels)))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * math.prod(sizes[-1]),
                                                          require_int("out_features", out_features, 1)))

    @staticmethod
    def _stage(n_in: int, n_out: int, num_blocks: int, act: type[nn.Module]) -> nn.Sequential:
        """[B, n_in, h, w] -> [B, n_out, h // 2, w // 2]."""
        return nn.Sequential(down(n_in, n_out), act(), *blocks(n_out, num_blocks, act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # [B, channels[0], H, W]
        h = self.stages(h)  # [B, channels[-1], h_n, w_n]
        return self.head(h)  # [B, out_features]


class ResNetDecoder(nn.Module):
    """z [..., D] -> [..., C_out, H, W], mirroring ResNetEncoder (``channels`` in the encoder's order).

    A linear layer makes the encoder's last feature map [channels[-1], h_n, w_n]; each stage,
    from the last entry of ``channels`` to the first, is ``blocks_per_stage`` residual blocks
    and a stride-2 transposed convolution back to the encoder's size before that stage; a 1x1
    convolution makes the C_out channels (the likelihood's parameters, often more than the data's).
    """

    def __init__(self, latent_dim: int, output_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, activation: str = "relu"):
        super().__init__()
        channels, num_blocks, act = _check(channels, blocks_per_stage, activation)
        c_out, h, w = image_shape("output_shape", output_shape)
        sizes = halved_sizes((h, w), channels)
        self.start_shape = (channels[-1], *sizes[-1])
        self.head = nn.Sequential(nn.Linear(require_int("latent_dim", latent_dim, 1), math.prod(self.start_shape)),
                                  act())
        # The encoder's stage i took [channels[i - 1], *sizes[i]] to [channels[i], *sizes[i + 1]] (from the
        # stem's channels[0] for i = 0); undo them from the last.
        stages = []
        for i in reversed(range(len(channels))):
            n_out = channels[max(i - 1, 0)]
            stages.append(self._stage(channels[i], n_out, num_blocks, act, small=sizes[i + 1], large=sizes[i]))
        self.stages = nn.Sequential(*stages)
        # 1x1: a likelihood may ask for many channels (256 * C for a categorical), and a 3x3 kernel would
        # multiply this layer's cost by 9; the transposed convolution before it mixes neighbouring pixels.
        self.out = nn.Conv2d(channels[0], c_out, kernel_size=1)

    @staticmethod
    def _stage(n_in: int, n_out: int, num_blocks: int, act: type[nn.Module], small: Size, large: Size) -> nn.Sequential:
        """[B, n_in, *small] -> [B, n_out, *large]."""
        return nn.Sequential(*blocks(n_in, num_blocks, act), up(n_in, n_out, small, large), act())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]  # e.g. (K, B): convolutions take one batch dimension
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self.start_shape)  # [K * B, channels[-1], h_n, w_n]
        h = self.stages(h)  # [K * B, channels[0], H, W]
        out = self.out(h)  # [K * B, C_out, H, W]
        return out.view(*lead, *out.shape[1:])
