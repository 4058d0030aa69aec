"""Data with known generative factors: each image made from F discrete factors (shape, scale, ...).

Labels elsewhere are one integer per image; here each image has a row of factor values
``[F]`` (int64, factor ``i`` in ``0 .. factor_sizes[i] - 1``), and the data can be asked for
images *by* factors: the grid the disentanglement metrics sample from (as disentanglement_lib
does), and batches with one factor held fixed.

- :class:`KnownFactors` is the contract metrics, callbacks and plots are written against.
- :class:`FactorGrid` is the common case: one image per combination of factor values, stored in
  C (row-major) order, so an image's row is ``ravel_multi_index(factors, sizes)``
  (dSprites and 3D Shapes are laid out so).
- :class:`FactorDataModule` serves such data as an :class:`ImageDataModule`: batches ``(x, y)``
  with y the factor values ``[B, F]``, ``ground_truth`` the whole grid, ``factor_batch``.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from .base import ImageDataModule, ImageSet
from .sources import ImageSource


class KnownFactors:
    """Images that come from known discrete factors.

    Subclasses set ``factor_names``, ``factor_sizes`` and ``image_shape`` and implement
    :meth:`images_from_factors`; sampling is the same for all.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    # -- sampling factors ---------------------------------------------------------------
    def sample_factors(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` rows of factor values drawn uniformly over the grid: int64 [num, F]."""
        num = _count(num)
        return torch.stack([torch.randint(size, (num,), generator=generator) for size in self.factor_sizes], dim=1)

    def sample_with_fixed_factor(self, num: int, factor: int, generator: torch.Generator,
                                 value: int | None = None) -> torch.Tensor:
        """int64 [num, F]: every row shares factor ``factor``'s value (``value``, or one drawn uniformly
        when None); the other factors are drawn uniformly per row."""
        factor = self.factor_index(factor)
        size = self.factor_sizes[factor]
        factors = self.sample_factors(num, generator)
        if value is None:
            value = int(torch.randint(size, (1,), generator=generator))
        elif not _is_int(value) or not 0 <= value < size:
            raise ValueError(f"value={value!r} is not a value of factor {factor} ({self.factor_names[factor]}), "
                             f"which takes 0 .. {size - 1}")
        factors[:, factor] = int(value)
        return factors

    def sample(self, num: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` images drawn uniformly over the grid: (uint8 [num, C, H, W], factors int64 [num, F])."""
        factors = self.sample_factors(num, generator)
        return self.images_from_factors(factors), factors

    # -- images -------------------------------------------------------------------------
    def images_from_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """The images of ``factors`` (int64 [n, F]): uint8 [n, C, H, W], values 0..255."""
        raise NotImplementedError

    # -- checks -------------------------------------------------------------------------
    def factor_index(self, factor: Any) -> int:
        """``factor`` as an index in 0 .. F - 1 (a factor's name is accepted too)."""
        if isinstance(factor, str):
            if factor not in self.factor_names:
                raise ValueError(f"factor {factor!r} is not one of this data's factors {list(self.factor_names)}")
            return self.factor_names.index(factor)
        if not _is_int(factor) or not 0 <= factor < self.num_factors:
            raise ValueError(f"factor={factor!r} is not a factor index: this data has {self.num_factors} factors "
                             f"(0 .. {self.num_factors - 1}: {', '.join(self.factor_names)})")
        return int(factor)

    def check_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """``factors`` as int64 [n, F] on the CPU, every value in its factor's range; else a ValueError
        naming the factor and the value."""
        if not isinstance(factors, torch.Tensor):
            factors = torch.as_tensor(factors)
        if factors.dtype.is_floating_point or factors.dtype == torch.bool or factors.dtype.is_complex:
            raise ValueError(f"factors must be integers (int64 [n, {self.num_factors}]), got {factors.dtype}")
        if factors.dim() != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must be [n, {self.num_factors}] ({', '.join(self.factor_names)}), "
                             f"got shape {list(factors.shape)}")
        factors = factors.to(device="cpu", dtype=torch.long)
        if len(factors):
            sizes = torch.tensor(self.factor_sizes)
            bad = (factors < 0) | (factors >= sizes)
            if bad.any():
                row, col = (int(i) for i in bad.nonzero()[0])
                raise ValueError(f"factor {col} ({self.factor_names[col]}) = {int(factors[row, col])} in row {row} "
                                 f"is out of range: it takes 0 .. {self.factor_sizes[col] - 1}")
        return factors


class FactorGrid(KnownFactors, ImageSource):
    """One image per combination of factor values, in C order: row ``r`` of ``images`` shows the
    factors ``unravel_index(r, factor_sizes)``. Both a :class:`KnownFactors` and an
    :class:`ImageSource` (its rows are the grid's)."""

    def __init__(self, factor_names: Sequence[str], factor_sizes: Sequence[int], images: ImageSource):
        if len(factor_names) != len(factor_sizes) or not factor_sizes:
            raise ValueError(f"one name per factor: got names {list(factor_names)} and sizes {list(factor_sizes)}")
        if not all(_is_int(s) and s >= 1 for s in factor_sizes):
            raise ValueError(f"factor sizes must be integers >= 1, got {list(factor_sizes)}")
        if len(images) != math.prod(factor_sizes):
            raise ValueError(f"a grid of sizes {list(factor_sizes)} has {math.prod(factor_sizes)} images, but the "
                             f"source holds {len(images)}")
        self.factor_names = tuple(str(n) for n in factor_names)
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        self.images = images
        self.shape = self.image_shape = tuple(images.shape)
        # C-order strides: the row of factors f is sum_i f_i * strides_i.
        self._strides = torch.tensor([math.prod(self.factor_sizes[i + 1:]) for i in range(len(self.factor_sizes))])

    # -- rows <-> factors ---------------------------------------------------------------
    def rows_of(self, factors: torch.Tensor) -> torch.Tensor:
        """ravel_multi_index: int64 [n, F] -> rows int64 [n]."""
        return (self.check_factors(factors) * self._strides).sum(dim=1)

    def factors_of(self, rows: torch.Tensor) -> torch.Tensor:
        """unravel_index: rows int64 [n] -> int64 [n, F]."""
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        if rows.dim() != 1:
            raise ValueError(f"rows must be 1-D, got shape {list(rows.shape)}")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"rows must lie in 0 .. {len(self) - 1}, got {int(rows.min())} .. {int(rows.max())}")
        return rows[:, None] // self._strides % torch.tensor(self.factor_sizes)

    def all_factors(self) -> torch.Tensor:
        """The factors of every row, in row order: int64 [N, F]."""
        return self.factors_of(torch.arange(len(self)))

    # -- images -------------------------------------------------------------------------
    def __len__(self) -> int:
        return math.prod(self.factor_sizes)

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        return self.images.read(rows)

    def images_from_factors(self, factors: torch.Tensor) -> torch.Tensor:
        return self.images.read(self.rows_of(factors))

    def __repr__(self) -> str:
        grid = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"{type(self).__name__}({grid}; {len(self)} images of {'x'.join(map(str, self.shape))})"


class FactorDataModule(ImageDataModule):
    """An :class:`ImageDataModule` over a :class:`FactorGrid`: batches ``(x, y)`` with y the factor
    values int64 [B, F] (in place of class labels; ``num_classes`` stays None).

    The grid minus ``val_size`` validation and ``test_size`` test images (counts or fractions, picked
    with ``split_seed``) trains; :attr:`ground_truth` is the whole grid, which the disentanglement
    metrics sample from (as disentanglement_lib does: those scores are about the representation of
    every combination, not about generalisation to held-out images); :meth:`factor_batch` draws
    images that share one factor value.

    Subclasses implement :meth:`factor_grid`. Factor data is not binarised by default (dSprites is
    already 0/255); ``hflip`` is refused, since a mirrored image no longer shows its factors.
    """

    #: The factors replace labels: scatter plots coloured by class do not apply.
    num_classes = None

    def __init__(self, data_dir: str | os.PathLike | None = None, val_size: int | float = 5000,
                 test_size: int | float = 10000, binarize: str = "none", hflip: bool = False, **kwargs: Any):
        super().__init__(data_dir, val_size=val_size, test_size=test_size, binarize=binarize, hflip=hflip, **kwargs)
        if hflip:
            raise ConfigError("data.hflip", hflip, f"does not apply to {self.name or 'factor data'}: a mirrored image "
                                                   f"no longer shows its factors (position, orientation)")
        self._grid: FactorGrid | None = None

    # -- what a subclass provides ---------------------------------------------------------
    def factor_grid(self) -> FactorGrid:
        """The whole grid (read from disk or generated), called once."""
        raise NotImplementedError

    # -- the grid -----------------------------------------------------------------------
    @property
    def ground_truth(self) -> FactorGrid:
        """Every image of the data by its factors: what the disentanglement metrics sample from."""
        if self._grid is None:
            self._grid = self.factor_grid()
        return self._grid

    def load(self) -> dict[str, ImageSet | None]:
        grid = self.ground_truth
        return {"train": ImageSet(grid, grid.all_factors()), "val": None, "test": None}

    def factor_batch(self, factor: int | str, num: int, generator: torch.Generator,
                     value: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` images sharing factor ``factor``'s value (``value``, or one drawn uniformly), the other
        factors drawn uniformly: (x float in [0, 1] [num, C, H, W], factors int64 [num, F]), on the CPU."""
        grid = self.ground_truth
        factors = grid.sample_with_fixed_factor(num, grid.factor_index(factor), generator, value)
        return grid.images_from_factors(factors).float() / 255.0, factors


def _is_int(value: Any) -> bool:
    """An integer (Python, NumPy, or a 0-dim integer tensor), not a bool."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.dtype.is_floating_point and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _count(num: Any) -> int:
    if not _is_int(num) or num < 0:
        raise ValueError(f"num={num!r} must be a number of samples (an integer >= 0)")
    return int(num)
