"""An objective with parameters and an optimiser of its own (FactorVAE's discriminator): two optimiser steps
per batch, one count of batches that everything reads, both optimisers checkpointed, gradients that stay
apart, clipping and the NaN guard by hand, DDP."""

import csv
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from conftest import ROOT, compose_run, make_vae
from test_train import run_train
from vae_lightning import load_model
from vae_lightning.callbacks import SeedEveryStep
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import VAEUserError
from vae_lightning.faults import NonFiniteError, NonFiniteGuard
from vae_lightning.run import train
from vae_lightning.steps import planned_batches

FACTOR = ("objective=factor_vae", "objective.hidden_dims=[32,32]")
SMALL = ("model.latent_dim=3", "model.encoder.hidden_dims=[32]")
BATCHES_PER_EPOCH = 10  # 500 training images of the made data, batches of 50


def _run(run_dir, fake_mnist, *overrides):
    cfg = compose_run(
        "logger=csv", f"paths.data_dir={fake_mnist}", f"paths.output_dir={run_dir}", "seed=3", "data.val_size=100",
        "data.batch_size=50", *FACTOR, *SMALL, "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
        "callbacks.image_logger.every_n_epochs=0", "+trainer.enable_progress_bar=false",
        "+callbacks.counts._target_=helpers.RecordCounts", f"+callbacks.counts.path={run_dir / 'counts.jsonl'}",
        *overrides)
    return train(cfg)


def _counts(run_dir):
    return [json.loads(line) for line in (run_dir / "counts.jsonl").read_text().splitlines()]


def test_global_step_counts_both_optimisers_but_everything_follows_the_batches(fake_mnist, tmp_path):
    run_dir = tmp_path / "run"
    metrics = _run(run_dir, fake_mnist, "trainer.max_epochs=2", "trainer.log_every_n_steps=3",
                   "objective.beta=4", "objective.kl_schedule=linear", "objective.warmup_steps=25",
                   "trainer.gradient_clip_val=1.0")
    # Lightning counts every optimiser step: two per batch. The batches seen (the VAE's updates) are half.
    counts = _counts(run_dir)
    assert len(counts) == 2 * BATCHES_PER_EPOCH and metrics["steps"] == 2 * BATCHES_PER_EPOCH
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4 * BATCHES_PER_EPOCH
    seeds = SeedEveryStep(seed=3)
    for i, (epoch, batch, global_step, seen, module_seen, seed) in enumerate(counts):
        assert (epoch, batch) == divmod(i, BATCHES_PER_EPOCH)
        assert global_step == 2 * i and seen == module_seen == i
        assert seed == seeds.seed_for(0, epoch, batch)  # each batch's noise from its own seed
    # The loggers record every 3 batches; beta warms up over 25 batches, not 25 optimiser steps.
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [s for s in range(2 * BATCHES_PER_EPOCH) if (s + 1) % 3 == 0]
    for r in rows:
        assert float(r["train/beta"]) == pytest.approx(4 * int(r["step"]) / 25)
        assert 0 <= float(r["train/d_acc"]) <= 1 and float(r["train/d_loss"]) > 0 and r["train/tc"]
    assert {"test/tc", "test/d_loss", "test/d_acc"} <= set(metrics)


def test_max_steps_counts_training_batches(fake_mnist, tmp_path):
    run_dir = tmp_path / "run"
    metrics = _run(run_dir, fake_mnist, "trainer.max_epochs=5", "+trainer.max_steps=7", "model/lr_scheduler=cosine",
                   "test=false")
    assert metrics["steps"] == 7 and len(_counts(run_dir)) == 7


def test_the_lr_schedule_counts_batches():
    """Lightning's estimate counts optimiser steps against max_steps: brought back to batches."""
    factor, elbo = SimpleNamespace(optimizer_steps_per_batch=2), SimpleNamespace()

    def trainer(module, estimate, max_steps):
        return SimpleNamespace(lightning_module=module, estimated_stepping_batches=estimate, max_steps=max_steps)

    assert planned_batches(trainer(factor, 30, -1)) == 30  # max_epochs * batches per epoch
    assert planned_batches(trainer(factor, 14, 14)) == 7  # +trainer.max_steps=7, given to Lightning as 14
    assert planned_batches(trainer(factor, 30, 100)) == 30  # the epochs end first
    assert planned_batches(trainer(elbo, 14, 14)) == 14


def test_the_checkpoint_holds_the_discriminator_and_both_optimisers(fake_mnist, tmp_path):
    run_dir = tmp_path / "run"
    _run(run_dir, fake_mnist, "trainer.max_epochs=1", "test=false")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    own = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("objective.discriminator.")}
    assert len(own) == 6  # three linear layers: [3 -> 32 -> 32 -> 2]
    vae_state, own_state = (s["state"] for s in checkpoint["optimizer_states"])
    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert len(own_state) == 6 and len(vae_state) == sum(1 for n, _ in model.named_parameters()
                                                          if not n.startswith("objective."))
    assert all(s["step"] == BATCHES_PER_EPOCH for s in [*vae_state.values(), *own_state.values()])
    for key, value in own.items():  # and the rebuilt model has the discriminator's trained weights
        assert torch.equal(model.state_dict()[key], value)


def test_the_vae_optimiser_holds_no_parameter_of_the_objective():
    model = make_vae(*FACTOR, *SMALL)
    assert not model.automatic_optimization and model.optimizer_steps_per_batch == 2
    vae_optimizer, own_optimizer = model.configure_optimizers()
    in_vae = {id(p) for group in vae_optimizer.param_groups for p in group["params"]}
    in_own = {id(p) for group in own_optimizer.param_groups for p in group["params"]}
    assert in_own == {id(p) for p in model.objective.parameters()} and not in_vae & in_own
    assert in_vae | in_own == {id(p) for p in model.parameters()}
    assert own_optimizer.defaults["betas"] == (0.5, 0.9) and own_optimizer.defaults["lr"] == 1e-4  # the paper's
    # An objective without an optimiser leaves the automatic path as it was.
    elbo = make_vae(*SMALL)
    assert elbo.automatic_optimization and elbo.optimizer_steps_per_batch == 1


def test_each_loss_reaches_only_its_own_parameters():
    model = make_vae(*FACTOR, *SMALL)
    terms, own_loss, logs = model._two_losses(torch.rand(8, 1, 28, 28), with_iwae=False)
    vae_parameters = [p for n, p in model.named_parameters() if not n.startswith("objective.")]
    own_parameters = list(model.objective.parameters())
    assert all(p.requires_grad for p in own_parameters)  # given back after the VAE's forward
    loss = terms.loss.mean()
    assert all(g is None for g in torch.autograd.grad(loss, own_parameters, allow_unused=True, retain_graph=True))
    assert all(g is None for g in torch.autograd.grad(own_loss, vae_parameters, allow_unused=True, retain_graph=True))
    # ... and each reaches its own: the encoder through tc, the discriminator through d_loss.
    assert all(g is not None for g in torch.autograd.grad(own_loss, own_parameters, retain_graph=True))
    assert model.encoder.net[0].weight in {p for p, g in zip(vae_parameters, torch.autograd.grad(
        terms.extras["tc"].mean(), vae_parameters, allow_unused=True)) if g is not None}
    assert set(logs) == {"d_loss", "d_acc"}


class _RecordGradientNorms(L.Callback):
    """The norm of the gradients each optimiser stepped with (clipped ones included), after each batch."""

    def __init__(self):
        self.norms = {0: [], 1: []}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for i, optimizer in enumerate(trainer.optimizers):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms[i].append(float(torch.nn.utils.get_total_norm(grads)))


def _trainer(tmp_path, *callbacks, **kwargs):
    return L.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                     callbacks=list(callbacks), **kwargs)


def test_gradient_clipping_applies_to_the_vae_by_hand(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae(*FACTOR, *SMALL)
    model.gradient_clip_val = 1e-3
    record = _RecordGradientNorms()
    _trainer(tmp_path, record, limit_train_batches=3).fit(model, dm)
    assert len(record.norms[0]) == len(record.norms[1]) == 3
    assert all(norm <= 1e-3 * (1 + 1e-4) for norm in record.norms[0])
    assert all(norm > 1e-3 for norm in record.norms[1])  # the discriminator's own gradients are not clipped


def test_the_nan_guard_names_the_batch_and_the_objectives_own_loss(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae(*FACTOR, *SMALL)
    own_loss = model.objective.own_loss

    def nan_at_batch_3():
        loss, logs = own_loss()
        return (loss * float("nan"), logs) if model.batches_seen == 3 else (loss, logs)

    model.objective.own_loss = nan_at_batch_3
    # Read at once (every_n_steps=1): the stop comes before batch 3's updates. (By default the guard reads its
    # checks later and the faulty updates are skipped instead: tests/test_faults.py.)
    with pytest.raises(NonFiniteError, match=r"the loss is not finite at step 3 \(epoch 0\): the own_loss term"):
        _trainer(tmp_path, NonFiniteGuard(every_n_steps=1)).fit(model, dm)
    assert model.global_step == 6  # the two steps of each of batches 0, 1 and 2


def test_settings_that_cannot_work_with_two_optimisers_are_refused(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    from lightning.pytorch.plugins.precision import MixedPrecision

    fp16 = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))  # one loss scale for two optimisers
    with pytest.raises(VAEUserError, match=r"trainer.precision=16-mixed .* use trainer.precision=bf16-mixed"):
        _trainer(tmp_path, plugins=[fp16], limit_train_batches=1).fit(make_vae(*FACTOR, *SMALL), dm)
    cfg = compose_run(f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path / 'run'}", "data.val_size=100",
                      "logger=none", *FACTOR, *SMALL, "+trainer.accumulate_grad_batches=2")
    with pytest.raises(VAEUserError, match=r"trainer.accumulate_grad_batches=2: FactorVAE"):
        train(cfg)


def test_factor_vae_trains_under_ddp_on_two_processes(fake_mnist, train_env, tmp_path):
    """Two gloo processes, two batches each: one backward pass a batch, so DDP reduces every gradient once,
    the discriminator's included, and the processes end with the same weights."""
    run_dir = tmp_path / "ddp"
    train_env = {**train_env, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    result = run_train(["trainer=ddp_cpu", "logger=none", f"data.data_dir={fake_mnist}", "data.val_size=100",
                        "data.batch_size=50", *FACTOR, *SMALL, "+trainer.max_steps=2", "trainer.max_epochs=1",
                        "callbacks.rich_progress_bar=null", "test=false", f"hydra.run.dir={run_dir}",
                        "+callbacks.sums._target_=helpers.RecordParameterSums",
                        f"+callbacks.sums.prefix={run_dir / 'sums'}"], train_env, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((run_dir / f"sums.rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["global_step"] == 4 and r["batches_seen"] == 2 for r in ranks)
    assert ranks[0]["sums"] == ranks[1]["sums"]
    assert any(name.startswith("objective.discriminator.") for name in ranks[0]["sums"])
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 2
