"""Batches of in-memory tensors taken by indexing: a real ``DataLoader`` whose sampler hands out a
whole batch's indices at a time, so there is no per-example Python and no collate."""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler


class EpochOrder:
    """The example order of one epoch on one process.

    Shuffled: a permutation drawn from ``seed + epoch`` (the same on every process), padded by
    wrapping around to a multiple of ``world_size`` and dealt out rank by rank, as
    ``DistributedSampler`` does: every process takes the same number of steps, and all of them
    together see every example each epoch. Not shuffled (evaluation): each process takes a
    contiguous share, without padding, so epoch means over all processes are exact.
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


class TensorRows(Dataset):
    """Tensors of one length, read a batch at a time: ``rows[index]`` is ``tuple(t[index] for t in
    tensors)`` for an index tensor (a gather) or a slice (views, no copy)."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorBatches needs tensors of one length")
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)


class BatchOrder(DistributedSampler):
    """The batches of an epoch of :class:`EpochOrder`, each as one index: a slice of the epoch's
    permutation (shuffled; kept on ``device``, where the tensors are) or a ``slice`` of the process's
    contiguous share (not shuffled: batches are views). ``drop_last`` drops a last, partial batch.

    ``skip_batches`` is asked when an epoch's first batch is taken: how many of its batches were
    already trained on (a run resumed mid-epoch), so the epoch goes on in the same order where it
    stopped. The epoch's length stays whole (Lightning's progress counts the batches done).

    A ``DistributedSampler`` (whose items are batches, not examples), so Lightning keeps it under
    every strategy rather than injecting its own: the shares are already this process's. Lightning
    calls ``set_epoch`` at the start of every epoch.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 skip_batches: Callable[[], int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.order = EpochOrder(size, shuffle, seed, rank, world_size)  # checks rank
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        # A batch sampler's drop_last (the last partial batch), not DistributedSampler's (whose __len__
        # and __iter__ this class replaces).
        self.batch_size, self.drop_last, self.device = batch_size, drop_last, torch.device(device)
        self.skip_batches = skip_batches

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor | slice]:
        size, stop = self.batch_size, len(self) * self.batch_size
        skip = (self.skip_batches() if self.skip_batches is not None else 0) * size
        if self.order.shuffle:
            order = self.order.indices().to(self.device)
            for i in range(skip, min(stop, len(order)), size):
                yield order[i : i + size]
        else:
            start, end = self.order.span()
            for i in range(start + skip, min(start + stop, end), size):
                yield slice(i, min(i + size, end))


class ResumableLoader(DataLoader):
    """A DataLoader whose sampler has an ``order`` (:class:`EpochOrder`) and a ``batch_size``, and goes
    on where a resumed epoch stopped (the position is Lightning's own progress counter), so Lightning
    may resume it mid-epoch. Its state names the order, checked on resume."""

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints by Lightning. The position needs no saving; the order's seed and
        sharding are checked."""
        order = self.sampler.order
        return {"seed": order.seed, "world_size": order.world_size, "batch_size": self.sampler.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        now = self.state_dict()
        if state != now:
            warnings.warn(f"Resuming with a different data order ({state} in the checkpoint, {now} now): the "
                          f"interrupted epoch goes on with this run's order.", stacklevel=2)


def batch_as_is(batch):
    """collate_fn for datasets that already return a whole batch."""
    return batch


class TensorBatches(ResumableLoader):
    """Batches ``tuple(t[idx] for t in tensors)`` of tensors of equal length: a standard ``DataLoader``
    (``batch_size=None``: automatic batching off) over :class:`TensorRows`, whose sampler
    (:class:`BatchOrder`) yields one index per batch.

    A shuffled epoch costs one ``randperm`` and one gather per batch; an unshuffled one hands out
    views. Tensors may live on any device (on the GPU, batches never cross the bus). Under DDP each
    process gets its own share (see :class:`EpochOrder`).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 skip_batches: Callable[[], int] | None = None, sampler: Sampler | None = None,
                 batch_sampler: Sampler | None = None):
        # Lightning re-creates a loader from its arguments with ``sampler=SequentialSampler(dataset)``
        # and ``shuffle=False`` for ``trainer.overfit_batches``: the examples in order, which
        # ``shuffle=False`` gives. The order is never any other sampler's.
        if batch_sampler is not None or not (sampler is None or isinstance(sampler, SequentialSampler)):
            raise ValueError("TensorBatches takes its order from shuffle, seed, rank and world_size, not from a "
                             f"sampler (got {type(batch_sampler or sampler).__name__})")
        rows = TensorRows(tensors)
        order = BatchOrder(len(rows), batch_size, shuffle, drop_last, seed, rank, world_size,
                           device=rows.tensors[0].device, skip_batches=skip_batches)
        # Its own generator: a DataLoader draws a base seed for its workers from it at every epoch,
        # which would otherwise move the global random stream.
        super().__init__(rows, batch_size=None, sampler=order, collate_fn=batch_as_is,
                         generator=torch.Generator())
