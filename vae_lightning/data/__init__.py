"""Image DataModules: one family (:class:`ImageDataModule`) for any (C, H, W), with a module per source."""

from .base import ImageDataModule, ImageSet, default_data_dir
from .celeba import CelebADataModule
from .cifar import CIFAR10DataModule
from .custom import ArraysDataModule, ImageFolderDataModule
from .idx import read_idx, write_idx
from .mnist import FashionMNISTDataModule, IDXImageDataModule, MNISTDataModule

__all__ = ["ArraysDataModule", "CIFAR10DataModule", "CelebADataModule", "FashionMNISTDataModule",
           "IDXImageDataModule", "ImageDataModule", "ImageFolderDataModule", "ImageSet", "MNISTDataModule",
           "default_data_dir", "read_idx", "write_idx"]
