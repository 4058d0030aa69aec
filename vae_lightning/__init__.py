"""vae-lightning: variational autoencoders on PyTorch Lightning and Hydra."""

from typing import Any

from . import resolvers  # noqa: F401  (${vae.reversed:...} in conf/model/decoder)

__version__ = "0.2.0"
__all__ = ["VAE", "__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: train.py checks a config (vae_lightning.precheck)
    # before torch and Lightning are imported, and that takes a second, not ten.
    if name == "VAE":
        from .module import VAE as value
    elif name == "load_model":
        from .build import load_model as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
