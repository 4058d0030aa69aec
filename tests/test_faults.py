"""Faults lose nothing: NaN/Inf stop with the term named, atomic checkpoints, SIGTERM and resume, wandb fallback."""

import csv
import json
import os
import signal
import subprocess
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import PYTHON, ROOT, compose_config, compose_run, make_vae
from vae_lightning import VAE
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import VAEUserError
from vae_lightning.faults import AtomicCheckpointIO, NonFiniteError, NonFiniteGuard
from vae_lightning.run import train


def _trainer(tmp_path, guard=None, **kwargs):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, monitor="val/elbo", mode="max")
    return L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, callbacks=[ckpt, guard or NonFiniteGuard()],
                     plugins=[AtomicCheckpointIO()], **kwargs)


SMALL = ("model.latent_dim=2", "model.encoder.hidden_dims=[16]")


class NaNAtStep(VAE):
    """A VAE whose reconstruction term turns NaN at one training step."""

    bad_step = -1

    def forward(self, x, **kwargs):
        terms = super().forward(x, **kwargs)
        if self.training and self.global_step == self.bad_step:
            terms.recon = terms.recon * float("nan")
            terms.loss = terms.loss * float("nan")
        return terms


def test_nan_in_the_loss_stops_naming_the_step_and_term_and_keeps_the_last_good_checkpoint(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)  # 5 steps per epoch
    model = NaNAtStep.from_config(compose_config(*SMALL), (1, 28, 28))
    model.bad_step = 7
    with pytest.raises(NonFiniteError) as err:
        _trainer(tmp_path).fit(model, dm)
    message = str(err.value)
    assert "the loss is not finite at step 7 (epoch 1): the recon term" in message and "recon=nan" in message
    assert "model.optimizer.lr" in message and "model.likelihood.min_sigma" in message  # keys that exist
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(last) in message
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 5  # the end of epoch 0, saved before the fault
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


class InfGradient(VAE):
    def on_after_backward(self):
        if self.global_step == 2:
            self.decoder.net[0].weight.grad[0, 0] = float("inf")


def test_inf_in_a_gradient_stops_naming_the_step_and_at_every_step_the_parameter(fake_mnist, tmp_path):
    """Read later (the default), the fault is named by its step; read every step, by its parameter too."""
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    with pytest.raises(NonFiniteError, match=r"a gradient is not finite at step 2 \(epoch 0\), the loss terms are "
                                             r"finite \(callbacks\.non_finite_guard\.every_n_steps=1 names"):
        _trainer(tmp_path).fit(InfGradient.from_config(compose_config(*SMALL), (1, 28, 28)), dm)
    trainer = _trainer(tmp_path / "every", NonFiniteGuard(every_n_steps=1))
    with pytest.raises(NonFiniteError, match=r"the gradient of decoder\.net\.0\.weight is not finite at step 2"):
        trainer.fit(InfGradient.from_config(compose_config(*SMALL), (1, 28, 28)), dm)


def test_fp16_loss_scaling_overflows_are_left_to_the_grad_scaler(fake_mnist, tmp_path):
    from lightning.pytorch.plugins.precision import MixedPrecision
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    # A huge initial scale: the first steps overflow, the scaler skips them and halves the scale.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**124)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[NonFiniteGuard()], plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
                        default_root_dir=tmp_path)
    trainer.fit(make_vae(*SMALL), dm)
    assert trainer.global_step == 3 and scaler.get_scale() < 2.0**124


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

    def killed_midway(obj, f, *args, **kwargs):
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt  # as if the process were stopped during the write

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "a temporary file was left behind"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as a plain open() would make it


_compose = compose_run


def test_wandb_that_cannot_start_falls_back_to_csv(fake_mnist, tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _compose("logger=wandb", "callbacks=none", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
                   "trainer.max_epochs=1", "data.val_size=100", "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=2")
    metrics = train(cfg)
    assert metrics["epochs"] == 1
    assert any("logger wandb failed to start" in r.message and "No space left" in r.message for r in caplog.records)
    assert list(tmp_path.glob("csv/version_*/metrics.csv"))


def _start(args, env, cwd):
    return subprocess.Popen([PYTHON, str(ROOT / "train.py"), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_mid_epoch_saves_and_resume_ends_like_an_uninterrupted_run(fake_mnist, train_env, tmp_path):
    env = dict(train_env, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    common = ["logger=csv", f"data.data_dir={fake_mnist}", "data.val_size=100", "data.batch_size=50",
              "trainer.max_epochs=3", "callbacks.rich_progress_bar=null", "seed=1", "trainer.log_every_n_steps=1",
              "+callbacks.record._target_=helpers.RecordTraining"]

    def record(name):
        return f"+callbacks.record.prefix={tmp_path / name}"

    reference = _start([*common, record("reference"), f"hydra.run.dir={tmp_path / 'reference'}"], env, tmp_path)
    marker = tmp_path / "step"
    run_dir = tmp_path / "run"
    slow = ["+callbacks.slow._target_=helpers.SlowDownAndMark", f"+callbacks.slow.marker={marker}"]
    killed = _start([*common, record("killed"), *slow, f"hydra.run.dir={run_dir}"], env, tmp_path)
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text() and int(marker.read_text()) >= 14):
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached step 14"
        time.sleep(0.02)
    killed.send_signal(signal.SIGTERM)  # at step 14, where the run waits: mid-way through epoch 2 (10 steps an epoch)
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == 0, err[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    step = saved["global_step"]
    assert step == 14 and saved["epoch"] == 1
    assert not (run_dir / "metrics.json").exists()

    # The same run directory resumes by itself (ckpt_path=auto).
    resumed = _start([*common, record("resumed"), f"hydra.run.dir={run_dir}"], env, tmp_path)
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-3000:]
    _, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err[-3000:]
    done, ref = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, tmp_path / "reference"))
    assert done["steps"] == ref["steps"] == 30 and done["epochs"] == ref["epochs"] == 3

    # It trained from the saved step on, not again from the start: its batches and logged steps.
    batches = [json.loads(line) for line in (tmp_path / "resumed.batches.jsonl").read_text().splitlines()]
    reference_batches = [json.loads(line) for line in (tmp_path / "reference.batches.jsonl").read_text().splitlines()]
    assert batches == reference_batches[step:]  # the rest of epoch 2 in its own order, then epoch 3
    with open(run_dir / "csv" / "version_1" / "metrics.csv") as f:
        assert min(int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")) == step
    # From the saved optimiser state ...
    restored = torch.load(tmp_path / "resumed.start.pt", weights_only=True)
    state = saved["optimizer_states"][0]["state"]
    assert all(torch.equal(state[i]["exp_avg"], restored[i]["exp_avg"]) for i in state)
    # ... to the uninterrupted run's weights, exactly: each batch's noise has a seed of its own
    # (callbacks.SeedEveryStep), so the rest of the interrupted epoch draws what it drew before.
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert done["test/elbo"] == ref["test/elbo"]


def test_auto_resume_takes_the_newest_of_last_and_a_slurm_hpc_checkpoint(tmp_path):
    from vae_lightning.run import _resume_path
    assert _resume_path("auto", tmp_path) is None  # a fresh run directory starts afresh
    (tmp_path / "checkpoints").mkdir()
    last, hpc = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    last.write_bytes(b"")
    assert _resume_path("auto", tmp_path) == str(last)
    hpc.write_bytes(b"")
    os.utime(last, (1, 1))
    assert _resume_path("auto", tmp_path) == str(hpc)
    assert _resume_path(None, tmp_path) is None
    with pytest.raises(VAEUserError, match="ckpt_path=/no/such.ckpt does not exist"):
        _resume_path("/no/such.ckpt", tmp_path)


def test_bernoulli_on_intensities_warns(fake_mnist, tmp_path, caplog):
    cfg = _compose("logger=none", "callbacks=none", "data.binarize=none", f"paths.data_dir={fake_mnist}",
                   f"paths.output_dir={tmp_path}", "trainer.max_epochs=1", "data.val_size=100", "test=false",
                   "+trainer.enable_progress_bar=false")
    train(cfg)
    assert any("A likelihood over binary data (model.likelihood: Bernoulli) on data.binarize=none" in r.getMessage()
               for r in caplog.records)


def test_binary_data_stored_as_0_255_needs_no_binarisation_warning(caplog):
    from conftest import compose_config
    from vae_lightning.checks import warn_likelihood_for_data

    warn_likelihood_for_data(compose_config("data=dsprites"), 1)  # dSprites: binary as stored
    assert not any("A likelihood over binary data" in r.getMessage() for r in caplog.records)
    warn_likelihood_for_data(compose_config("data.binarize=none"), 1)  # MNIST intensities
    assert any("Use data.binarize=dynamic" in r.getMessage() for r in caplog.records)


def test_the_advice_for_a_bernoulli_likelihood_on_colour_data_works_for_colour(caplog):
    from conftest import compose_config
    from vae_lightning.checks import warn_likelihood_for_data

    # data.binarize is refused for colour: the advice names the 8-bit likelihoods instead.
    warn_likelihood_for_data(compose_config("+experiment=cifar10", "model/likelihood=bernoulli"), 3)
    (message,) = [r.getMessage() for r in caplog.records if "A likelihood over binary data" in r.getMessage()]
    assert "model/likelihood=discretized_logistic" in message and "binarize=dynamic" not in message


@pytest.mark.slow
def test_compile_true_trains_the_compiled_model(fake_mnist, tmp_path):
    cfg = _compose("logger=none", "callbacks=none", "compile=true", f"paths.data_dir={fake_mnist}",
                   f"paths.output_dir={tmp_path}", "trainer.max_epochs=1", "data.val_size=100",
                   "data.batch_size=100", "++callbacks.image_logger.every_n_epochs=0")
    metrics = train(cfg)
    assert metrics["test/elbo"] < 0 and metrics["steps"] == 5


def test_compile_without_a_compiler_is_one_clear_error(fake_mnist, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    cfg = _compose("logger=none", "callbacks=none", "compile=true", f"paths.data_dir={fake_mnist}",
                   f"paths.output_dir={tmp_path}", "data.val_size=100")
    with pytest.raises(VAEUserError, match=r"compile=true on the CPU needs a C\+\+ compiler"):
        train(cfg)


def test_the_epoch_line_of_a_run_resumed_mid_epoch_counts_from_the_resume(fake_mnist, tmp_path, caplog):
    import logging
    import re

    from vae_lightning.callbacks import EpochSummary

    class StopMidEpoch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 7:  # 5 steps an epoch: batch 2 of epoch 1
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                trainer.should_stop = True

    def fit(callbacks, ckpt_path=None):
        dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
        trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp_path)
        trainer.fit(make_vae(*SMALL), dm, ckpt_path=ckpt_path)

    fit([StopMidEpoch()])
    caplog.set_level(logging.INFO, logger="vae_lightning")
    start = time.perf_counter()
    fit([EpochSummary()], ckpt_path=tmp_path / "mid.ckpt")
    wall = time.perf_counter() - start
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/2")]
    seconds = float(re.search(r"\(([\d.]+) s", line).group(1))
    assert "since the resume" in line
    assert 0 <= seconds <= wall + 0.1  # not the time since the process (or the machine) started


def test_an_8bit_likelihood_on_binarised_data_warns(caplog):
    from conftest import compose_run
    from vae_lightning.checks import warn_likelihood_for_data

    with caplog.at_level("WARNING", logger="vae_lightning"):
        warn_likelihood_for_data(compose_run("model/likelihood=discretized_logistic", "paths.data_dir=/x",
                                             "paths.output_dir=/x"), 1)
        assert any("An 8-bit likelihood (model.likelihood: DiscretizedLogistic) on binarised data "
                   "(data.binarize=dynamic)" in r.getMessage() for r in caplog.records)
        caplog.clear()
        warn_likelihood_for_data(compose_run("model/likelihood=discretized_logistic", "data.binarize=none",
                                             "paths.data_dir=/x", "paths.output_dir=/x"), 1)
        assert not caplog.records


def _fit_with_a_nan_at_step_7(tmp_path, fake_mnist, guard, *overrides, extra=()):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)  # 5 steps per epoch
    model = NaNAtStep.from_config(compose_config(*SMALL, *overrides), (1, 28, 28))
    model.bad_step = 7
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[ckpt, guard, *extra], plugins=[AtomicCheckpointIO()])
    with pytest.raises(NonFiniteError) as err:
        trainer.fit(model, dm)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 5 and all(torch.isfinite(v).all() for v in state["state_dict"].values())
    return str(err.value), model


def test_a_guard_reading_every_n_steps_names_the_faulty_step_skips_its_update_and_saves_nothing_after_it(
        fake_mnist, tmp_path):
    """Read every 10 steps, a NaN at step 7 is reported at step 10 as the fault of step 7; the fused Adam
    skipped that step's update and every one after it (the weights stay those before step 7, finite), and
    the checkpoint at the end of epoch 1 (step 10) is never written: the one of epoch 0 stays the last good one."""
    before_fault = {}

    class KeepTheWeightsBeforeStep7(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 7:
                before_fault.update({n: p.detach().clone() for n, p in pl_module.named_parameters()})

    message, model = _fit_with_a_nan_at_step_7(tmp_path, fake_mnist, NonFiniteGuard(every_n_steps=10),
                                               extra=[KeepTheWeightsBeforeStep7()])
    assert "the loss is not finite at step 7 (epoch 1): the recon term (recon=nan" in message
    assert "Found at step 10" in message and "the updates from step 7 on were skipped" in message
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the faulty update never landed
    for name, p in model.named_parameters():  # nor any after it: the weights are those before step 7
        torch.testing.assert_close(p.detach(), before_fault[name], rtol=0, atol=0, msg=name)
    assert not hasattr(model.trainer.optimizers[0], "found_inf")  # the optimiser is given back as it was


def test_with_an_optimiser_that_cannot_skip_a_step_the_fault_is_still_named_and_never_saved(fake_mnist, tmp_path):
    message, model = _fit_with_a_nan_at_step_7(tmp_path, fake_mnist, NonFiniteGuard(every_n_steps=10),
                                               "model/optimizer=sgd")
    assert "the loss is not finite at step 7 (epoch 1): the recon term" in message
    assert "the update of step 7 and those after it were applied" in message
    assert not all(torch.isfinite(p).all() for p in model.parameters())  # SGD applied the NaN update


def test_weights_made_non_finite_outside_any_step_are_never_saved(fake_mnist, tmp_path):
    """A fault no step shows (a weight written directly) is caught by the check of the weights before a save."""

    class Corrupt(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    pl_module.decoder.net[0].weight[0, 0] = float("nan")

    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[ckpt, Corrupt(), NonFiniteGuard()],
                        plugins=[AtomicCheckpointIO()])
    with pytest.raises(NonFiniteError, match=r"the weights are not finite at step 10 \(epoch 1, checked every 50 "
                                             r"steps\), as a checkpoint was to be saved"):
        trainer.fit(make_vae(*SMALL), dm)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


def test_the_guard_reads_its_checks_at_the_logging_interval_by_default():
    from types import SimpleNamespace

    guard = NonFiniteGuard()
    for device, every, expected in (("cpu", 50, 50), ("cuda", 50, 50), ("cpu", 1, 1), ("cpu", 10**9, 1000)):
        guard.on_fit_start(SimpleNamespace(log_every_n_steps=every, strategy=SimpleNamespace(
            root_device=torch.device(device))), None)
        assert guard._every == expected
    assert NonFiniteGuard(every_n_steps=1)._every == 1
    with pytest.raises(VAEUserError, match=r"every_n_steps='often' must be an integer"):
        NonFiniteGuard("often")


def test_matmul_precision_is_applied_and_a_bad_one_is_one_clear_error(fake_mnist, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", seen.append)  # the process's setting is left alone
    cfg = _compose("logger=none", "callbacks=none", "matmul_precision=high", f"paths.data_dir={fake_mnist}",
                   f"paths.output_dir={tmp_path}", "trainer.max_epochs=1", "data.val_size=100",
                   "data.batch_size=100", "trainer.limit_train_batches=1", "test=false")
    train(cfg)
    assert seen == ["high"]
    cfg = _compose("logger=none", "callbacks=none", "matmul_precision=tf32", f"paths.data_dir={fake_mnist}",
                   f"paths.output_dir={tmp_path / 'bad'}")
    with pytest.raises(VAEUserError, match=r"^matmul_precision='tf32' but it must be one of highest, high, medium\.$"):
        train(cfg)
    assert seen == ["high"]  # refused before anything was built


@pytest.mark.parametrize("max_epochs, epoch, shown", [(1, 0, "Epoch 1/1"), (10, 4, "Epoch 5/10"), (-1, 2, "Epoch 3"),
                                                      (None, 0, "Epoch 1")])
def test_the_progress_bar_counts_epochs_as_the_log_line_does(max_epochs, epoch, shown):
    from types import SimpleNamespace

    from vae_lightning.callbacks import ProgressBar

    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)
    assert bar._get_train_description(epoch).strip() == shown


def test_the_start_of_a_run_shows_the_parts_and_their_sizes_and_no_bookkeeping(monkeypatch):
    import rich
    from rich.console import Console

    from vae_lightning.callbacks import PartsSummary
    from vae_lightning.module import VAE  # noqa: F401 - the module whose summary this is

    from conftest import make_vae
    from lightning.pytorch.utilities.model_summary import summarize

    console = Console(record=True, width=120)
    monkeypatch.setattr(rich, "get_console", lambda: console)
    summary = summarize(make_vae("model.latent_dim=4", "model.encoder.hidden_dims=[16]"), max_depth=1)
    PartsSummary.summarize(summary._get_summary_data(), summary.total_parameters, summary.trainable_parameters,
                           summary.model_size, summary.total_training_modes, summary.total_flops)
    text = console.export_text()
    for part in ("encoder", "decoder", "posterior", "prior", "likelihood", "objective"):
        assert part in text
    for noise in ("val_activity", "test_nll", "epoch_means", "FLOPs", "Mode"):
        assert noise not in text
    assert "trainable parameters" in text


def test_lines_that_ask_nothing_of_a_user_stay_off_the_console():
    # The console handler's filter (conf/hydra/default.yaml); the run's log file keeps every line.
    # tests/test_readme.py checks the first screen of a real run.
    import logging

    from vae_lightning.console import WANDB_LOG, ConsoleFilter

    def shown(name, message, level=logging.INFO):
        return ConsoleFilter().filter(logging.LogRecord(name, level, __file__, 0, message, None, None))

    lightning = "lightning.pytorch.utilities.rank_zero"
    for line in ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                 "Loading `train_dataloader` to estimate number of stepping batches.",
                 "`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.",
                 "Trainer already configured with model summary callbacks: [PartsSummary]. Skipping setting a "
                 "default `ModelSummary` callback."):
        assert not shown(lightning, line), line
    assert shown(lightning, "Restoring states from the checkpoint path at outputs/run/checkpoints/last.ckpt")
    # wandb's own lines: only warnings and the link to an online run
    assert not shown(WANDB_LOG, "wandb: Tracking run with wandb version 0.31.0")
    assert shown(WANDB_LOG, "wandb: 🚀 View run at https://wandb.ai/me/vae-lightning/runs/abc")
    assert shown(WANDB_LOG, "wandb: WARNING Path /x wasn't writable, using system temp directory.", logging.WARNING)
    assert not shown(WANDB_LOG, "wandb: WARNING The anonymous setting has no effect and will be removed in a "
                                "future version.", logging.WARNING)
    assert shown("vae_lightning.run", "run directory outputs/2026-01-02/03-04-05 (checkpoints, ...); seed 42")


def test_a_backend_without_the_fused_check_raises_the_same_flag(fake_mnist, tmp_path, monkeypatch):
    """Where torch has no fused non-finite check for the device, the guard checks tensor by tensor: the same
    fault, the same step, the same skipped update."""
    def missing(*args, **kwargs):
        raise NotImplementedError("no kernel for this backend")

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", missing)
    message, model = _fit_with_a_nan_at_step_7(tmp_path, fake_mnist, NonFiniteGuard(every_n_steps=10))
    assert "the loss is not finite at step 7 (epoch 1): the recon term (recon=nan" in message
    assert "the updates from step 7 on were skipped" in message
    assert all(torch.isfinite(p).all() for p in model.parameters())
