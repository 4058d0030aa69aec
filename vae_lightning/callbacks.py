"""Callbacks of our own (the rest come from Lightning)."""

from __future__ import annotations

import logging
import os
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, RichProgressBar

from .steps import batches_done_this_epoch, batches_seen

log = logging.getLogger("vae_lightning")

#: The callback hooks Lightning calls once per batch. It calls each of them on every callback, through
#: ``lightning.pytorch.trainer.call._call_callback_hooks``: about 1.5 us of its Python a call (a profiler
#: context, the callback's ``state_key``) even for a hook that does nothing, so 6 callbacks x 6 hooks
#: cost about 50 us a training step. It skips a hook that is not callable.
PER_BATCH_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
                   "on_before_zero_grad", "on_train_batch_end", "on_validation_batch_start",
                   "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start",
                   "on_predict_batch_end")


class QuietCallback(L.Callback):
    """A callback that Lightning calls per batch only for the per-batch hooks it implements.

    A subclass's per-batch hooks (:data:`PER_BATCH_HOOKS`) that are still Lightning's empty defaults are
    set to None on the class, and Lightning skips a hook that is not callable. A subclass that
    implements one simply defines it (and does not call ``super()`` for a hook left at None)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in PER_BATCH_HOOKS:
            if getattr(cls, name, None) is getattr(L.Callback, name):
                setattr(cls, name, None)


def _mix(*values: int, state: int = 0) -> int:
    """A well-spread 63-bit seed from a few integers (splitmix64 over each in turn, from ``state``: the
    unmasked result of an earlier call, so that ``_mix(a, b) == _mix(b, state=_mix_state(a))``)."""
    return _mix_state(*values, state=state) & 0x7FFFFFFFFFFFFFFF


def _mix_state(*values: int, state: int = 0) -> int:
    x = state
    for value in values:
        x = (x ^ (value & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


class SeedEveryStep(QuietCallback):
    """Each training batch draws its randomness (the dynamic binarisation, the reparameterisation noise,
    dropout) from a seed of its own, a function of the run's seed, the process's rank, the epoch and
    the batch; each validation and test from one of (seed, rank, epoch, phase, step).

    So a resumed run, at an epoch boundary or mid-epoch after SIGTERM, draws exactly the noise the
    uninterrupted run drew, and on a deterministic device ends with the same weights (with the tensor
    loader, the same batch size and number of processes, and accumulate_grad_batches=1 for a stop in
    the middle of an epoch). The seed for a batch is set when the one before it ends (a batch is
    binarised before any hook of its own), and set again after a validation in the middle of an epoch.
    ``seed``: the run's seed (``null``: the one ``seed_everything`` chose, ``PL_GLOBAL_SEED``).
    On a CPU the generator keeps 32 bits of the seed: two batches of a long run may, rarely, share
    their noise (about a 5% chance over the 21,500 steps of the MNIST preset), which does no harm.
    """

    VALIDATION, TEST = -1, -2

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._next_batch: tuple[int, int] | None = None  # the (epoch, batch) whose seed is set for training
        self._generators: list[torch.Generator] | None = None  # the generators the run draws from
        # ((rank, epoch), its mixed state, the seed of each of its batches)
        self._epoch_state: tuple[tuple[int, int], int, list[int]] | None = None

    def seed_for(self, rank: int, epoch: int, where: int, step: int = 0) -> int:
        """The seed of one batch (``where`` >= 0) or one evaluation (VALIDATION, TEST, at ``step``)."""
        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", "0"))
        return _mix(seed, rank, epoch, where, step)

    def _set(self, trainer: L.Trainer, seed: int) -> None:
        # The generators in use only: torch.manual_seed (every backend) costs ~85 us, these ~1 us each.
        # Host-side state only: seeding a CUDA generator queues nothing and waits for nothing.
        if self._generators is None:
            self._generators = [torch.default_generator]
            device = trainer.strategy.root_device
            if device.type == "cuda":
                index = device.index if device.index is not None else torch.cuda.current_device()
                self._generators.append(torch.cuda.default_generators[index])
            elif device.type != "cpu":
                self._generators = []  # another backend: torch.manual_seed below
        for generator in self._generators:
            generator.manual_seed(seed)
        if not self._generators:
            torch.manual_seed(seed)

    def _train(self, trainer: L.Trainer, epoch: int, batch: int) -> None:
        """Seed the generators for training batch ``batch`` of ``epoch``. The epoch's seeds are mixed at its
        start, all at once (about 2 us each), so a batch only looks its seed up."""
        key = (trainer.global_rank, epoch)
        if self._epoch_state is None or self._epoch_state[0] != key:
            seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", "0"))
            state = _mix_state(seed, *key)
            batches = trainer.num_training_batches
            # (inf for an iterable without a length; past 2^16 batches, the rest are mixed one by one)
            count = min(batches + 1, 1 << 16) if isinstance(batches, int) else 0
            self._epoch_state = (key, state, [_mix(b, 0, state=state) for b in range(count)])
        self._next_batch = (epoch, batch)
        seeds = self._epoch_state[2]
        self._set(trainer, seeds[batch] if batch < len(seeds) else _mix(batch, 0, state=self._epoch_state[1]))

    def _set_batch(self, trainer: L.Trainer, batch: int) -> None:
        """The training batch ``batch`` of the epoch in course (the hot path: one lookup, one seeding)."""
        seeds = self._epoch_state[2]
        if batch >= len(seeds):
            self._train(trainer, trainer.current_epoch, batch)
            return
        self._next_batch = (self._epoch_state[0][1], batch)
        for generator in self._generators:
            generator.manual_seed(seeds[batch])
        if not self._generators:
            torch.manual_seed(seeds[batch])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._generators, self._epoch_state = None, None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = batches_done_this_epoch(trainer)  # > 0 when resumed mid-epoch
        if done >= trainer.num_training_batches:  # resumed at the very end of an epoch
            self._train(trainer, trainer.current_epoch + 1, 0)
        else:
            self._train(trainer, trainer.current_epoch, done)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train(trainer, trainer.current_epoch, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        self._set_batch(trainer, batch_idx + 1)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(trainer, self.seed_for(trainer.global_rank, trainer.current_epoch, self.VALIDATION,
                                         batches_seen(trainer)))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation in the middle of an epoch (val_check_interval < 1): the next batch draws from its own
        # seed again, not from what the validation left.
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._next_batch is not None:
            self._set(trainer, self.seed_for(trainer.global_rank, *self._next_batch))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set(trainer, self.seed_for(trainer.global_rank, trainer.current_epoch, self.TEST, batches_seen(trainer)))


class EpochSummary(QuietCallback):
    """One log line per epoch with the bound's terms and the epoch's wall time.

    The rich progress bar only draws on a terminal; this line also reaches log
    files, batch jobs and the run's ``train.log``.
    """

    KEYS = ("val/elbo", "val/recon", "val/kl", "val/iwae", "val/active_units")

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._resumed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch starts with no on_train_epoch_start: its first line counts from here.
        self._start = time.perf_counter()
        self._resumed = batches_seen(trainer) > 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._resumed = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start  # training and this epoch's validation
        metrics = trainer.callback_metrics
        values = "  ".join(f"{k}={float(metrics[k]):.2f}" for k in self.KEYS if k in metrics)
        if trainer.is_global_zero:
            of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
            since = " since the resume" if self._resumed else ""
            log.info(f"epoch {trainer.current_epoch + 1}{of}  {values}  ({seconds:.1f} s{since})")


class Checkpoints(ModelCheckpoint, QuietCallback):
    """Lightning's ModelCheckpoint, the same in every setting and in its checkpoints, without its per-batch
    cost when it saves by epoch or validation only (``every_n_train_steps`` and ``train_time_interval``
    unset, as in conf/callbacks/default.yaml): its ``on_train_batch_end`` then does nothing, and Lightning
    is not asked to call it. Its ``state_key`` (which Lightning formats on every hook call it makes, a
    ``repr`` of five settings) is computed once, and is ModelCheckpoint's: the checkpoints of either resume
    with the other."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._state_key = "ModelCheckpoint" + super().state_key[len(type(self).__qualname__):]
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            self.on_train_batch_end = None  # Lightning skips a hook that is not callable

    @property
    def state_key(self) -> str:
        return self._state_key


class ProgressBar(RichProgressBar, QuietCallback):
    """Lightning's rich progress bar without the logger's version number (``v_num``), counting epochs from 1
    as the epoch log line does ("Epoch 1/1" for a one-epoch run, not "Epoch 0/0"; "Epoch 1" when only
    ``max_steps`` or ``max_time`` bounds the run, not "Epoch 0/-2").

    The training bar and its metrics are brought up to date at most every ``update_every`` seconds (and
    at an epoch's last batch), not after every batch: rich's update and the metrics' dictionary cost
    tens of microseconds a batch, as much as a small model's step. The VAE's training values come from its
    ``train_progress`` (plain floats, read at the logged steps)."""

    def __init__(self, *args, update_every: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.update_every = update_every
        self._updated = float("-inf")
        self._batches = float("inf")  # the epoch's training batches

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._batches = trainer.num_training_batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._updated < self.update_every and batch_idx + 1 < self._batches:
            return
        self._updated = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
        return f"{text:{len(self.validation_description)}}"  # padded as Lightning does: no flicker

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        # The VAE keeps its bar values out of Lightning's progress-bar metrics (read back every step, a sync)
        # and gives them here as floats, read at the logged steps.
        return {**getattr(pl_module, "train_progress", {}), **items}


class PartsSummary(ModelSummary, QuietCallback):
    """The model's parts and their sizes, one small table before the first epoch: what a user reads there.
    Left out: the module's bookkeeping (its metrics: ``val_activity``, ``test_nll``, ``epoch_means``, which
    hold no weights) and Lightning's mode and FLOPs columns (zeros unless FLOPs are measured)."""

    BOOKKEEPING = ("val_activity", "test_nll", "epoch_means")

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs) -> None:
        from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        table = Table(header_style="bold magenta")
        table.add_column("Part")
        table.add_column("Type")
        table.add_column("Params", justify="right")
        for name, kind, params in zip(columns["Name"], columns["Type"], columns["Params"]):
            if name.split(".")[0] not in PartsSummary.BOOKKEEPING:
                table.add_row(name, kind, params)
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(f"{get_human_readable_count(trainable_parameters)} trainable parameters"
                      + (f", {get_human_readable_count(frozen)} frozen" if frozen else "")
                      + f" ({get_formatted_model_size(model_size)} MB)")
