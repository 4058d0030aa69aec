"""The LightningModule: encoder, decoder, likelihood and objective in one place."""

from __future__ import annotations

import math
from typing import Sequence

import lightning as L
import torch

from .checks import check_model_args
from .errors import VAEUserError
from .evaluation import LatentActivity, NegativeLogLikelihood, importance_sampled_log_px
from .likelihoods import make_likelihood
from .nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .objective import ElboTerms, elbo_terms
from .schedules import beta_at


def burda_lr_factor(epoch: int, stages: int = 8) -> float:
    """Burda et al. (2016): stage i lasts 3^i epochs at lr * 10^(-i/7), i = 0..7 (3280 epochs in all)."""
    stage, end = 0, 1
    while epoch >= end and stage < stages - 1:
        stage += 1
        end += 3**stage
    return 10 ** (-stage / 7)


class VAE(L.LightningModule):
    """A variational autoencoder trained on the ELBO (beta-weighted, K samples) or the IWAE bound.

    Logged per split, in nats per example (``train/``, ``val/``, ``test/``):
      recon  -E_q[log p(x|z)], the reconstruction loss
      kl     KL(q(z|x) || p(z))
      elbo   -(recon + kl): the true bound on log p(x), whatever beta is
      iwae   the importance-weighted bound L_K on the same K samples (when K > 1 or objective=iwae)
    and for training also ``loss`` (what is minimised) and ``beta`` (the beta in use).
    At validation end: ``val/active_units`` and ``val/kl_dim/NN``; after testing with
    ``nll_samples > 0``: ``test/nll`` (nats) and ``test/bpd`` (bits per dimension).

    Every argument is a plain value, so ``VAE.load_from_checkpoint(path)`` rebuilds
    the model without the config that trained it.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 32,
        architecture: str = "mlp",
        hidden_dims: Sequence[int] = (512, 256),
        channels: Sequence[int] = (32, 64),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        sigma: float = 1.0,
        min_sigma: float = 1e-2,
        objective: str = "elbo",
        beta: float = 1.0,
        num_samples: int = 1,
        kl_schedule: str = "constant",
        warmup_steps: int = 0,
        cycle_steps: int = 0,
        cycle_ratio: float = 0.5,
        free_bits: float = 0.0,
        free_bits_group_size: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        adam_eps: float = 1e-8,
        lr_schedule: str = "constant",
        nll_samples: int = 0,
        nll_chunk_size: int | None = None,
        fused_optimizer: bool = True,
    ):
        super().__init__()
        # The run's full config is logged by the entry point; this only stores what
        # rebuilding the model needs, in the checkpoint.
        self.save_hyperparameters(logger=False)
        check_model_args(self.hparams)
        self.input_shape = tuple(input_shape)
        try:
            self.likelihood = make_likelihood(likelihood, self.input_shape, sigma=sigma, min_sigma=min_sigma)
            param_shape = self.likelihood.param_shape(self.input_shape)
            if architecture == "mlp":
                hidden_dims = list(hidden_dims)
                self.encoder = MLPEncoder(self.input_shape, hidden_dims, latent_dim, activation)
                # The decoder mirrors the encoder: hidden sizes in reverse order.
                self.decoder = MLPDecoder(latent_dim, hidden_dims[::-1], param_shape, activation)
            else:
                self.encoder = ConvEncoder(self.input_shape, list(channels), latent_dim, activation)
                self.decoder = ConvDecoder(latent_dim, list(channels), param_shape, activation)
        except ValueError as e:
            raise VAEUserError(str(e)) from None
        self.val_activity = LatentActivity(latent_dim)
        self.test_nll = NegativeLogLikelihood(math.prod(self.input_shape))

    # -- the model ---------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """The beta in use now (it follows the KL schedule during training)."""
        hp = self.hparams
        return beta_at(self.global_step, hp.beta, hp.kl_schedule, hp.warmup_steps, hp.cycle_steps, hp.cycle_ratio)

    def forward(self, x: torch.Tensor, beta: float | None = None) -> ElboTerms:
        """Per-example terms of the bound for a batch x [B, *input_shape] of floats in [0, 1]."""
        if not x.is_floating_point():
            raise TypeError(f"VAE expects float images in [0, 1], got {x.dtype}: scale them (x / 255) and "
                            f"binarise them first, as the DataModules of vae_lightning.data do.")
        hp = self.hparams
        x = x.to(self.dtype)  # e.g. bf16-true or 64-true precision: the data follows the weights
        mu, logvar = self.encoder(x)
        return elbo_terms(x, mu, logvar, self.decoder, self.likelihood, hp.num_samples,
                          self.beta if beta is None else beta, hp.objective, hp.free_bits, hp.free_bits_group_size,
                          with_iwae=self._logs_iwae)

    @property
    def _logs_iwae(self) -> bool:
        """L_K is logged beside the ELBO when it says something more: K > 1, or it is the objective."""
        return self.hparams.num_samples > 1 or self.hparams.objective == "iwae"

    def _mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(params, len(self.input_shape))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at z = mu(x): [B, *input_shape]."""
        mu, _ = self.encoder(x.to(self.dtype))
        return self._mean(self.decoder(mu))

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """Means of p(x|z) for z drawn from the prior: [num, *input_shape]."""
        z = torch.randn(num, self.hparams.latent_dim, device=self.device, dtype=self.dtype)
        return self._mean(self.decoder(z))

    @torch.no_grad()
    def log_px(self, x: torch.Tensor, num_samples: int | None = None, chunk_size: int | None = None) -> torch.Tensor:
        """Importance-sampled log p(x) with S samples (default ``nll_samples``, else 5000): [B]."""
        num_samples = num_samples or self.hparams.nll_samples or 5000
        return importance_sampled_log_px(x.to(self.dtype), self.encoder, self.decoder, self.likelihood, num_samples,
                                         chunk_size or self.hparams.nll_chunk_size)

    # -- training and evaluation -------------------------------------------------------
    def _shared_step(self, batch, split: str) -> ElboTerms:
        x, _ = batch
        beta = self.beta if split == "train" else 1.0
        terms = self(x, beta=beta)
        loss = terms.loss.mean()
        recon, kl = terms.recon.mean(), terms.kl.mean()
        if split == "train":
            # For NonFiniteGuard: no sync here, it reads them only when it checks.
            self.last_terms = {"recon": recon.detach(), "kl": kl.detach(), "loss": loss.detach()}
            if not self._writes_train_logs():
                return terms  # each self.log costs ~0.8 ms of Lightning's Python: skip steps nobody records
        values = {"recon": recon, "kl": kl, "elbo": -(recon + kl)}
        if self._logs_iwae:
            values["iwae"] = terms.iwae.mean()
        if split == "train":
            values.update(loss=loss, beta=beta)
        on_step = split == "train"  # train: a point per step; val/test: the mean over the epoch
        for name, value in values.items():
            self.log(f"{split}/{name}", value, on_step=on_step, on_epoch=not on_step, batch_size=x.shape[0],
                     sync_dist=not on_step,  # epoch means are reduced across processes
                     prog_bar=name == "elbo")
        return terms

    def _writes_train_logs(self) -> bool:
        """Whether the loggers record this training step (every trainer.log_every_n_steps) or it
        ends the epoch (so the progress bar and short runs still see the train terms)."""
        trainer = self._trainer
        if trainer is None:
            return True
        connector = getattr(trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True) or trainer.is_last_batch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train").loss.mean()

    def validation_step(self, batch, batch_idx: int) -> None:
        terms = self._shared_step(batch, "val")
        self.val_activity.update(terms.mu, terms.logvar)

    def on_validation_epoch_end(self) -> None:
        activity = self.val_activity.compute()  # reduced across processes
        self.val_activity.reset()
        self.log("val/active_units", activity["active_units"].float())
        for d, kl in enumerate(activity["kl_per_dim"]):
            self.log(f"val/kl_dim/{d:02d}", kl.float())

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")
        if self.hparams.nll_samples > 0:
            self.test_nll.update(self.log_px(batch[0]))

    def on_test_epoch_end(self) -> None:
        if self.hparams.nll_samples > 0:
            nll = self.test_nll.compute()  # reduced across processes
            self.test_nll.reset()
            self.log("test/nll", nll.float())
            if self.hparams.likelihood == "bernoulli":
                # Bits per dimension of binary data. For densities on [0, 1] intensities the
                # usual 8-bit figure would need dequantised data and +8 bits: not reported.
                self.log("test/bpd", self.test_nll.bits_per_dim(nll).float())

    def _adam(self) -> torch.optim.Adam:
        """Adam, with the fused kernel (one kernel for all parameters: ~13% faster steps for the MNIST
        MLP on a CPU, see benchmarks/RESULTS.md) where the device has it and fp16 loss scaling
        (which must unscale before clipping) is off."""
        hp = self.hparams
        kwargs = dict(lr=hp.lr, weight_decay=hp.weight_decay, eps=hp.adam_eps)
        params = list(self.parameters())
        precision = str(getattr(self._trainer, "precision", "32-true"))
        if hp.fused_optimizer and precision not in ("16-mixed", "16"):
            try:
                return torch.optim.Adam(params, fused=True, **kwargs)
            except RuntimeError:  # no fused kernel for this device or dtype
                pass
        return torch.optim.Adam(params, **kwargs)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = self._adam()
        if hp.lr_schedule == "constant":
            return optimizer
        if hp.lr_schedule == "cosine":  # from lr down to 0 over the whole run, every step
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.estimated_stepping_batches)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_factor)  # per epoch
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
