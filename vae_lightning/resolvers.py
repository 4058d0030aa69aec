"""The config's own OmegaConf resolvers, registered when the package is imported (no torch needed).

``${vae.reversed:${model.encoder.hidden_dims}}``: the mlp and conv decoders mirror the encoder.
"""

from __future__ import annotations

from typing import Any

from omegaconf import ListConfig, OmegaConf


def _reversed(values: Any) -> Any:
    """A list in reverse order; anything else as it is (the part that takes it says what is wrong)."""
    return list(reversed(list(values))) if isinstance(values, (list, tuple, ListConfig)) else values


def register() -> None:
    if not OmegaConf.has_resolver("vae.reversed"):
        OmegaConf.register_new_resolver("vae.reversed", _reversed)


register()
