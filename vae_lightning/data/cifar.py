"""CIFAR-10 from the official python tarball: 50k training and 10k test 3x32x32 images, 10 classes."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataModule, ImageSet
from .download import Resource, locate_or_download, md5sum
from .sources import NpySource, write_npy

TRAIN_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST_BATCHES = {"test_batch": "40351d587109b95175f43aff81a1287e"}
FOLDER = "cifar-10-batches-py"  # the folder the tarball unpacks to


class _ArraysOnly(pickle.Unpickler):
    """The batches are pickled dicts of numpy arrays and lists: load those, nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def read_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 [N, 3, 32, 32] (stored as rows of R, G, B planes) and labels [N]."""
    try:
        batch = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
        images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # a truncated or foreign file: say which
        raise DataError(f"{where} is not a CIFAR-10 batch ({type(e).__name__}: {e}). Delete it to download it "
                        f"again.") from None
    if len(images) != len(labels):
        raise DataError(f"{where} has {len(images)} images but {len(labels)} labels. Delete it to download it again.")
    return images, labels


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test colour images, 3x32x32, 10 classes.

    Read from ``<data_dir>/cifar-10-python.tar.gz`` (the official archive, MD5-checked after a
    download) or from the folder it unpacks to, ``<data_dir>/cifar-10-batches-py/``; each batch
    file's MD5 is checked. The splits are cached once as uint8 ``.npy`` files under
    ``<data_dir>/cifar-10-batches-py/cache/``, which the streaming path reads memory-mapped.
    ``val_size`` training images are held out for validation (5,000 by default).
    """

    name = "CIFAR10"
    num_classes = 10
    mirrors = ("https://www.cs.toronto.edu/~kriz/",)
    archive = Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")

    def __init__(self, data_dir: str | None = None, val_size: int | float = 5000, **kwargs: Any):
        super().__init__(data_dir, val_size=val_size, **kwargs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    @property
    def folder(self) -> Path:
        return self.data_dir / FOLDER

    def _cache(self, split: str) -> tuple[Path, Path]:
        return self.folder / "cache" / f"{split}_images.npy", self.folder / "cache" / f"{split}_labels.npy"

    def prepare_data(self) -> None:
        """Find or download the archive, check it, and write the uint8 cache (once, on one process)."""
        self._prepare(allow_download=self.download)

    def _prepare(self, allow_download: bool) -> None:
        if all(p.is_file() for split in ("train", "test") for p in self._cache(split)):
            return
        if all((self.folder / name).is_file() for name in (*TRAIN_BATCHES, *TEST_BATCHES)):
            read = self._read_folder
        else:
            fix = (f"Download {self.mirrors[0]}{self.archive.filename} into {self.data_dir} (or unpack it "
                   f"there, as {self.folder})")
            archive = locate_or_download([self.archive], [self.data_dir], self.data_dir, self.mirrors, allow_download,
                                         self.name, fix)[self.archive.filename]
            read = self._tar_reader(archive)
        for split, batches in (("train", TRAIN_BATCHES), ("test", TEST_BATCHES)):
            parts = [read_batch(read(name, md5), name) for name, md5 in batches.items()]
            images_path, labels_path = self._cache(split)
            write_npy(labels_path, np.concatenate([labels for _, labels in parts]))
            write_npy(images_path, np.concatenate([images for images, _ in parts]))

    def _read_folder(self, name: str, md5: str) -> bytes:
        path = self.folder / name
        if md5sum(path) != md5:
            raise DataError(f"{path} is not the official CIFAR-10 {name} (MD5 mismatch). Delete {self.folder} and "
                            f"the archive to download them again.")
        return path.read_bytes()

    def _tar_reader(self, archive: Path):
        import hashlib

        def read(name: str, md5: str) -> bytes:
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    member = tar.extractfile(f"{FOLDER}/{name}")
                    data = member.read() if member is not None else None
            except (tarfile.TarError, KeyError, OSError, EOFError) as e:
                raise DataError(f"{archive} has no readable {FOLDER}/{name} ({e}). Delete it to download it "
                                f"again.") from None
            if data is None or hashlib.md5(data).hexdigest() != md5:
                raise DataError(f"{FOLDER}/{name} in {archive} is not the official file (MD5 mismatch). Delete the "
                                f"archive to download it again.")
            return data

        return read

    def load(self) -> dict[str, ImageSet | None]:
        self._prepare(allow_download=False)  # the cache, if only the archive is there
        splits: dict[str, ImageSet | None] = {"val": None}
        for split in ("train", "test"):
            images_path, labels_path = self._cache(split)
            splits[split] = ImageSet(NpySource(images_path), torch.from_numpy(np.load(labels_path)))
        return splits
