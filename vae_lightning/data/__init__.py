"""Image DataModules: one family (:class:`ImageDataModule`) for any (C, H, W), with a module per source; data
with known factors (dSprites, 3D Shapes) adds a contract of its own (:mod:`.factors`)."""

from .base import ImageDataModule, ImageSet, default_data_dir
from .celeba import CelebADataModule
from .cifar import CIFAR10DataModule
from .custom import ArraysDataModule, ImageFolderDataModule
from .dsprites import DSpritesDataModule, SpriteRenderer
from .factors import FactorDataModule, FactorGrid, KnownFactors
from .idx import read_idx, write_idx
from .mnist import FashionMNISTDataModule, IDXImageDataModule, MNISTDataModule
from .shapes3d import Shapes3DDataModule

__all__ = ["ArraysDataModule", "CIFAR10DataModule", "CelebADataModule", "DSpritesDataModule", "FactorDataModule",
           "FactorGrid", "FashionMNISTDataModule", "IDXImageDataModule", "ImageDataModule", "ImageFolderDataModule",
           "ImageSet", "KnownFactors", "MNISTDataModule", "Shapes3DDataModule", "SpriteRenderer", "default_data_dir",
           "read_idx", "write_idx"]
