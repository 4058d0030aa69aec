"""A short training on the real MNIST, when this machine has a copy (VAE_DATA_DIR or ../shared/data)."""

import lightning as L
import pytest

from conftest import make_vae, real_mnist_dir
from vae_lightning.data import MNISTDataModule

DATA = real_mnist_dir()


@pytest.mark.skipif(DATA is None, reason="no local copy of MNIST (set VAE_DATA_DIR to a folder holding MNIST/raw)")
def test_real_mnist_validation_elbo_rises(tmp_path):
    L.seed_everything(0, verbose=False)
    dm = MNISTDataModule(data_dir=DATA, batch_size=128, eval_batch_size=1000, download=False)
    model = make_vae()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=300, limit_val_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (before,) = trainer.validate(model, dm, verbose=False)
    trainer.fit(model, dm)
    (after,) = trainer.validate(model, dm, verbose=False)
    assert len(dm.train_set) == 55_000 and len(dm.val_set) == 5_000 and len(dm.test_set) == 10_000
    # An untrained decoder costs ~543 nats (784 log 2); 300 steps bring the bound above -180 (about -165).
    assert before["val/elbo"] < -500
    assert after["val/elbo"] > -180
    assert after["val/kl"] > 5  # the latent code is in use


@pytest.mark.slow
@pytest.mark.skipif(DATA is None, reason="no local copy of MNIST (set VAE_DATA_DIR to a folder holding MNIST/raw)")
def test_real_mnist_iwae_training_beats_elbo_training_on_the_iwae_bound(tmp_path):
    """Burda et al.'s claims at small scale: training on L_5 gives a higher L_5 than training on the
    ELBO, and uses at least as many latent units."""
    results = {}
    for objective in ("elbo", "iwae"):
        L.seed_everything(0, verbose=False)
        dm = MNISTDataModule(data_dir=DATA, batch_size=100, eval_batch_size=1000, download=False)
        model = make_vae("model.latent_dim=20", "model.encoder.hidden_dims=[200, 200]", "model.encoder.activation=tanh",
                         f"objective={objective}", "objective.num_samples=5")
        trainer = L.Trainer(max_epochs=3, limit_val_batches=5, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(model, dm)
        results[objective] = trainer.callback_metrics
    assert results["elbo"]["val/elbo"] > -140 and results["iwae"]["val/iwae"] > -140  # both learned
    # Seen here: L_5 -121.8 against -124.2, and 20 active units against 16 (Burda et al. report
    # more active units with IWAE too).
    assert results["iwae"]["val/iwae"] > results["elbo"]["val/iwae"]
    assert results["iwae"]["val/active_units"] >= results["elbo"]["val/active_units"]
