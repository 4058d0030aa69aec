"""A training step that the loggers do not record waits for the device nowhere: no host-device sync.

On a GPU each sync (``.item()``, ``float(t)``, ``if t:``, ``.cpu()``, ``.tolist()`` ...) stops the host from
queueing the next kernels until the device has caught up. On the CPU there is no device to wait for, so
the test counts the Python calls that would wait: each of them is patched to record where it was called
while the unlogged steps of a real run (train.py's callbacks, the csv logger, the MNIST DataModule) go
by. Where CUDA exists the same run is also made under ``torch.cuda.set_sync_debug_mode("error")``, which
catches the syncs made inside PyTorch's C++ too.
"""

import collections
import traceback

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_run
from vae_lightning import VAE
from vae_lightning.callbacks import PER_BATCH_HOOKS, Checkpoints, ProgressBar, QuietCallback, SeedEveryStep

#: Calls that make the host wait for the device (on a GPU).
TENSOR_SYNCS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")
TORCH_SYNCS = ("equal", "allclose", "is_nonzero", "nonzero")


class SyncCounter(L.Callback):
    """Counts the syncing calls made in training steps ``steps``: each from the start of its batch to the
    start of the next (so every hook of the step, Lightning's bookkeeping after it and the fetching of the
    next batch are inside)."""

    def __init__(self, steps: set[int], monkeypatch, cuda: bool = False):
        self.steps, self.cuda = steps, cuda
        self.active = False
        self.counted = 0
        self.calls: collections.Counter = collections.Counter()
        for owner, names in ((torch.Tensor, TENSOR_SYNCS), (torch, TORCH_SYNCS)):
            for name in names:
                monkeypatch.setattr(owner, name, self._counting(f"{owner.__name__}.{name}", getattr(owner, name)))

    def _counting(self, name, original):
        def counted(*args, **kwargs):
            if self.active:
                where = "".join(traceback.format_stack(limit=4)[:-1])
                self.calls[f"{name} from\n{where}"] += 1
            return original(*args, **kwargs)

        return counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._switch(batch_idx in self.steps)
        self.counted += self.active

    def on_train_end(self, trainer, pl_module):
        self._switch(False)

    def _switch(self, on: bool) -> None:
        if self.cuda and on != self.active:
            torch.cuda.set_sync_debug_mode("error" if on else "default")
        self.active = on


def _run_unlogged_steps(tmp_path, fake_mnist, monkeypatch, *overrides, device="cpu"):
    """Train one epoch of 10 steps as train.py would (default callbacks, csv logger), the loggers recording
    every 4th step (steps 3 and 7, and the epoch's last, 9): count the syncs in the steps that are neither,
    before the first logged step (1, 2) and after one (4, 5, 6, 8: what Lightning keeps of a logged step
    must not be read back from the device at every later step)."""
    cfg = compose_run("logger=csv", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
                      "data.val_size=100", "data.batch_size=50", "model.latent_dim=2", "model.encoder.hidden_dims=[16]",
                      "trainer.max_epochs=1", "trainer.log_every_n_steps=4", "callbacks.image_logger=null",
                      *(["trainer=gpu"] if device == "cuda" else []), *overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = VAE.from_config(OmegaConf.to_container(cfg, resolve=True), datamodule.input_shape)
    counter = SyncCounter({1, 2, 4, 5, 6, 8}, monkeypatch=monkeypatch, cuda=device == "cuda")
    callbacks = [counter, *(hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None)]
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    trainer.fit(model, datamodule=datamodule)
    assert counter.counted == 6 and trainer.global_step == 10
    return counter.calls


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.mark.parametrize("device", DEVICES)
def test_an_unlogged_training_step_makes_no_host_device_sync(fake_mnist, tmp_path, monkeypatch, device):
    calls = _run_unlogged_steps(tmp_path, fake_mnist, monkeypatch, device=device)
    assert not calls, "syncs in unlogged training steps:\n" + "\n".join(f"{n}x {w}" for w, n in calls.items())


def test_the_counter_sees_a_sync_put_back_into_the_step(fake_mnist, tmp_path, monkeypatch):
    """The test above can fail: one .item() in the training step is counted, once per counted step."""
    step = VAE.training_step

    def training_step_with_a_sync(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        loss.item()
        return loss

    monkeypatch.setattr(VAE, "training_step", training_step_with_a_sync)
    calls = _run_unlogged_steps(tmp_path, fake_mnist, monkeypatch)
    assert sum(calls.values()) == 6 and all(w.startswith("Tensor.item") for w in calls)


def test_quiet_callbacks_leave_lightning_only_the_per_batch_hooks_they_use():
    class UsesOne(QuietCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pass

    assert callable(UsesOne.on_train_batch_end) and UsesOne.on_train_start is not None  # (not a per-batch hook)
    assert all(getattr(UsesOne, h) is None for h in PER_BATCH_HOOKS if h != "on_train_batch_end")
    assert [h for h in PER_BATCH_HOOKS if callable(getattr(SeedEveryStep, h))] == ["on_train_batch_end"]
    assert callable(ProgressBar.on_train_batch_end) and ProgressBar.on_before_backward is None
    assert callable(L.Callback.on_before_backward)  # Lightning's own classes are left as they are


def test_checkpoints_is_model_checkpoint_without_per_batch_hooks_and_with_its_state_key(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    for settings in ({"monitor": "val/elbo", "mode": "max", "save_last": True}, {"every_n_train_steps": 10}):
        ours, theirs = Checkpoints(dirpath=tmp_path, **settings), ModelCheckpoint(dirpath=tmp_path, **settings)
        assert ours.state_key == theirs.state_key  # the checkpoints of either resume with the other
        per_batch = [h for h in PER_BATCH_HOOKS if callable(getattr(ours, h))]
        assert per_batch == ([] if "monitor" in settings else ["on_train_batch_end"])
