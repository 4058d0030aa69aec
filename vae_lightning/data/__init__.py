from .idx import read_idx, write_idx
from .mnist import IDXImageDataModule, MNISTDataModule

__all__ = ["IDXImageDataModule", "MNISTDataModule", "read_idx", "write_idx"]
