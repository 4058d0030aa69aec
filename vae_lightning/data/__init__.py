from .idx import read_idx, write_idx
from .mnist import FashionMNISTDataModule, IDXImageDataModule, MNISTDataModule

__all__ = ["FashionMNISTDataModule", "IDXImageDataModule", "MNISTDataModule", "read_idx", "write_idx"]
