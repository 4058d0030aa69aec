"""Callbacks the tests plug into real train.py runs (via `+callbacks.NAME._target_=helpers.X`)."""

import time
from pathlib import Path

import lightning as L


class SlowDownAndMark(L.Callback):
    """Sleep after each training batch, and write the global step to a file, so a test
    can send a signal to the run at a known point mid-epoch."""

    def __init__(self, marker: str, seconds: float = 0.05):
        self.marker, self.seconds = Path(marker), seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)
        self.marker.write_text(str(trainer.global_step))
