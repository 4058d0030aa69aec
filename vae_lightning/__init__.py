"""vae-lightning: variational autoencoders on PyTorch Lightning and Hydra."""

from .module import VAE

__version__ = "0.1.0"
__all__ = ["VAE", "__version__"]
