"""3D Shapes (Burgess & Kim 2018): 480,000 colour 64x64 renders of an object in a room, from six
factors, every combination once, in C order:

    floor_hue (10), wall_hue (10), object_hue (10), scale (8), shape (4), orientation (15)

Read from the official ``3dshapes.h5`` (datasets ``images`` uint8 [N, 64, 64, 3] and ``labels``
float [N, 6], the factor *values*) with h5py, imported only when this data is used. The labels
are turned into value indices (each column's sorted distinct values) and checked to be the C-order
grid; the images are read by rows, in sorted runs of consecutive rows, so the file can be
streamed; in memory it takes 5.5 GiB (``data.in_memory=auto`` decides).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .download import Resource, locate_or_download
from .factors import FactorDataModule, FactorGrid
from .sources import ImageSource

FILENAME = "3dshapes.h5"
URL = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"
# MD5 of the whole official file, as nmichlo/disent records it (uri_hash "full", MD5) in
# disent/dataset/data/_groundtruth__shapes3d.py.
MD5 = "099a2078d58cec4daad0702c55d06868"

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("3D Shapes is an HDF5 file: install h5py (pip install h5py) to read it.") from None
    return h5py


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted distinct rows as runs of consecutive rows: [(start, stop), ...]."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


class H5Images(ImageSource):
    """An HDF5 dataset of images N x H x W x C (uint8), read by rows as uint8 [n, C, H, W].

    The file is opened on first read in each process (never carried into DataLoader workers, by
    pickling or by fork); rows are read in sorted runs of consecutive rows, each one slice."""

    def __init__(self, path: str | os.PathLike, dataset: str = "images"):
        self.path, self.dataset = Path(path), dataset
        self._file, self._pid = None, None
        with _h5py().File(self.path, "r") as f:
            shape = f[dataset].shape
        if len(shape) != 4:
            raise DataError(f"{self.path}: {dataset} has shape {list(shape)}; images N x H x W x C expected.")
        self._len = shape[0]
        self.shape = (shape[3], shape[1], shape[2])

    def _images(self):
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _h5py().File(self.path, "r"), os.getpid()
        return self._file[self.dataset]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __len__(self) -> int:
        return self._len

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        rows_np = torch.as_tensor(rows, dtype=torch.long).cpu().numpy()
        distinct, where = np.unique(rows_np, return_inverse=True)  # sorted: sequential on disk
        images = self._images()
        block = np.empty((len(distinct), *images.shape[1:]), dtype=np.uint8)
        filled = 0
        for start, stop in _runs(distinct):
            block[filled : filled + stop - start] = images[start:stop]
            filled += stop - start
        return torch.from_numpy(np.ascontiguousarray(block[where].transpose(0, 3, 1, 2)))


def read_h5_grid(path: Path) -> tuple[int, ...]:
    """The factor sizes of a 3D Shapes file, checked: ``labels`` [N, 6] must be the grid of the six
    factors in C order (each column's values indexed in sorted order), ``images`` [N, H, W, 3] uint8."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            for name in ("images", "labels"):
                if name not in f:
                    raise DataError(f"{path} has no dataset {name!r} (it has {sorted(f.keys())}): it is not the 3D "
                                    f"Shapes file. Delete it to download it again.")
            images, labels = f["images"], f["labels"][()]
            if images.dtype != np.uint8 or len(images.shape) != 4 or images.shape[3] != 3:
                raise DataError(f"{path}: images is {images.dtype} {list(images.shape)}; the 3D Shapes file has "
                                f"uint8 [N, 64, 64, 3].")
            count = images.shape[0]
    except OSError as e:
        raise DataError(f"{path} cannot be read as an HDF5 file ({e}). Delete it to download it again.") from None
    if labels.ndim != 2 or labels.shape != (count, len(FACTOR_NAMES)):
        raise DataError(f"{path}: labels has shape {list(labels.shape)}; the 3D Shapes file has [{count}, 6] "
                        f"({', '.join(FACTOR_NAMES)}).")
    indices, sizes = [], []
    for column in labels.T:
        values, index = np.unique(column, return_inverse=True)
        indices.append(index.reshape(-1))
        sizes.append(len(values))
    expected = np.unravel_index(np.arange(count), sizes)
    if math.prod(sizes) != count or not all(np.array_equal(a, b) for a, b in zip(indices, expected)):
        raise DataError(f"{path}: labels are not the grid {' x '.join(FACTOR_NAMES)} in C order (one image per "
                        f"combination): it is not the 3D Shapes file.")
    return tuple(sizes)


class Shapes3DDataModule(FactorDataModule):
    """3D Shapes as ``data=shapes3d``: batches ``(x, y)``, x [B, 3, 64, 64] in [0, 1] (8-bit colour),
    y the factors int64 [B, 6] (floor_hue, wall_hue, object_hue, scale, shape, orientation).

    ``3dshapes.h5`` is looked for in ``data_dir`` and ``data_dir/shapes3d/`` and downloaded into the
    latter (MD5-checked) when missing and ``download`` is on. ``val_size`` and ``test_size`` images
    are held out (5,000 and 10,000 by default, fixed by ``split_seed``); the rest trains.
    """

    name = "3D Shapes"
    resource = Resource(FILENAME, MD5, urls=(URL,))
    mirrors: tuple[str, ...] = ()

    def __init__(self, data_dir: str | os.PathLike | None = None, **kwargs: Any):
        super().__init__(data_dir, **kwargs)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, 64, 64)

    @property
    def folder(self) -> Path:
        return self.data_dir / "shapes3d"

    def prepare_data(self) -> None:
        self._locate(allow_download=self.download)

    def _locate(self, allow_download: bool) -> Path:
        fix = f"Download {URL} into {self.folder} (or {self.data_dir})"
        return locate_or_download([self.resource], [self.data_dir, self.folder], self.folder, self.mirrors,
                                  allow_download, self.name, fix)[self.resource.filename]

    def factor_grid(self) -> FactorGrid:
        path = self._locate(allow_download=False)
        sizes = read_h5_grid(path)
        images = H5Images(path)
        if images.shape != self.input_shape:
            raise DataError(f"{path}: images of {list(images.shape)} (C, H, W); 3D Shapes has "
                            f"{list(self.input_shape)}.")
        return FactorGrid(FACTOR_NAMES, sizes, images)
