"""A researcher's own images: a folder of PNG/JPEG files, or an array file (.npy, .npz, .pt)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import require_choice, require_int
from ..errors import ConfigError, DataError
from .base import ImageDataModule, ImageSet, positive_size
from .sources import IMAGE_SUFFIXES, FileSource, NpySource, TensorSource, as_uint8, cache_images, fingerprint


def default_cache_dir() -> Path:
    """Where decoded images are cached unless ``data.cache_dir`` says: ``$XDG_CACHE_HOME/vae-lightning``,
    else ``~/.cache/vae-lightning`` (the user's cache, not the dataset's folder, which may be shared or
    read-only)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vae-lightning"


def _path(key: str, value: Any) -> Path:
    if value in (None, ""):
        raise ConfigError(key, value, "is required: give the path of your data, e.g. data.path=/data/my_images")
    return Path(str(value)).expanduser()


class ImageFolderDataModule(ImageDataModule):
    """Every PNG/JPEG/BMP/WebP file under ``path``, resized (shorter side) and centre-cropped to
    ``image_size``, as ``channels`` = 3 (RGB) or 1 (greyscale), read with Pillow.

    With one sub-folder per class (``path/cat/*.png``, ``path/dog/*.png``) the sub-folder names, in
    sorted order, are the labels; with the files anywhere else there are none. ``val_size`` and
    ``test_size`` images (counts, or fractions in (0, 1)) are held out with ``split_seed``. In memory,
    the decoded images are cached once as ``<cache_dir>/image_folder/<folder name>-<key>.npy``, the key a
    hash of the files' paths, sizes and times and the settings (two folders never share a cache);
    ``cache_dir`` by default :func:`default_cache_dir`, ``data_dir`` for the cache beside the data.
    Streaming reads the files in DataLoader workers and caches nothing.
    """

    name = "image_folder"

    def __init__(self, path: str | None = None, image_size: int | list[int] = 64, channels: int = 3,
                 val_size: int | float = 0.05, test_size: int | float = 0.05, data_dir: str | None = None,
                 cache_dir: str | None = None, **kwargs: Any):
        super().__init__(data_dir, val_size=val_size, test_size=test_size, **kwargs)
        self.path = _path("data.path", path)
        self.cache_dir = default_cache_dir() if cache_dir in (None, "") else Path(str(cache_dir)).expanduser()
        self.image_size = positive_size("data.image_size", image_size)
        self.channels = require_choice("data.channels", require_int("data.channels", channels), [1, 3])
        self.name = self.path.name or str(self.path)
        self._files: tuple[list[Path], list[int] | None] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def files(self) -> tuple[list[Path], list[int] | None]:
        """The image files in sorted order, and their class indices when every file sits in a class folder."""
        if self._files is None:
            if not self.path.is_dir():
                raise DataError(f"data.path={self.path} is not a folder: give a folder of PNG/JPEG images "
                                f"(optionally one sub-folder per class).")
            paths = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not paths:
                raise DataError(f"data.path={self.path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            folders = [p.relative_to(self.path).parts for p in paths]
            labels = None
            if all(len(parts) == 2 for parts in folders):
                classes = sorted({parts[0] for parts in folders})
                if len(classes) > 1:
                    labels = [classes.index(parts[0]) for parts in folders]
                    self.num_classes = len(classes)
            self._files = (paths, labels)
        return self._files

    def load(self) -> dict[str, ImageSet | None]:
        paths, labels = self.files()
        source = FileSource(paths, self.image_size, self.channels)
        if self.in_memory is not False:
            fits = self.in_memory is True or source.nbytes <= self._memory_limit()
            if fits:
                source = NpySource(cache_images(source, self._cache_file(paths)))
        return {"train": ImageSet(source, None if labels is None else torch.tensor(labels)), "val": None,
                "test": None}

    def _cache_file(self, paths: list[Path]) -> Path:
        """The cache of these files under ``cache_dir``: found there, or a place it can be written (else one
        line that says which setting to change)."""
        key = fingerprint(paths, self.image_size, self.channels)
        cache = self.cache_dir / "image_folder" / f"{self.path.name}-{key}.npy"
        if not cache.is_file():
            try:  # a read-only or shared folder: say so now, not in a traceback halfway through decoding
                cache.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=cache.parent):
                    pass
            except OSError as e:
                raise DataError(f"data.cache_dir={self.cache_dir} cannot be written ({e.strerror or e}): set "
                                f"data.cache_dir to a folder you can write, where the decoded images of data.path "
                                f"are cached, or data.in_memory=false to read the files without a cache.") from None
        return cache


def _pick(arrays: dict[str, Any], key: str | None, names: tuple[str, ...], what: str, where: Path, need: bool):
    if key is not None:
        if key not in arrays:
            raise DataError(f"{where} has no array {key!r} (it has {sorted(arrays)}): set data.{what}_key to one of them.")
        return arrays[key]
    found = [n for n in names if n in arrays]
    if found:
        return arrays[found[0]]
    if what == "images" and len(arrays) == 1:
        return next(iter(arrays.values()))
    if need:
        raise DataError(f"{where} has arrays {sorted(arrays)}: none is called {' or '.join(names)}; set "
                        f"data.images_key (and data.labels_key) to say which.")
    return None


class ArraysDataModule(ImageDataModule):
    """A user's images in one file: ``.npy`` (memory-mapped, so it can be streamed), ``.npz`` or ``.pt``
    (an array, or arrays named ``images``/``x`` and optionally ``labels``/``y``; ``images_key`` and
    ``labels_key`` name others).

    Layouts: N x H x W (one channel), N x H x W x C or N x C x H x W with C in 1, 3, 4; ``layout``
    (``NCHW`` / ``NHWC``) settles the ambiguous ones. Values: uint8 0..255 or floats in [0, 1]
    (stored as round(255 x)). ``val_size`` and ``test_size`` images (counts or fractions) are held out
    with ``split_seed``, or ``test_path`` names a file of test images of the same shape.
    """

    name = "arrays"

    def __init__(self, path: str | None = None, test_path: str | None = None, layout: str = "auto",
                 images_key: str | None = None, labels_key: str | None = None, val_size: int | float = 0.05,
                 test_size: int | float = 0.05, data_dir: str | None = None, **kwargs: Any):
        super().__init__(data_dir, val_size=val_size, test_size=test_size, **kwargs)
        self.path = _path("data.path", path)
        self.test_path = None if test_path in (None, "") else Path(str(test_path)).expanduser()
        self.layout = require_choice("data.layout", layout, ["auto", "NCHW", "NHWC"])
        self.images_key, self.labels_key = images_key, labels_key
        self.name = self.path.name
        self._sets: dict[Path, ImageSet] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._read(self.path).source.shape

    def _read(self, path: Path) -> ImageSet:
        if path not in self._sets:
            self._sets[path] = self._open(path)
        return self._sets[path]

    def _open(self, path: Path) -> ImageSet:
        if not path.is_file():
            raise DataError(f"{path} does not exist: give data.path (and data.test_path) as files of images "
                            f"(.npy, .npz or .pt).")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r")
            channels_last = self._channels_last(array.shape, path)
            source = NpySource(path, channels_last)
            if array.dtype != np.uint8:
                as_uint8(np.asarray(array[: min(len(array), 4096)]), path)  # the range, checked early
            labels_path = path.with_name(path.stem + "_labels.npy")
            labels = torch.from_numpy(np.load(labels_path)).long() if labels_path.is_file() else None
            return self._checked(ImageSet(source, labels), path)
        if suffix == ".npz":
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        elif suffix == ".pt":
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise DataError(f"{path} cannot be read as tensors ({type(e).__name__}): save a tensor or a dict of "
                                f"tensors with torch.save.") from None
            loaded = loaded if isinstance(loaded, dict) else {"images": loaded}
            arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in loaded.items()}
        else:
            raise DataError(f"{path}: {suffix or 'no suffix'} is not a format read here: use .npy, .npz or .pt.")
        images = _pick(arrays, self.images_key, ("images", "x"), "images", path, need=True)
        labels = _pick(arrays, self.labels_key, ("labels", "y"), "labels", path, need=False)
        channels_last = self._channels_last(images.shape, path)
        images = as_uint8(np.asarray(images), path)
        images = images[:, None] if images.ndim == 3 else images
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2) if channels_last else images))
        labels = None if labels is None else torch.as_tensor(np.asarray(labels)).long()
        return self._checked(ImageSet(TensorSource(tensor), labels), path)

    def _channels_last(self, shape: tuple[int, ...], path: Path) -> bool:
        """Whether ``shape`` is N x H x W x C (else N x C x H x W, or N x H x W); explained when it is neither."""
        explain = ("images must be N x H x W (one channel), N x H x W x C or N x C x H x W with C = 1, 3 or 4 "
                   "channels")
        if len(shape) == 3:
            return False
        if len(shape) != 4:
            raise DataError(f"{path} holds an array of shape {list(shape)}: {explain}.")
        first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
        if self.layout != "auto":
            if not (first if self.layout == "NCHW" else last):
                raise DataError(f"{path} holds shape {list(shape)}, which is not data.layout={self.layout}: {explain}.")
            return self.layout == "NHWC"
        if first and last:  # both could be channels (4 x 4 x 3): the channels are fewer than the rows and columns
            first, last = shape[1] < min(shape[2:]), shape[3] < min(shape[1:3])
        if first and last or (shape[1] in (1, 3, 4) and shape[3] in (1, 3, 4) and not (first or last)):
            raise DataError(f"{path} holds shape {list(shape)}: channels first or last? Set data.layout=NCHW or "
                            f"data.layout=NHWC.")
        if not (first or last):
            raise DataError(f"{path} holds shape {list(shape)}: {explain} (set data.layout if yours is one of them).")
        return last

    def _checked(self, split: ImageSet, path: Path) -> ImageSet:
        if split.labels is not None:
            if split.labels.dim() != 1 or len(split.labels) != len(split.source):
                raise DataError(f"{path}: {len(split.source)} images but labels of shape {list(split.labels.shape)}: "
                                f"give one integer label per image (or none).")
            if len(split.labels) and split.labels.min() < 0:
                raise DataError(f"{path}: labels must be integers >= 0.")
            self.num_classes = max(self.num_classes or 0, int(split.labels.max()) + 1 if len(split.labels) else 0)
        return split

    def load(self) -> dict[str, ImageSet | None]:
        train = self._read(self.path)
        test = None
        if self.test_path is not None:
            test = self._read(self.test_path)
            if test.source.shape != train.source.shape:
                raise DataError(f"data.test_path={self.test_path} holds images of {list(test.source.shape)}, but "
                                f"data.path has {list(train.source.shape)}: they must match.")
            if (test.labels is None) != (train.labels is None):
                test = ImageSet(test.source, None) if train.labels is None else test
        if self.in_memory is False and not isinstance(train.source, NpySource):
            raise ConfigError("data.in_memory", False, f"streams from a .npy file only ({self.path.suffix} files are "
                                                       f"read whole): save the images with numpy.save as .npy")
        return {"train": train, "val": None, "test": test}

