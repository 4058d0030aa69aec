"""CelebA, the aligned-and-cropped release: 202,599 face images (178x218), split by the official
partition file, centre-cropped and resized once and cached as uint8."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from ..errors import DataError
from .base import ImageDataModule, ImageSet, positive_size
from .download import Resource, locate_or_download
from .sources import FileSource, NpySource, cache_images


def _drive(file_id: str) -> tuple[str, ...]:
    """The address of a public Google Drive file (the official host of CelebA)."""
    return (f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",)


SPLITS = {"train": "0", "val": "1", "test": "2"}


class CelebADataModule(ImageDataModule):
    """CelebA (Liu et al. 2015): 162,770 training, 19,867 validation and 19,962 test images.

    Official layout under ``<data_dir>/celeba/``: ``img_align_celeba/`` (or the official
    ``img_align_celeba.zip``, unpacked on first use) and ``list_eval_partition.txt``. Each image
    is centre-cropped to ``crop`` x ``crop`` (148: the face, as the usual VAE papers do) and resized
    to ``image_size``, once; the result is cached as uint8 ``.npy`` files under
    ``<data_dir>/celeba/cache/``. Unlabelled here (y = -1).
    """

    name = "CelebA"
    resources = {
        "images": Resource("img_align_celeba.zip", "00d2c5bc6d35e252742224ab0c1e8fcb",
                           urls=_drive("0B7EVK8r0v71pZjFTYXZWM3FlRnM")),
        "partition": Resource("list_eval_partition.txt", "d32c9cbf5e040fd4025c592c306e6668",
                              urls=_drive("0B7EVK8r0v71pY0NSMzRuSXJEVkk")),
    }
    mirrors: tuple[str, ...] = ()

    def __init__(self, data_dir: str | None = None, image_size: int = 64, crop: int | None = 148, **kwargs: Any):
        kwargs.setdefault("val_size", None)
        super().__init__(data_dir, **kwargs)
        self.image_size = positive_size("data.image_size", image_size)
        self.crop = None if crop is None else positive_size("data.crop", crop)[0]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.image_size)

    @property
    def folder(self) -> Path:
        return self.data_dir / "celeba"

    def _cache(self, split: str) -> Path:
        h, w = self.image_size
        return self.folder / "cache" / f"{split}_crop{self.crop}_{h}x{w}.npy"

    def prepare_data(self) -> None:
        self._prepare(allow_download=self.download)

    def _prepare(self, allow_download: bool) -> None:
        """Find (or download and unpack) the images and the partition file; cache each split once."""
        if all(self._cache(split).is_file() for split in SPLITS):
            return
        images_dir = self.folder / "img_align_celeba"
        fix = (f"Put the official img_align_celeba/ (or img_align_celeba.zip) and list_eval_partition.txt in "
               f"{self.folder} (from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html)")
        wanted = [self.resources["partition"]] + ([] if images_dir.is_dir() else [self.resources["images"]])
        found = locate_or_download(wanted, [self.folder], self.folder, self.mirrors, allow_download, self.name, fix)
        if not images_dir.is_dir():
            self._unpack(found["img_align_celeba.zip"], images_dir)
        names = self._partition(found["list_eval_partition.txt"])
        for split, code in SPLITS.items():
            paths = [images_dir / name for name, c in names if c == code]
            missing = [p.name for p in paths[:1000] if not p.is_file()]
            if missing:
                raise DataError(f"{images_dir} lacks images the partition file lists (e.g. {missing[0]}): unpack the "
                                f"whole official img_align_celeba.zip there.")
            cache_images(FileSource(paths, self.image_size, channels=3, crop=self.crop), self._cache(split))

    def _unpack(self, archive: Path, images_dir: Path) -> None:
        """Unpack into a temporary folder, then rename: never a half-unpacked folder in place."""
        staging = self.folder / ".unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        except (zipfile.BadZipFile, OSError) as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError(f"{archive} cannot be unpacked ({e}). Delete it to download it again.") from None
        unpacked = staging / "img_align_celeba"
        if not unpacked.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError(f"{archive} has no img_align_celeba/ folder: it is not the official archive.")
        os.replace(unpacked, images_dir)
        shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _partition(path: Path) -> list[tuple[str, str]]:
        """(file name, split code) per line of list_eval_partition.txt: 0 train, 1 validation, 2 test."""
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        if not rows or any(len(r) != 2 or r[1] not in SPLITS.values() for r in rows):
            raise DataError(f"{path} is not CelebA's partition file (lines '000001.jpg 0', codes 0/1/2).")
        return [(r[0], r[1]) for r in rows]

    def load(self) -> dict[str, ImageSet | None]:
        self._prepare(allow_download=False)
        return {split: ImageSet(NpySource(self._cache(split))) for split in SPLITS}

