"""The LightningModule: shapes, logging contract, Python API, checkpoint round trip."""

import lightning as L
import pytest
import torch

from vae_lightning import VAE
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import VAEUserError


def test_forward_gives_per_example_terms():
    model = VAE(latent_dim=4, hidden_dims=[16], num_samples=3, beta=2.0)
    x = torch.bernoulli(torch.rand(5, 1, 28, 28))
    terms = model(x)
    for t in (terms.recon, terms.kl, terms.elbo, terms.loss):
        assert t.shape == (5,)
    torch.testing.assert_close(terms.loss, terms.recon + 2.0 * terms.kl)
    # An untrained Bernoulli decoder gives ~log 2 nats per pixel.
    assert 300 < terms.recon.mean() < 900


def test_reconstruct_and_sample_shapes_and_ranges():
    model = VAE(latent_dim=4, hidden_dims=[16])
    assert model.sample(7).shape == (7, 1, 28, 28)
    rec = model.reconstruct(torch.rand(3, 1, 28, 28))
    assert rec.shape == (3, 1, 28, 28) and rec.min() >= 0 and rec.max() <= 1


def test_gaussian_likelihood_is_built_with_its_sigma():
    model = VAE(likelihood="gaussian", sigma=0.3, hidden_dims=[8], latent_dim=2)
    assert model.likelihood.sigma == 0.3


@pytest.mark.parametrize("kwargs, key", [
    ({"beta": -1.0}, "objective.beta"),
    ({"num_samples": 0}, "objective.num_samples"),
    ({"latent_dim": 0}, "model.latent_dim"),
    ({"lr": 0.0}, "model.lr"),
    ({"likelihood": "poisson"}, "model.likelihood"),
    ({"lr_schedule": "step"}, "model.lr_schedule"),
])
def test_bad_hyperparameters_name_the_config_key(kwargs, key):
    with pytest.raises(VAEUserError, match=key.replace(".", r"\.")):
        VAE(**kwargs)


def test_checkpoint_round_trip_without_the_config(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = VAE(latent_dim=3, hidden_dims=[32], num_samples=2, beta=0.5)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = VAE.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.hparams.beta == 0.5 and loaded.hparams.num_samples == 2
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x))
    # Logged names are the public contract.
    assert {"train/recon", "train/kl", "train/elbo", "train/loss", "train/beta",
            "val/recon", "val/kl", "val/elbo"} <= set(trainer.logged_metrics)


def test_integer_images_are_refused_with_what_to_do():
    with pytest.raises(TypeError, match=r"float images in \[0, 1\], got torch.uint8.*x / 255"):
        VAE(hidden_dims=[8], latent_dim=2)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_cosine_schedule_decays_the_learning_rate_to_zero(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = VAE(latent_dim=2, hidden_dims=[8], lr=0.01, lr_schedule="cosine")
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 10
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("precision, dtype", [("64-true", torch.float64), ("bf16-true", torch.bfloat16)])
def test_true_precision_casts_the_data_to_the_weights(fake_mnist, tmp_path, precision, dtype):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = VAE(latent_dim=2, hidden_dims=[8])
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert model.dtype == dtype and torch.isfinite(trainer.callback_metrics["val/elbo"])
