"""Callbacks of our own (the rest come from Lightning)."""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

log = logging.getLogger("vae_lightning")


class EpochSummary(L.Callback):
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
        self._resumed = trainer.global_step > 0

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


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar without the logger's version number (``v_num``)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
