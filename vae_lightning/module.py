"""The LightningModule: encoder, decoder, likelihood and objective in one place."""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch

from .errors import VAEUserError
from .likelihoods import make_likelihood
from .nets import MLPDecoder, MLPEncoder
from .objective import ElboTerms, elbo_terms

LR_SCHEDULES = ("constant", "cosine")


class VAE(L.LightningModule):
    """A variational autoencoder trained on the (beta-weighted) ELBO with K samples.

    Logged per split, in nats per example (``train/``, ``val/``, ``test/``):
      recon  -E_q[log p(x|z)], the reconstruction loss
      kl     KL(q(z|x) || p(z))
      elbo   -(recon + kl): the true bound on log p(x), whatever beta is
    and for training also ``loss`` (recon + beta * kl, what is minimised) and ``beta``.

    Every argument is a plain value, so ``VAE.load_from_checkpoint(path)`` rebuilds
    the model without the config that trained it.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 32,
        hidden_dims: Sequence[int] = (512, 256),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        sigma: float = 1.0,
        beta: float = 1.0,
        num_samples: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
    ):
        super().__init__()
        # The run's full config is logged by the entry point; this only stores what
        # rebuilding the model needs, in the checkpoint.
        self.save_hyperparameters(logger=False)
        if latent_dim < 1:
            raise VAEUserError(f"model.latent_dim={latent_dim} must be >= 1.")
        if beta < 0:
            raise VAEUserError(f"objective.beta={beta} must be >= 0.")
        if num_samples < 1:
            raise VAEUserError(f"objective.num_samples={num_samples} must be >= 1.")
        if not lr > 0:
            raise VAEUserError(f"model.lr={lr} must be > 0.")
        if lr_schedule not in LR_SCHEDULES:
            raise VAEUserError(f"model.lr_schedule={lr_schedule!r} is not known: choose one of {list(LR_SCHEDULES)}.")
        self.input_shape = tuple(input_shape)
        hidden_dims = list(hidden_dims)
        self.encoder = MLPEncoder(self.input_shape, hidden_dims, latent_dim, activation)
        # The decoder mirrors the encoder: hidden sizes in reverse order.
        self.decoder = MLPDecoder(latent_dim, hidden_dims[::-1], self.input_shape, activation)
        likelihood_kwargs = {"sigma": sigma} if likelihood == "gaussian" else {}
        try:
            self.likelihood = make_likelihood(likelihood, **likelihood_kwargs)
        except ValueError as e:
            raise VAEUserError(str(e)) from None
        self.beta = float(beta)
        self.num_samples = int(num_samples)

    # -- the model ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> ElboTerms:
        """Per-example terms of the bound for a batch x [B, *input_shape] of floats in [0, 1]."""
        if not x.is_floating_point():
            raise TypeError(f"VAE expects float images in [0, 1], got {x.dtype}: scale them (x / 255) and "
                            f"binarise them first, as the DataModules of vae_lightning.data do.")
        mu, logvar = self.encoder(x)
        return elbo_terms(x, mu, logvar, self.decoder, self.likelihood, self.num_samples, self.beta)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at z = mu(x): [B, *input_shape]."""
        mu, _ = self.encoder(x)
        return self.likelihood.mean(self.decoder(mu))

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """Means of p(x|z) for z drawn from the prior: [num, *input_shape]."""
        z = torch.randn(num, self.hparams.latent_dim, device=self.device)
        return self.likelihood.mean(self.decoder(z))

    # -- training and evaluation -------------------------------------------------------
    def _shared_step(self, batch, split: str) -> torch.Tensor:
        x, _ = batch
        terms = self(x)
        batch_size = x.shape[0]
        on_step = split == "train"  # train: a point per step; val/test: the mean over the epoch
        loss = terms.loss.mean()
        values = {"recon": terms.recon.mean(), "kl": terms.kl.mean(), "elbo": terms.elbo.mean()}
        if split == "train":
            values.update(loss=loss, beta=torch.tensor(self.beta))
        for name, value in values.items():
            self.log(
                f"{split}/{name}",
                value,
                on_step=on_step,
                on_epoch=not on_step,
                batch_size=batch_size,
                sync_dist=not on_step,  # epoch means are reduced across processes
                prog_bar=name == "elbo",
            )
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        # cosine: from lr down to 0 over the whole run, stepped every optimiser step.
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
