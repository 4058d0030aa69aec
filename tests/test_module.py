"""The LightningModule: shapes, logging contract, parts injected, checkpoint round trip."""

import functools
import math
import re

import lightning as L
import pytest
import torch

from conftest import make_vae
from vae_lightning import VAE, load_model
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import VAEUserError
from vae_lightning.likelihoods import Bernoulli
from vae_lightning.nets import MLPDecoder, MLPEncoder
from vae_lightning.objectives import ELBO
from vae_lightning.posteriors import DiagonalGaussianPosterior
from vae_lightning.priors import StandardNormal

SMALL = ("model.latent_dim=4", "model.encoder.hidden_dims=[16]")


def test_forward_gives_per_example_terms():
    model = make_vae(*SMALL, "objective.num_samples=3", "objective.beta=2.0")
    x = torch.bernoulli(torch.rand(5, 1, 28, 28))
    terms = model(x)
    for t in (terms.recon, terms.kl, terms.elbo, terms.loss, terms.iwae):
        assert t.shape == (5,)
    torch.testing.assert_close(terms.loss, terms.recon + 2.0 * terms.kl)
    # An untrained Bernoulli decoder gives ~log 2 nats per pixel.
    assert 300 < terms.recon.mean() < 900


def test_reconstruct_and_sample_shapes_and_ranges():
    model = make_vae(*SMALL)
    assert model.sample(7).shape == (7, 1, 28, 28)
    rec = model.reconstruct(torch.rand(3, 1, 28, 28))
    assert rec.shape == (3, 1, 28, 28) and rec.min() >= 0 and rec.max() <= 1


def test_parts_are_built_from_their_config_groups():
    model = make_vae("model/likelihood=gaussian", "model.likelihood.sigma=0.3", "model.latent_dim=2",
                     "model.encoder.hidden_dims=[8, 4]", "model/optimizer=sgd", "model/lr_scheduler=cosine")
    assert model.likelihood.sigma == 0.3 and isinstance(model.prior, StandardNormal)
    assert [m.out_features for m in model.decoder.net if hasattr(m, "out_features")] == [4, 8, 784]  # mirrored
    assert model.make_optimizer.func is torch.optim.SGD and model.kl_estimator == "analytic"


def test_a_vae_is_composed_of_parts_built_in_python():
    posterior, likelihood = DiagonalGaussianPosterior(latent_dim=3), Bernoulli()
    model = VAE(encoder=MLPEncoder((1, 28, 28), posterior.num_params, hidden_dims=[16]),
                decoder=MLPDecoder(3, likelihood.param_shape((1, 28, 28)), hidden_dims=[16]),
                posterior=posterior, prior=StandardNormal(3), likelihood=likelihood, objective=ELBO(num_samples=2),
                optimizer=functools.partial(torch.optim.Adam, lr=1e-2), input_shape=(1, 28, 28))
    assert model(torch.rand(4, 1, 28, 28)).elbo.shape == (4,)
    # Parts that do not fit are named before anything trains.
    with pytest.raises(VAEUserError, match=r"encoder \(model.encoder\) outputs \[8\] numbers per example"):
        VAE(encoder=MLPEncoder((1, 28, 28), 8, hidden_dims=[16]), decoder=model.decoder, posterior=posterior,
            prior=StandardNormal(3), likelihood=likelihood, objective=ELBO())
    with pytest.raises(VAEUserError, match=r"decoder \(model.decoder\) outputs \[2, 28, 28\] per example but the likelihood"):
        VAE(encoder=model.encoder, decoder=MLPDecoder(3, (2, 28, 28), hidden_dims=[16]), posterior=posterior,
            prior=StandardNormal(3), likelihood=likelihood, objective=ELBO())
    with pytest.raises(VAEUserError, match="prior is over 5 dimensions but the posterior over 3"):
        VAE(encoder=model.encoder, decoder=model.decoder, posterior=posterior, prior=StandardNormal(5),
            likelihood=likelihood, objective=ELBO())


@pytest.mark.parametrize("overrides, key", [
    (["objective.beta=-1.0"], "objective.beta"),
    (["objective.num_samples=0"], "objective.num_samples"),
    (["model.latent_dim=0"], "model.latent_dim"),
    (["model.optimizer.lr=-1.0"], "model.optimizer"),
    (["model.encoder.activation=swishy"], "model.encoder.activation"),
    (["model/likelihood=gaussian", "model.likelihood.sigma=0"], "model.likelihood.sigma=0 must be > 0"),
    (["model/likelihood=gaussian_learned", "model.likelihood.min_sigma=2.0"], "model.likelihood.sigma"),
    (["model/prior=mixture_of_gaussians", "model.prior.num_components=0"], "model.prior.num_components"),
    (["model/prior=mixture_of_gaussians", "model.prior.init_scale=0"], "model.prior.init_scale=0 must be > 0"),
    (["model.decoder.hidden_dims=[]"], "model.decoder.hidden_dims"),
    (["model/prior=mixture_of_gaussians", "model.prior.learnable=no"], "model.prior.learnable='no' must be true or false"),
    (["model.prior._target_=custom_parts.LearnedDiagonalPrior", "+model.prior.init_scale=0"],
     "model.prior.init_scale=0 must be > 0."),
    (["model.prior._target_=vae_lightning.priors.nope.Bar"], "model.prior (vae_lightning.priors.nope.Bar) cannot be "
                                                             "built: ImportError"),
    (["+model.latnet_dim=8"], "model.latnet_dim=8 is not a setting of the model (VAE)"),
    (["+model.encoder.hiden_dims=[3]"], "model.encoder (vae_lightning.nets.MLPEncoder) cannot be built: TypeError"),
])
def test_bad_part_settings_name_the_config_key(overrides, key):
    with pytest.raises(VAEUserError, match=re.escape(key)) as err:
        make_vae(*overrides)
    assert "\n" not in str(err.value)  # one line


def test_checkpoint_round_trip_rebuilds_the_model_from_the_checkpoint_alone(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae("model.latent_dim=3", "model.encoder.hidden_dims=[32]", "objective.num_samples=2",
                     "objective.beta=0.5", "model/likelihood=gaussian_learned_per_pixel")
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = load_model(tmp_path / "m.ckpt")  # weights_only=True inside: plain values only
    assert loaded.objective.beta == 0.5 and loaded.objective.num_samples == 2
    assert type(loaded.likelihood) is type(model.likelihood) and loaded.likelihood.raw_sigma.shape == (1, 28, 28)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x))
    torch.testing.assert_close(loaded.likelihood.sigma, model.likelihood.sigma)
    # Overrides change the rebuilt config: K for evaluation, say.
    assert load_model(tmp_path / "m.ckpt", {"objective.num_samples": 7}).objective.num_samples == 7
    with pytest.raises(VAEUserError, match="objective .*unexpected keyword argument 'num_sample'"):
        load_model(tmp_path / "m.ckpt", {"objective.num_sample": 7})
    with pytest.raises(VAEUserError, match="no 'objektive' to override 'objektive.num_samples' in"):
        load_model(tmp_path / "m.ckpt", {"objektive.num_samples": 7})
    with pytest.raises(TypeError, match="overrides="):
        VAE.load_from_checkpoint(tmp_path / "m.ckpt", num_samples=7)
    assert VAE.load_from_checkpoint(tmp_path / "m.ckpt").objective.beta == 0.5
    # Logged names are the public contract.
    assert {"train/recon", "train/kl", "train/elbo", "train/loss", "train/beta",
            "val/recon", "val/kl", "val/elbo"} <= set(trainer.logged_metrics)


def test_a_checkpoint_without_a_config_or_damaged_is_one_clear_error(tmp_path):
    posterior, likelihood = DiagonalGaussianPosterior(latent_dim=2), Bernoulli()
    by_hand = VAE(encoder=MLPEncoder((1, 28, 28), 4, hidden_dims=[8]), decoder=MLPDecoder(2, (1, 28, 28), [8]),
                  posterior=posterior, prior=StandardNormal(2), likelihood=likelihood, objective=ELBO())
    torch.save({"state_dict": by_hand.state_dict(), "hyper_parameters": dict(by_hand.hparams)}, tmp_path / "h.ckpt")
    with pytest.raises(VAEUserError, match="does not describe its model"):
        load_model(tmp_path / "h.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(VAEUserError, match="cannot be read as a checkpoint.*damaged"):
        load_model(tmp_path / "bad.ckpt")


def test_integer_images_are_refused_with_what_to_do():
    with pytest.raises(TypeError, match=r"float images in \[0, 1\], got torch.uint8.*x / 255"):
        make_vae(*SMALL)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_cosine_schedule_decays_the_learning_rate_to_zero(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae("model.latent_dim=2", "model.encoder.hidden_dims=[8]", "model.optimizer.lr=0.01",
                     "model/lr_scheduler=cosine")
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 10
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_any_torch_scheduler_is_one_override_away(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae(*SMALL, "model.optimizer.lr=0.01", "+model.lr_scheduler._target_=torch.optim.lr_scheduler.StepLR",
                     "+model.lr_scheduler._partial_=true", "+model.lr_scheduler.step_size=1",
                     "+model.lr_scheduler.gamma=0.5")
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**3)  # stepped every epoch


@pytest.mark.parametrize("precision, dtype, parts", [
    ("64-true", torch.float64, []),
    ("bf16-true", torch.bfloat16, []),
    ("bf16-true", torch.bfloat16, ["model/posterior=full_covariance", "model/prior=mixture_of_gaussians",
                                   "objective=iwae", "objective.num_samples=2", "eval.nll_samples=3"]),
])
def test_true_precision_casts_the_data_to_the_weights(fake_mnist, tmp_path, precision, dtype, parts):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae("model.latent_dim=2", "model.encoder.hidden_dims=[8]", *parts)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert model.dtype == dtype and torch.isfinite(trainer.callback_metrics["val/elbo"])
    if parts:  # the test NLL too, through every part in bf16
        (results,) = trainer.test(model, dm, verbose=False)
        assert math.isfinite(results["test/nll"])


@pytest.mark.filterwarnings("ignore:The number of training batches")
def test_an_epoch_shorter_than_the_logging_interval_still_logs_the_train_terms(fake_mnist, tmp_path):
    from lightning.pytorch.loggers import CSVLogger
    import csv

    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, log_every_n_steps=50, limit_val_batches=1,
                        logger=CSVLogger(tmp_path, name="csv"), enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(make_vae(*SMALL, "objective.num_samples=2"), dm)
    (path,) = tmp_path.glob("csv/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(open(path)) if r.get("train/kl")]
    assert [int(r["step"]) for r in rows] == [2, 5]  # each epoch's last step (3 steps an epoch)
    for r in rows:
        recon, kl = float(r["train/recon"]), float(r["train/kl"])
        assert float(r["train/elbo"]) == pytest.approx(-(recon + kl)) and float(r["train/iwae"]) < 0
        assert float(r["train/loss"]) == pytest.approx(recon + kl) and float(r["train/beta"]) == 1.0
