"""Activation functions by name (``activation: relu`` in a network's config)."""

from __future__ import annotations

from torch import nn

from ..checks import require_choice

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}


def activation_class(name: str) -> type[nn.Module]:
    """The module class of ``name``; a ConfigError naming ``activation`` otherwise."""
    return ACTIVATIONS[require_choice("activation", name, sorted(ACTIVATIONS))]
