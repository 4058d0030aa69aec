"""Where a split's images come from: uint8 [N, C, H, W] read by rows, from memory or from disk.

A source is what the image DataModules hold before they decide how to serve it: read whole into
memory (the fast path), or read a batch at a time by DataLoader workers (streaming). Every source
hands out uint8 images [n, C, H, W] for any rows, in the order asked.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class ImageSource:
    """uint8 images [N, C, H, W] read by rows."""

    shape: tuple[int, int, int]  # (C, H, W)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        """Images at ``rows`` (int64 [n]), in that order: uint8 [n, C, H, W]."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        return len(self) * math.prod(self.shape)


class TensorSource(ImageSource):
    """Images already in memory."""

    def __init__(self, images: torch.Tensor):
        assert images.dim() == 4 and images.dtype == torch.uint8, (images.shape, images.dtype)
        self.images = images
        self.shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        return self.images[rows]


class NpySource(ImageSource):
    """A ``.npy`` file of images, memory-mapped: N x C x H x W (``channels_last=False``) or
    N x H x W x C, uint8 or floats in [0, 1] (turned into 0..255 as they are read).

    The file is opened lazily in each process, so DataLoader workers share the page cache
    instead of a pickled copy.
    """

    def __init__(self, path: str | os.PathLike, channels_last: bool = False):
        self.path, self.channels_last = Path(path), channels_last
        self._array: np.ndarray | None = None
        array = self.array
        if array.ndim == 3:  # N x H x W
            self.shape = (1, *array.shape[1:])
        else:
            n, a, b, c = array.shape
            self.shape = (c, a, b) if channels_last else (a, b, c)
        self._len = len(array)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return self._len

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        rows_np = rows.cpu().numpy()
        order = np.argsort(rows_np, kind="stable")  # sorted reads are sequential on disk
        block = np.empty((len(rows_np), *self.array.shape[1:]), dtype=self.array.dtype)
        block[order] = self.array[rows_np[order]]
        if block.ndim == 3:  # N x H x W: one channel
            block = block[:, None] if not self.channels_last else block[..., None]
        images = torch.from_numpy(as_uint8(block, self.path))
        return images.permute(0, 3, 1, 2).contiguous() if self.channels_last else images


def as_uint8(array: np.ndarray, where: object) -> np.ndarray:
    """uint8 images as they are; floats in [0, 1] as round(255 x). Anything else: a DataError."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
        if low < 0 or high > 1 or not math.isfinite(low + high):
            raise DataError(f"{where} holds {array.dtype} images with values in [{low:g}, {high:g}]: float images "
                            f"must lie in [0, 1] (divide 0..255 data by 255, or store it as uint8).")
        return np.rint(array * 255).astype(np.uint8)
    raise DataError(f"{where} holds {array.dtype} images: give uint8 (0..255) or floats in [0, 1].")


# -- image files ----------------------------------------------------------------------------

def load_image(path: Path, size: tuple[int, int], channels: int, crop: int | None = None) -> np.ndarray:
    """One image file as uint8 [C, H, W]: optionally centre-cropped to ``crop`` x ``crop`` first, then
    resized so its shorter side fits ``size`` and centre-cropped to it (``Resize`` then ``CenterCrop``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if crop is not None:
                image = _centre_crop(image, crop, crop)
            image = _resize_and_crop(image, size)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path} cannot be read as an image ({e}). Remove it or replace it.") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _centre_crop(image, height: int, width: int):
    w, h = image.size
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def _resize_and_crop(image, size: tuple[int, int]):
    from PIL import Image

    height, width = size
    w, h = image.size
    scale = max(height / h, width / w)  # the shorter side (relative to the target) fits exactly
    new = (max(width, round(w * scale)), max(height, round(h * scale)))
    if new != (w, h):
        image = image.resize(new, Image.BICUBIC, reducing_gap=None)
    return _centre_crop(image, height, width)


class FileSource(ImageSource):
    """Image files read with Pillow when asked for, each resized and cropped to ``size``."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], channels: int, crop: int | None = None):
        self.paths, self.size, self.channels, self.crop = list(paths), tuple(size), channels, crop
        self.shape = (channels, *self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        images = [load_image(self.paths[i], self.size, self.channels, self.crop) for i in rows.tolist()]
        return torch.from_numpy(np.stack(images)) if images else torch.empty(0, *self.shape, dtype=torch.uint8)


def read_all(source: ImageSource, chunk: int = 4096) -> torch.Tensor:
    """Every image of ``source`` in memory: uint8 [N, C, H, W]."""
    if isinstance(source, TensorSource):
        return source.images
    out = torch.empty(len(source), *source.shape, dtype=torch.uint8)
    for start in range(0, len(source), chunk):
        rows = torch.arange(start, min(start + chunk, len(source)))
        out[rows] = source.read(rows)
    return out


def write_npy(path: Path, images: torch.Tensor | np.ndarray) -> None:
    """Save an array under a temporary name and rename it into place: never a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part.npy")
    np.save(partial, images.numpy() if isinstance(images, torch.Tensor) else images)
    os.replace(partial, path)


def cache_images(source: FileSource, path: Path, chunk: int = 1024) -> Path:
    """Decode every file of ``source`` once into a uint8 ``.npy`` at ``path`` (written as it goes,
    renamed into place at the end), in parallel over this machine's cores."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part.npy")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(source), *source.shape))
    chunks = [torch.arange(s, min(s + chunk, len(source))) for s in range(0, len(source), chunk)]
    workers = min(len(chunks), os.cpu_count() or 1)
    try:
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                for rows, images in zip(chunks, pool.map(source.read, chunks)):
                    out[rows.numpy()] = images.numpy()
        else:
            for rows in chunks:
                out[rows.numpy()] = source.read(rows).numpy()
        out.flush()
    except BaseException:  # an unreadable file, an interrupt: no half-written cache is left behind
        del out
        partial.unlink(missing_ok=True)
        raise
    del out
    os.replace(partial, path)
    return path


def fingerprint(paths: Sequence[Path], *settings: object) -> str:
    """A short hash of the files' names, sizes and times and of the settings: the key of a cache."""
    digest = hashlib.sha1(repr(settings).encode())
    for p in paths:
        stat = p.stat()
        digest.update(f"{p}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
