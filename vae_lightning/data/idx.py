"""Reading and writing IDX files, the format of MNIST (and Fashion-MNIST).

An IDX file is: two zero bytes, a type byte, a byte giving the number of
dimensions n, n big-endian uint32 sizes, then the values in big-endian
row-major order. Files ending in ``.gz`` are gunzipped on the fly.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

# type byte -> numpy dtype (big-endian, as stored)
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike, official: tuple[int, str] | None = None) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) into a tensor of its stored shape and type.

    Raises DataError naming the file when it is not IDX, or is truncated or too long.
    ``official``: (size, MD5) of the published uncompressed contents; a file of that
    size must have that MD5 (a file of another size is some other data set, e.g. a
    subset of one's own, and is only checked for structure).
    """
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile and a truncated .gz
        raise DataError(f"Cannot read {path}: {e}. Delete the file so that it is downloaded again, "
                        f"or replace it with a good copy.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad header {raw[:4].hex() or 'empty'}). "
                        f"Replace it with the original file.")
    if official is not None and len(raw) == official[0]:
        digest = hashlib.md5(raw).hexdigest()
        if digest != official[1]:
            raise DataError(f"{path} is corrupt: the MD5 of its contents is {digest}, not the official {official[1]}. "
                            f"Delete it so that it is downloaded again, or replace it with a good copy.")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (its header is incomplete). Replace it with a good copy.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: {len(raw)} bytes where shape {list(shape)} needs "
                        f"{expected}. Delete it so that it is downloaded again, or replace it.")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike, tensor: torch.Tensor | np.ndarray) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(tensor)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}.")
    big = array.astype(native.newbyteorder(">"), copy=False)
    payload = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += big.tobytes()
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(payload)
