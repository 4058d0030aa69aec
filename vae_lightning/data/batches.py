"""Batches of in-memory tensors taken by slicing: no per-example Python, no collate."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch


class EpochOrder:
    """The example order of one epoch on one process.

    Shuffled: a permutation drawn from ``seed + epoch`` (the same on every process), padded by
    wrapping around to a multiple of ``world_size`` and dealt out rank by rank, as
    ``DistributedSampler`` does: every process takes the same number of steps, and all of them
    together see every example each epoch. Not shuffled (evaluation): each process takes a
    contiguous share, without padding, so epoch means over all processes are exact.

    Lightning calls ``set_epoch`` at the start of every epoch (it is the loader's ``sampler``).
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.size / self.world_size)
        start, stop = self.span()
        return stop - start

    def span(self) -> tuple[int, int]:
        """This process's contiguous share [start, stop) when not shuffled."""
        per_rank, extra = divmod(self.size, self.world_size)
        start = self.rank * per_rank + min(self.rank, extra)
        return start, start + per_rank + (self.rank < extra)

    def indices(self) -> torch.Tensor:
        """This process's example indices for the current epoch (shuffled only)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        total = len(self) * self.world_size
        if total > self.size:  # wrap around so every process gets len(self) examples
            order = torch.cat([order, order[: total - self.size]])
        return order[self.rank : total : self.world_size]


class TensorBatches:
    """An iterable of batches ``tuple(t[idx] for t in tensors)`` over tensors of equal length.

    A shuffled epoch costs one ``randperm`` and one gather per batch; an unshuffled one hands
    out views. Tensors may live on any device (on the GPU, batches never cross the bus).
    Works wherever a DataLoader does in Lightning: it has a length and a ``sampler`` with
    ``set_epoch``; under DDP each process gets its own share (see :class:`EpochOrder`).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 skip_batches: Callable[[], int] | None = None):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs tensors of one length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = tuple(tensors)
        self.batch_size, self.drop_last = batch_size, drop_last
        self.sampler = EpochOrder(len(tensors[0]), shuffle, seed, rank, world_size)
        # Lightning reads a loader's batch_sampler as it would a DataLoader's (to warn about shuffled
        # evaluation loaders); there is none: batches come whole. pyproject pins the Lightning range tested.
        self.batch_sampler = None
        # Asked when an epoch's first batch is taken: how many of its batches were already trained
        # on (a run resumed mid-epoch), so the epoch goes on with the same order where it stopped.
        self.skip_batches = skip_batches

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints by Lightning. The position needs no saving (it is Lightning's own
        progress counter, see ``skip_batches``); the order's seed and sharding are checked."""
        return {"seed": self.sampler.seed, "world_size": self.sampler.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        now = self.state_dict()
        if state != now:
            import warnings

            warnings.warn(f"Resuming with a different data order ({state} in the checkpoint, {now} now): the "
                          f"interrupted epoch goes on with this run's order.", stacklevel=2)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        size, stop = self.batch_size, len(self) * self.batch_size
        skip = (self.skip_batches() if self.skip_batches is not None else 0) * size
        if self.sampler.shuffle:
            order = self.sampler.indices().to(self.tensors[0].device)
            for i in range(skip, min(stop, len(order)), size):
                index = order[i : i + size]
                yield tuple(t[index] for t in self.tensors)
        else:
            start, end = self.sampler.span()
            for i in range(start + skip, min(start + stop, end), size):
                yield tuple(t[i : min(i + size, end)] for t in self.tensors)
