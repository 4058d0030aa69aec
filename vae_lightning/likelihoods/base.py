"""The likelihood contract.

Each likelihood turns what the decoder outputs (its *parameters*) into
log p(x|z) for every example, summed over the data dimensions, in nats, with
every normalising constant kept. Shapes follow ``torch.distributions``: leading
sample and batch dimensions are kept, the ``event_dim`` trailing dimensions of
the data (e.g. ``(1, 28, 28)``) are summed away.

A likelihood with P parameters per data value asks the decoder for P times as
many channels: ``param_shape((C, H, W)) == (P * C, H, W)``; they are split
along that first event dimension.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def sum_event(t: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Sum the ``event_dim`` trailing dimensions: [..., *event] -> [...]."""
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim > 0 else t


class Likelihood(nn.Module):
    """Base class. Subclasses take ``event_shape`` (the data's shape, e.g. (1, 28, 28)) as their
    first argument, whether they need it or not, so every likelihood is built the same way."""

    #: How many parameter tensors shaped like x the decoder outputs.
    num_params = 1
    #: What data it is a distribution over: "binary" (a probability mass on {0, 1}, so test NLLs are
    #: also reported in bits per dimension) or "continuous" (a density).
    data_kind = "continuous"

    def __init__(self, event_shape: Sequence[int] = ()):
        super().__init__()
        self.event_shape = tuple(event_shape)

    def param_shape(self, event_shape: Sequence[int]) -> tuple[int, ...]:
        """The decoder's output shape for data of ``event_shape``."""
        first, *rest = event_shape
        return (self.num_params * first, *rest)

    def split(self, params: torch.Tensor, event_dim: int) -> tuple[torch.Tensor, ...]:
        return params.chunk(self.num_params, dim=-event_dim)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """log p(x|z): x [B, *event], params [..., B, *param_event] -> [..., B]."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The mean of p(x|z): what a reconstruction or a sample shows."""
        raise NotImplementedError
