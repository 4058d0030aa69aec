"""vae-lightning: variational autoencoders on PyTorch Lightning and Hydra."""

from .build import load_model
from .module import VAE

__version__ = "0.2.0"
__all__ = ["VAE", "__version__", "load_model"]
