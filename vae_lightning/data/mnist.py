"""DataModules for 28x28 greyscale image datasets stored as IDX files (MNIST, Fashion-MNIST)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .base import ImageDataModule, ImageSet
from .download import Resource, locate_or_download
from .idx import read_idx
from .sources import TensorSource


class IDXImageDataModule(ImageDataModule):
    """MNIST-style datasets: 28x28 greyscale images and their labels in four IDX files (gzipped or
    not), a 60k-style training file (``val_size`` of it held out for validation) and a test file.

    Binarised by default (``binarize=dynamic``) for a Bernoulli decoder; see
    :class:`~vae_lightning.data.base.ImageDataModule` for the rest.
    """

    #: Set by subclasses.
    mirrors: tuple[str, ...] = ()
    resources: dict[str, Resource] = {}
    num_classes = 10

    def __init__(self, data_dir: str | os.PathLike | None = None, batch_size: int = 128, val_size: int = 5000,
                 binarize: str = "dynamic", **kwargs: Any):
        super().__init__(data_dir, batch_size=batch_size, val_size=val_size, binarize=binarize, **kwargs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    # -- files -------------------------------------------------------------------------
    @property
    def raw_folder(self) -> Path:
        """Where downloads go: <data_dir>/<NAME>/raw, the layout torchvision uses too."""
        return self.data_dir / self.name / "raw"

    def _files(self, allow_download: bool) -> dict[str, Path]:
        # Not data_dir itself: MNIST and Fashion-MNIST files have the same names.
        folders = [self.raw_folder, self.data_dir / self.name]
        found = locate_or_download(
            list(self.resources.values()), folders, self.raw_folder, self.mirrors, allow_download, self.name
        )
        return {key: found[r.filename] for key, r in self.resources.items()}

    def prepare_data(self) -> None:
        """Download what is missing (called on one process only)."""
        self._files(allow_download=self.download)

    def load(self) -> dict[str, ImageSet | None]:
        files = self._files(allow_download=False)
        images, labels = self._read_pair(files, "train_images", "train_labels")
        test_images, test_labels = self._read_pair(files, "test_images", "test_labels")
        return {"train": ImageSet(TensorSource(images), labels), "val": None,
                "test": ImageSet(TensorSource(test_images), test_labels)}

    def _read_pair(self, files: dict[str, Path], images_key: str, labels_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 1, H, W] uint8 and labels [N] int64, checked to be what they claim."""
        images_path, labels_path = files[images_key], files[labels_key]
        images, labels = (read_idx(files[key], self._official(key)) for key in (images_key, labels_key))
        if images.dim() != 3 or tuple(images.shape[1:]) != self.input_shape[1:] or images.dtype != torch.uint8:
            raise DataError(f"{images_path} holds {images.dtype} data of shape {list(images.shape)}, not "
                            f"{self.name} images (uint8, N x {self.input_shape[1]} x {self.input_shape[2]}). "
                            f"Replace it with the original file.")
        if labels.dim() != 1 or labels.dtype != torch.uint8:
            raise DataError(f"{labels_path} holds {labels.dtype} data of shape {list(labels.shape)}, not "
                            f"{self.name} labels (uint8, N). Replace it with the original file.")
        if len(images) != len(labels):
            raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
                            f"labels. One of them is from another dataset or split.")
        return images.unsqueeze(1), labels.long()

    def _official(self, key: str) -> tuple[int, str] | None:
        r = self.resources[key]
        return (r.raw_size, r.raw_md5) if r.raw_size and r.raw_md5 else None


class MNISTDataModule(IDXImageDataModule):
    """MNIST (LeCun, Cortes and Burges; CC BY-SA 3.0): 60k training and 10k test digits."""

    name = "MNIST"
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    resources = {
        "train_images": Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                 47040016, "6bbc9ace898e44ae57da46a324031adb"),
        "train_labels": Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                                 60008, "a25bea736e30d166cdddb491f175f624"),
        "test_images": Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                                7840016, "2646ac647ad5339dbf082846283269ea"),
        "test_labels": Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                                10008, "27ae3e4e09519cfbb04c329615203637"),
    }


class FashionMNISTDataModule(IDXImageDataModule):
    """Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; MIT): 60k training and 10k test 28x28 images
    of clothing in MNIST's IDX format, under ``<data_dir>/FashionMNIST/raw``."""

    name = "FashionMNIST"
    mirrors = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    resources = {
        "train_images": Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    }
