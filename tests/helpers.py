"""Callbacks the tests plug into real train.py runs (via `+callbacks.NAME._target_=helpers.X`)."""

import json
import time
from pathlib import Path

import lightning as L

from vae_lightning.steps import batches_seen


class SlowDownAndMark(L.Callback):
    """Write the global step to a file after each training batch and, from step ``wait_at`` on, wait
    there (up to a minute) until the run receives SIGTERM: a test can signal the run at a known point
    mid-epoch however busy the machine is."""

    def __init__(self, marker: str, wait_at: int = 14):
        self.marker, self.wait_at = Path(marker), wait_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + 60
        while trainer.global_step >= self.wait_at and not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.01)


class RecordTraining(L.Callback):
    """What a run starts from and what it trains on, for the resume tests: at the start of training
    <prefix>.start.json (step, epoch, lr, beta, the scheduler's position) and <prefix>.start.pt (the
    VAE optimiser's state; <prefix>.start.own.pt the objective's, when it has one), and one line per
    training batch in <prefix>.batches.jsonl (epoch, batch index, labels, the step: batches seen)."""

    def __init__(self, prefix: str):
        self.prefix = Path(prefix)

    def on_train_start(self, trainer, pl_module):
        import json

        import torch

        optimizer = trainer.optimizers[0]
        scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        start = {"step": batches_seen(trainer), "epoch": trainer.current_epoch,
                 "lr": optimizer.param_groups[0]["lr"], "beta": pl_module.objective.beta_at(batches_seen(trainer)),
                 "scheduler_last_epoch": scheduler.last_epoch if scheduler is not None else None}
        self.prefix.with_suffix(".start.json").write_text(json.dumps(start))
        torch.save(optimizer.state_dict()["state"], self.prefix.with_suffix(".start.pt"))
        if len(trainer.optimizers) > 1:
            torch.save(trainer.optimizers[1].state_dict()["state"], self.prefix.with_suffix(".start.own.pt"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import json

        with open(self.prefix.with_suffix(".batches.jsonl"), "a") as f:
            f.write(json.dumps([trainer.current_epoch, batch_idx, batch[1].tolist(), batches_seen(trainer)]) + "\n")


class StopAfterEpochs(L.Callback):
    """Stop after ``epochs`` epochs, as a pre-emption at an epoch boundary would: the run keeps its own
    max_epochs (and so its schedules), last.ckpt holds the end of that epoch."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class StopAfterSteps(L.Callback):
    """Stop once ``steps`` training batches are done (after the checkpoints saved at that point)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_validation_end(self, trainer, pl_module):
        if batches_seen(trainer) >= self.steps:
            trainer.should_stop = True


class RecordDevices(L.Callback):
    """Writes where the first training batch, the training split and the optimiser live to ``path``."""

    def __init__(self, path: str):
        self.path, self.done = Path(path), False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.done:
            return
        self.done = True
        dm = trainer.datamodule
        images = getattr(dm.train_set, "images", None)
        optimizer = trainer.optimizers[0]
        self.path.write_text(json.dumps({
            "batch": str(batch[0].device), "train_images": str(images.device) if images is not None else None,
            "streaming": bool(getattr(dm, "streaming", False)),
            "optimizer_fused": bool(optimizer.defaults.get("fused")),
        }))


class RecordCounts(L.Callback):
    """One line per training batch in ``path`` (JSON): epoch, batch index, trainer.global_step, batches_seen,
    the module's own count, and the seed the batch draws its noise from."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import torch

        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.current_epoch, batch_idx, trainer.global_step, batches_seen(trainer),
                                pl_module.batches_seen, torch.initial_seed()]) + "\n")


class RecordParameterSums(L.Callback):
    """At the end of training, each process writes ``<prefix>.rank<R>.json``: the sum of every parameter (so
    a test can compare the processes of a DDP run) and the counts of steps and batches."""

    def __init__(self, prefix: str):
        self.prefix = Path(prefix)

    def on_train_end(self, trainer, pl_module):
        sums = {name: float(p.detach().double().sum()) for name, p in pl_module.named_parameters()}
        record = {"sums": sums, "global_step": trainer.global_step, "batches_seen": batches_seen(trainer)}
        Path(f"{self.prefix}.rank{trainer.global_rank}.json").write_text(json.dumps(record))
