"""dSprites (Matthey et al. 2017): 737,280 binary 64x64 images of one white sprite on black, made
from five factors, every combination once, in C order:

    shape (3: square, ellipse, heart), scale (6: linspace(0.5, 1, 6)),
    orientation (40: linspace(0, 2 pi, 40)), posX (32: linspace(0, 1, 32)), posY (32: linspace(0, 1, 32))

Two sources, one grid (``data.source``):

``file``
    The official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` in ``data_dir`` or
    ``data_dir/dsprites/`` (downloaded there, MD5-checked, when ``download`` is on). Only what is
    needed is read: the ``latents_classes`` member, to check that the rows are the C-order grid
    (and take its sizes), and the ``imgs`` member, decompressed in chunks into a uint8 ``.npy``
    cache (0/1 -> 0/255, 2.8 GiB) under ``dsprites/cache/``, which is memory-mapped from then on,
    so streaming and in-memory runs both read it by rows. The colour latent (one value) is dropped.

``generate``
    The same grid, drawn here procedurally for machines without the file: each image is rendered
    when its row is read (vectorised in torch: every pixel centre is taken back through the
    sprite's translation, rotation and scale into the shape's own frame and tested for membership
    of the canonical square, ellipse or heart). Exact: the factors, their sizes and order, the
    factor values (the linspaces above), the image size, the binary pixels, one image per row in
    the same order. Approximate, since the original renderer is not published: the outlines (the
    heart is the curve (x^2 + y^2 - 1)^3 = x^2 y^3, the ellipse has axes 2:1, all three shapes the
    same area), the sprite size in pixels (one constant, fitted so the mean pixel over the whole
    grid matches the published 0.042494 of the real images), where positions 0 and 1 fall on the
    canvas (the biggest sprite just fits at either end), the sense of rotation and of posY
    (anticlockwise; posY grows downwards) and the rasterisation (a pixel is on when its centre is
    inside; the original's edge pixels may differ). One check that was not fitted: the mean over
    images of each image's pixel standard deviation is 0.1963 here and 0.1952 for the real data
    (the same record as the mean), so the spread of sprite areas is close but not the same. Models
    trained on it learn the same factor structure, not pixel-identical images. Drawing all 737,280
    takes about 7-20 s on one or two CPU cores.

``auto``
    The file (or its cache) when present, else ``generate``, saying so once in the log.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..checks import require_choice
from ..errors import DataError
from .download import Resource, find_file, locate_or_download, md5sum
from .factors import FactorDataModule, FactorGrid
from .sources import ImageSource, NpySource

log = logging.getLogger("vae_lightning")

FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + FILENAME
# MD5 of the official file, as BoevaLab/latte (latte/dataset/dsprites.py) records it.
MD5 = "7da33b31b13a06f4b04a70402ce90c2e"

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * math.pi, 40)  # 0 and 2 pi both: the first and last look the same
POSITIONS = np.linspace(0.0, 1.0, 32)
IMAGE_SIZE = 64

# -- the procedural sprites -----------------------------------------------------------------
# Canonical shapes, each of area 4 (in units where the square's half-side is 1), centred on their
# centroid: the same area makes the three shapes as large as each other at any scale.
ELLIPSE_AXES = (math.sqrt(8 / math.pi), math.sqrt(2 / math.pi))  # semi-axes 2:1, pi a b = 4
HEART_AREA = 3.66196  # of (x^2 + y^2 - 1)^3 <= x^2 y^3, numerically (4000^2 grid)
HEART_CENTROID_Y = 0.29347  # its centroid, above the origin
HEART_SCALE = math.sqrt(4 / HEART_AREA)
HEART_RADIUS = 1.29085 * HEART_SCALE  # farthest point from the centroid
#: Pixels per unit at scale 1, fitted so the mean pixel over the whole grid matches the real
#: data's 0.042494423521889584 (the mean over all 737,280 images that nmichlo/disent records in
#: disent/dataset/util/stats.py): the one constant fitted to the real images.
UNIT_PIXELS = 8.5759
#: The biggest sprite's reach from its centre (the ellipse's semi-major axis at scale 1): positions
#: 0 and 1 put the centre this far from the edges, so no sprite is cut off.
MARGIN = max(math.sqrt(2), ELLIPSE_AXES[0], HEART_RADIUS) * UNIT_PIXELS
#: Sprites are drawn in a window this wide around their centre, a quarter of the canvas (four times
#: less work): the biggest sprite spans 2 x MARGIN = 27.4 pixels, and the window's edges sit at
#: least 1.8 pixels beyond it wherever the centre falls between pixels.
WINDOW = 32


class SpriteRenderer(ImageSource):
    """The dSprites grid drawn procedurally: ``read(rows)`` renders those rows (uint8 0/255
    [n, 1, 64, 64]), ``chunk`` images at a time."""

    shape = (1, IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, chunk: int = 512):
        self.chunk = chunk
        self._strides = torch.tensor([math.prod(FACTOR_SIZES[i + 1:]) for i in range(len(FACTOR_SIZES))])
        # Per factor value, what the renderer needs: computed in float64, kept in float32, looked up
        # (so an image gets the same numbers, and pixels, however it is batched).
        self._pixels_per_unit = torch.tensor(SCALES * UNIT_PIXELS, dtype=torch.float32)
        self._cos = torch.tensor(np.cos(ORIENTATIONS), dtype=torch.float32)
        self._sin = torch.tensor(np.sin(ORIENTATIONS), dtype=torch.float32)
        self._centre = torch.tensor(MARGIN + POSITIONS * (IMAGE_SIZE - 2 * MARGIN), dtype=torch.float32)
        self._window = torch.arange(WINDOW)

    def __len__(self) -> int:
        return math.prod(FACTOR_SIZES)

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        return self.render(rows[:, None] // self._strides % torch.tensor(FACTOR_SIZES))

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        """Images of factor rows ``factors`` (int64 [n, 5]): uint8 [n, 1, 64, 64], 0 or 255."""
        out = torch.zeros(len(factors), IMAGE_SIZE * IMAGE_SIZE, dtype=torch.uint8)
        for start in range(0, len(factors), self.chunk):
            part = factors[start : start + self.chunk]
            window, top, left = self._draw(part)
            # Each sprite's window into its place on the canvas: flat index (top + i) * 64 + (left + j).
            offsets = (top[:, None, None] + self._window[None, :, None]) * IMAGE_SIZE + (
                left[:, None, None] + self._window[None, None, :])
            out[start : start + len(part)].scatter_(1, offsets.flatten(1), window.flatten(1).to(torch.uint8) * 255)
        return out.view(len(factors), *self.shape)

    def _draw(self, factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each sprite in a WINDOW x WINDOW window around its centre (the rest of the canvas is black):
        bool [n, WINDOW, WINDOW] (which pixel centres lie inside the sprite) and the windows' top
        rows and left columns, int64 [n] each."""
        shape, scale, orientation, pos_x, pos_y = factors.unbind(1)
        centre_x, centre_y = self._centre[pos_x], self._centre[pos_y]
        top = (centre_y.round().long() - WINDOW // 2).clamp(0, IMAGE_SIZE - WINDOW)
        left = (centre_x.round().long() - WINDOW // 2).clamp(0, IMAGE_SIZE - WINDOW)
        # Pixel centres relative to the sprite's centre; columns grow right (x), rows grow down (posY).
        du = (left[:, None, None] + self._window[None, None, :]).float() + 0.5 - centre_x[:, None, None]  # [n, 1, W]
        dv = (top[:, None, None] + self._window[None, :, None]).float() + 0.5 - centre_y[:, None, None]  # [n, W, 1]
        # Into the shape's frame: undo the rotation (anticlockwise on screen, so y = -dv points up)
        # and the scale, as one 2x2 map per image.
        a = (self._cos[orientation] / self._pixels_per_unit[scale])[:, None, None]
        b = (self._sin[orientation] / self._pixels_per_unit[scale])[:, None, None]
        inside = torch.empty(len(factors), WINDOW, WINDOW, dtype=torch.bool)
        for code, test in enumerate((_in_square, _in_ellipse, _in_heart)):
            picked = (shape == code).nonzero().squeeze(1)
            if len(picked):
                a_k, b_k, du_k, dv_k = a[picked], b[picked], du[picked], dv[picked]
                inside[picked] = test(a_k * du_k - b_k * dv_k, -(b_k * du_k) - a_k * dv_k)  # x, y: [k, W, W]
        return inside, top, left


def _in_square(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.abs() <= 1) & (y.abs() <= 1)


def _in_ellipse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    a, b = ELLIPSE_AXES
    return (x / a).square() + (y / b).square() <= 1


def _in_heart(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x / HEART_SCALE
    y = y / HEART_SCALE + HEART_CENTROID_Y
    x2, y2 = x.square(), y.square()
    s = x2 + y2 - 1
    return s * s * s <= x2 * y2 * y


# -- the official file ------------------------------------------------------------------------

def _npz_member(zf: zipfile.ZipFile, name: str, where: Path) -> tuple[BinaryIO, tuple[int, ...], np.dtype]:
    """An array of an .npz opened for reading its data (the header read): (stream, shape, dtype).
    Nothing else of the archive is read, and this member only as far as it is consumed."""
    member = f"{name}.npy"
    if member not in zf.namelist():
        names = sorted(n.removesuffix(".npy") for n in zf.namelist())
        raise DataError(f"{where} has no array {name!r} (it has {names}): it is not the dSprites file. Delete it to "
                        f"download it again.")
    stream = zf.open(member)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} (1.0 or 2.0 expected)")
        shape, fortran, dtype = read_header(stream)
    except ValueError as e:
        stream.close()
        raise DataError(f"{where}: {name} is not a readable array ({e}). Delete it to download it again.") from None
    if fortran:
        stream.close()
        raise DataError(f"{where}: {name} is stored in Fortran order; the dSprites file stores it in C order.")
    return stream, tuple(shape), dtype


def _read_rows(stream: BinaryIO, dtype: np.dtype, row_shape: tuple[int, ...], count: int) -> np.ndarray:
    row_bytes = dtype.itemsize * math.prod(row_shape)
    data = stream.read(row_bytes * count)
    if len(data) != row_bytes * count:
        raise EOFError(f"{len(data)} bytes where {row_bytes * count} were expected")
    return np.frombuffer(data, dtype=dtype).reshape(count, *row_shape)


def read_npz_grid(path: Path) -> tuple[int, ...]:
    """The factor sizes of a dSprites .npz, checked: ``latents_classes`` [N, 6] must list the grid of
    colour x shape x scale x orientation x posX x posY in C order, one colour; returns the five
    sizes after colour. Reads that member only (35 MB decompressed for the real file)."""
    try:
        with zipfile.ZipFile(path) as zf:
            stream, shape, dtype = _npz_member(zf, "latents_classes", path)
            with stream:
                if len(shape) != 2 or shape[1] != 6 or dtype.kind not in "iu":
                    raise DataError(f"{path}: latents_classes is {dtype} {list(shape)}; the dSprites file has "
                                    f"integers [N, 6] (colour, shape, scale, orientation, posX, posY).")
                classes = _read_rows(stream, dtype, (6,), shape[0]).astype(np.int64)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path} cannot be read as an .npz archive ({e}). Delete it to download it again.") from None
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1) if len(classes) else (0,) * 6
    expected = np.stack(np.unravel_index(np.arange(len(classes)), sizes), axis=1) if len(classes) else classes
    if sizes[0] != 1 or math.prod(sizes) != len(classes) or not np.array_equal(classes, expected):
        raise DataError(f"{path}: latents_classes is not the grid colour x {' x '.join(FACTOR_NAMES)} in C order "
                        f"(one image per combination, one colour): it is not the dSprites file.")
    return sizes[1:]


def cache_npz_images(path: Path, cache: Path, count: int, chunk: int = 8192) -> Path:
    """Decompress the ``imgs`` member of the dSprites .npz (uint8 [N, 64, 64] of 0/1) a chunk at a
    time into ``cache``: uint8 [N, 1, 64, 64] of 0/255, renamed into place when complete."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".part.npy")
    try:
        with zipfile.ZipFile(path) as zf:
            stream, shape, dtype = _npz_member(zf, "imgs", path)
            with stream:
                if shape != (count, IMAGE_SIZE, IMAGE_SIZE) or dtype != np.uint8:
                    raise DataError(f"{path}: imgs is {dtype} {list(shape)}; the dSprites file has uint8 "
                                    f"[{count}, 64, 64] (one image per row of latents_classes).")
                out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(count, 1, *shape[1:]))
                for start in range(0, count, chunk):
                    n = min(chunk, count - start)
                    images = _read_rows(stream, dtype, shape[1:], n)
                    if images.max(initial=0) > 1:
                        raise DataError(f"{path}: imgs holds values above 1 (rows {start}..{start + n - 1}); the "
                                        f"dSprites images are 0/1.")
                    out[start : start + n, 0] = images * np.uint8(255)
                out.flush()
                del out
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        partial.unlink(missing_ok=True)
        raise DataError(f"{path} cannot be read as an .npz archive ({e}). Delete it to download it again.") from None
    except DataError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, cache)
    return cache


class DSpritesDataModule(FactorDataModule):
    """dSprites as ``data=dsprites``: batches ``(x, y)``, x [B, 1, 64, 64] in {0, 1}, y the factors
    int64 [B, 5] (shape, scale, orientation, posX, posY).

    ``source``: ``file`` (the official .npz, downloaded when missing and ``download`` is on),
    ``generate`` (drawn procedurally: the same grid, approximate sprites; see the module's notes)
    or ``auto`` (the file when present, else generated). ``val_size`` and ``test_size`` images of
    the grid are held out (5,000 and 10,000 by default, fixed by ``split_seed``); the rest trains.
    """

    name = "dSprites"
    #: Stored as 0/255 already: a Bernoulli likelihood applies with data.binarize=none.
    binary_images = True
    resource = Resource(FILENAME, MD5, urls=(URL,))
    mirrors: tuple[str, ...] = ()

    def __init__(self, data_dir: str | os.PathLike | None = None, source: str = "auto", **kwargs: Any):
        super().__init__(data_dir, **kwargs)
        self.source = require_choice("data.source", source, ["auto", "file", "generate"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, IMAGE_SIZE, IMAGE_SIZE)

    @property
    def folder(self) -> Path:
        return self.data_dir / "dsprites"

    @property
    def cache(self) -> Path:
        return self.folder / "cache" / "imgs_uint8.npy"

    def _cached_sizes(self) -> tuple[int, ...] | None:
        grid = self.cache.with_name("grid.json")
        if self.cache.is_file() and grid.is_file():
            return tuple(json.loads(grid.read_text())["factor_sizes"])
        return None

    def _file(self) -> Path | None:
        return find_file(self.resource, [self.data_dir, self.folder])

    def prepare_data(self) -> None:
        """Find (or download) the file and write the image cache, once, on one process."""
        if self.source == "file" or (self.source == "auto" and self._file() is not None):
            self._prepare(allow_download=self.download)

    def _prepare(self, allow_download: bool) -> tuple[int, ...]:
        """The image cache from the official file (found, or downloaded when allowed): its factor sizes."""
        sizes = self._cached_sizes()
        if sizes is not None:
            return sizes
        fix = (f"Download {URL} into {self.folder} (or {self.data_dir}), or set data.source=generate to draw the "
               f"images procedurally")
        path = locate_or_download([self.resource], [self.data_dir, self.folder], self.folder, self.mirrors,
                                  allow_download, self.name, fix)[self.resource.filename]
        if md5sum(path) != self.resource.md5:
            raise DataError(f"{path} is not the official dSprites file (MD5 mismatch). Delete it to download it again.")
        sizes = read_npz_grid(path)
        log.info(f"data: dSprites: decompressing the images of {path} once into {self.cache}")
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        self.cache.with_name("grid.json").write_text(json.dumps({"factor_sizes": list(sizes)}))
        cache_npz_images(path, self.cache, math.prod(sizes))
        return sizes

    def factor_grid(self) -> FactorGrid:
        if self.source == "file" or (self.source == "auto" and (self._cached_sizes() or self._file())):
            sizes = self._prepare(allow_download=False)
            return FactorGrid(FACTOR_NAMES, sizes, NpySource(self.cache))
        if self.source == "auto":
            log.info(f"data: dSprites: {FILENAME} is not in {self.data_dir} or {self.folder}: the images are drawn "
                     f"procedurally (the same factor grid, approximate sprites; data.source=file downloads the "
                     f"real file)")
        return FactorGrid(FACTOR_NAMES, FACTOR_SIZES, SpriteRenderer())
