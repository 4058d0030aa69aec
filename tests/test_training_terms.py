"""What a real training run applies, read back from its logs: the KL schedule step by step, the loss as
recon + beta * kl, free bits as the formula says, IWAE warmed up with beta < 1."""

import csv

import lightning as L
import pytest
import torch

from conftest import compose_run
from vae_lightning.run import train


def _train_rows(fake_mnist, tmp_path, *overrides):
    """Every training step's logged terms of a short run (10 steps an epoch, 2 epochs)."""
    cfg = compose_run(
        "logger=csv", "callbacks=none", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
        "data.val_size=100", "data.batch_size=50", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        "+trainer.enable_progress_bar=false", "test=false", "model.latent_dim=3",
        "model.encoder.hidden_dims=[32]", *overrides)
    train(cfg)
    (path,) = tmp_path.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == list(range(20))  # every step, once
    return rows


@pytest.mark.parametrize("schedule, expected", [
    (["objective.kl_schedule=linear", "objective.warmup_steps=7"], lambda s: 2.0 * min(1.0, s / 7)),
    (["objective.kl_schedule=cyclical", "objective.cycle_steps=6", "objective.cycle_ratio=0.5"],
     lambda s: 2.0 * min(1.0, (s % 6) / 6 / 0.5)),
])
def test_the_kl_schedule_sets_beta_and_the_loss_at_every_step(schedule, expected, fake_mnist, tmp_path):
    rows = _train_rows(fake_mnist, tmp_path, "objective.beta=2", *schedule)
    for r in rows:
        step, beta = int(r["step"]), r["train/beta"]
        assert beta == pytest.approx(expected(step), abs=1e-6), step
        assert r["train/loss"] == pytest.approx(r["train/recon"] + beta * r["train/kl"], rel=1e-6), step
        assert r["train/elbo"] == pytest.approx(-(r["train/recon"] + r["train/kl"]), rel=1e-6), step
    assert {r["train/beta"] for r in rows} >= {0.0, 2.0}  # the schedule ran its course


def test_free_bits_change_the_loss_as_the_formula_says(fake_mnist, tmp_path):
    # Every dimension below a floor of 100 nats: each of the 3 contributes the floor.
    rows = _train_rows(fake_mnist, tmp_path / "floor", "objective.free_bits=100")
    for r in rows:
        assert r["train/loss"] == pytest.approx(r["train/recon"] + 3 * 100.0, rel=1e-6)
    # One group of all 3 dimensions: the batch-mean KL or the floor, whichever is larger.
    rows = _train_rows(fake_mnist, tmp_path / "group", "objective.free_bits=1.0", "objective.free_bits_group_size=3")
    for r in rows:
        assert r["train/loss"] == pytest.approx(r["train/recon"] + max(1.0, r["train/kl"]), rel=1e-6)
    assert min(r["train/kl"] for r in rows) < 1.0 < max(r["train/kl"] for r in rows)  # both sides of the floor


def test_iwae_warmed_up_with_beta_below_one_trains_on_the_warmed_bound(fake_mnist, tmp_path):
    rows = _train_rows(fake_mnist, tmp_path, "objective=iwae", "objective.num_samples=3",
                       "objective.kl_schedule=linear", "objective.warmup_steps=10")
    for r in rows:
        step, beta = int(r["step"]), r["train/beta"]
        assert beta == pytest.approx(min(1.0, step / 10), abs=1e-6)
        if beta < 1:  # log w_beta = log p(x|z) + beta log p(z)/q(z|x): another bound than the logged L_K
            assert abs(r["train/loss"] + r["train/iwae"]) > 1e-3, step
        else:  # beta = 1: the loss is minus the logged L_K
            assert r["train/loss"] == pytest.approx(-r["train/iwae"], rel=1e-6), step
    assert rows[0]["train/loss"] <= rows[0]["train/recon"]  # beta = 0: -log mean_k p(x|z_k) <= recon


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class StopAt(L.Callback):
    """Sets should_stop at the end of one training step, as max_time or a stopping rule would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step - 1 == self.step:
            trainer.should_stop = True


@pytest.mark.parametrize("stop", [8, 9])  # a step that logs nothing; the epoch's last, logged but not recorded
def test_the_logged_training_values_are_what_lightnings_self_log_writes(stop, fake_mnist, tmp_path, monkeypatch):
    """The VAE sends its training values to the loggers itself (one read of all of them per logged step, not
    Lightning's self.log per value): the same run through Lightning's self.log writes the same metrics.csv,
    every column, step and epoch (beta in float32 as self.log stores it; at a step that stops training, the
    epoch's latest values again); a checkpoint monitoring train/loss reads the same values."""
    from vae_lightning import VAE

    overrides = ("callbacks.model_checkpoint.monitor=train/loss", "callbacks.model_checkpoint.mode=min",
                 "+callbacks.model_checkpoint.every_n_train_steps=4", "callbacks.model_checkpoint.save_top_k=2",
                 "callbacks.image_logger=null", "trainer.log_every_n_steps=4", "data.batch_size=100",
                 "objective.beta=2", "objective.kl_schedule=linear", "objective.warmup_steps=7",
                 f"+callbacks.stop._target_={__name__}.StopAt", f"+callbacks.stop.step={stop}", "trainer.max_epochs=3")

    def run(where):
        cfg = compose_run("logger=csv", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path / where}",
                          "data.val_size=100", "test=false", "model.latent_dim=3",
                          "model.encoder.hidden_dims=[32]", "seed=3", *overrides)
        train(cfg)
        (path,) = (tmp_path / where).glob("csv/version_*/metrics.csv")
        return _csv(path), sorted(p.name for p in (tmp_path / where / "checkpoints").glob("*.ckpt"))

    direct, direct_ckpts = run("direct")
    monkeypatch.setattr(VAE, "_lightning_log_metrics", lambda self: None)  # Lightning's self.log, as before
    through_log, log_ckpts = run("self_log")
    train_rows = [r for r in direct if r.get("train/loss")]
    # 5 steps an epoch, every 4th step, and the step where training stops: at 8, step 7's values written again;
    # at 9 (the epoch's last), its own
    assert [int(r["step"]) for r in train_rows] == [3, 7, stop]
    assert train_rows[0]["train/beta"] == str(float(torch.tensor(2 * 3 / 7, dtype=torch.float32)))
    same = [{k: v for k, v in r.items() if k != "step"} for r in train_rows[1:]]
    assert (same[0] == same[1]) == (stop == 8)
    assert direct == through_log and direct_ckpts == log_ckpts
    assert len(direct_ckpts) == 3  # the 2 best by train/loss, and last.ckpt
