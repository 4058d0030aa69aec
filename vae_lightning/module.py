"""The LightningModule: it wires the parts of a VAE together, trains them and logs."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import torch
from torch import nn

from .errors import ConfigError, VAEUserError
from .evaluation import (ExampleMean, LatentActivity, NegativeLogLikelihood, active_units_per_layer,
                         importance_sampled_log_px)
from .likelihoods import Likelihood
from .objectives import Objective, Terms
from .optim import build_lr_scheduler, build_optimizer
from .posteriors import Posterior, PosteriorFamily
from .priors import Prior
from .steps import planned_batches


def _as_logged(values: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Values as ``self.log`` stores them: each in Lightning's dtype (the default float dtype, at least float32),
    a Python number as a tensor of it."""
    dtype = torch.get_default_dtype()
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    return {name: value.to(dtype) if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype)
            for name, value in values.items()}


class VAE(L.LightningModule):
    """A variational autoencoder composed of parts (each its own module, see the README's Architecture):

        x --encoder--> params of q --posterior--> q(z|x)          z ~ q: [K, B, D]
        z --decoder--> params of p(x|z) --likelihood--> log p(x|z)
        prior p(z);  objective(x, q, decoder, prior, likelihood) -> per-example terms

    Logged per split, in nats per example (``train/``, ``val/``, ``test/``):
      recon  -E_q[log p(x|z)], the reconstruction loss
      kl     KL(q(z|x) || p(z)): analytic when the posterior/prior pair has a closed form, else
             the Monte-Carlo estimate from the same K samples (``kl_estimator`` says which)
      elbo   -(recon + kl): the true bound on log p(x), whatever beta is
      iwae   the importance-weighted bound L_K on the same K samples (when K > 1 or objective=iwae)
    and for training also ``loss`` (what is minimised) and ``beta`` (the beta in use), at every
    step the loggers record and at least once an epoch. At validation end: ``val/active_units``
    and, for a factorised analytic KL, ``val/kl_dim/NN``; after testing with ``nll_samples > 0``:
    ``test/nll`` (nats) and, for discrete data, ``test/bpd`` (bits per dimension).

    Build it from parts (``VAE(encoder=..., decoder=..., ...)``) or from a config with
    :meth:`from_config`; only the latter writes checkpoints that rebuild themselves
    (:func:`vae_lightning.load_model`).

    optimizer:    a partial, ``optimizer(params) -> torch.optim.Optimizer`` (default Adam, lr 1e-3).
    lr_scheduler: a partial, ``lr_scheduler(optimizer[, total_steps])`` -> a torch scheduler
                  (stepped every epoch) or Lightning's scheduler dict; None: a constant lr.
                  ``total_steps`` counts training batches (VAE updates).

    An objective with an optimiser of its own (``objective.optimizer``, e.g. FactorVAE's discriminator)
    switches the module to manual optimisation: each training batch is one VAE update and one update of
    the objective's parameters, two optimiser steps in ``trainer.global_step``
    (``optimizer_steps_per_batch`` = 2); :attr:`batches_seen` is the count everything reads. Gradient
    clipping is then done here, from ``gradient_clip_val`` and ``gradient_clip_algorithm`` (train.py
    moves ``trainer.gradient_clip_val`` there: Lightning refuses it under manual optimisation).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        posterior: PosteriorFamily,
        prior: Prior,
        likelihood: Likelihood,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        lr_scheduler: Callable[..., Any] | None = None,
        *,
        input_shape: Sequence[int] = (1, 28, 28),
        nll_samples: int = 0,
        nll_chunk_size: int | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        # What a checkpoint needs to rebuild the model (plain values; see vae_lightning.build).
        self.save_hyperparameters({"input_shape": list(input_shape), "config": config}, logger=False)
        self.input_shape = tuple(input_shape)
        self.encoder, self.decoder = encoder, decoder
        self.posterior, self.prior, self.likelihood = posterior, prior, likelihood
        self.objective = objective
        #: Optimiser steps per training batch: 2 when the objective trains parameters of its own.
        self.optimizer_steps_per_batch = 1 if getattr(objective, "optimizer", None) is None else 2
        self.automatic_optimization = self.optimizer_steps_per_batch == 1
        if not self.automatic_optimization and not self._own_parameters():
            raise VAEUserError(f"objective.optimizer is set but {type(objective).__name__} has no parameters to train "
                               f"with it: remove objective.optimizer.")
        #: Clipping of the VAE's gradients under manual optimisation (automatic: the Trainer's own).
        self.gradient_clip_val: float | None = None
        self.gradient_clip_algorithm: str = "norm"
        self.make_optimizer = optimizer or functools.partial(torch.optim.Adam, lr=1e-3)
        self.make_lr_scheduler = lr_scheduler
        self.nll_samples, self.nll_chunk_size = nll_samples, nll_chunk_size
        self.kl_estimator = self._check_parts()
        self.val_activity = LatentActivity(self.latent_dim)
        self.test_nll = NegativeLogLikelihood(math.prod(self.input_shape))
        # Validation and test means of each term over all examples, reduced across processes as sums
        # and counts (Lightning's own sync of an epoch mean divides integer counts: uneven DDP shards
        # were off, by 1% for 101 validation images on 2 ranks).
        self.epoch_means = nn.ModuleDict()
        #: The last training step's terms, detached, for callbacks: ``recon`` and ``kl`` per example [B], ``loss``
        #: (0-dim, what was minimised), and ``own_loss`` when the objective has an optimiser of its own.
        self.train_terms: dict[str, torch.Tensor] = {}
        self._last_train_logs: dict[str, Any] | None = None
        self._train_logged_epoch = -1
        #: What the progress bar shows of training (``train/elbo``), as of the last logged step: plain floats.
        self.train_progress: dict[str, float] = {}
        #: A logged step's values until its end: (values, whether the loggers record the step; None: self.log took them)
        self._pending_train_logs: tuple[dict[str, Any], bool | None] | None = None

    @property
    def latent_dim(self) -> int:
        return self.posterior.latent_dim

    def _own_parameters(self) -> list[nn.Parameter]:
        """The parameters the objective trains with its own optimiser (none when it has none)."""
        if self.automatic_optimization:
            return []
        return [p for p in self.objective.parameters() if p.requires_grad]

    @property
    def batches_seen(self) -> int:
        """Training batches done, the VAE's updates (``trainer.global_step`` counts optimiser steps, two
        per batch when the objective has an optimiser of its own); 0 without a trainer."""
        return self.global_step // self.optimizer_steps_per_batch

    def _check_parts(self) -> str:
        """That the parts fit together, on a zero input (no randomness, no training); returns which KL
        the objective logs (``analytic`` or ``monte_carlo``)."""
        if self.prior.latent_dim != self.posterior.latent_dim:
            raise VAEUserError(f"The prior is over {self.prior.latent_dim} dimensions but the posterior over "
                               f"{self.posterior.latent_dim}: build both with the same latent_dim.")
        modules = [self.encoder, self.decoder, self.posterior, self.prior, self.likelihood]
        modes = [m.training for m in modules]
        try:
            for m in modules:
                m.eval()
            with torch.no_grad():
                params = self.encoder(torch.zeros(1, *self.input_shape))
                if tuple(params.shape) != (1, self.posterior.num_params):
                    raise VAEUserError(f"The encoder (model.encoder) outputs {list(params.shape[1:])} numbers per "
                                       f"example but the posterior ({type(self.posterior).__name__}) takes "
                                       f"{self.posterior.num_params}: build the encoder with "
                                       f"out_features=posterior.num_params.")
                q = self.posterior(params)
                if tuple(q.mean.shape) != (1, self.latent_dim):
                    raise VAEUserError(f"{type(self.posterior).__name__} gives a mean of shape {list(q.mean.shape)}, "
                                       f"not [B, latent_dim={self.latent_dim}].")
                out = self.decoder(q.mean)
                expected = self.likelihood.param_shape(self.input_shape)
                if tuple(out.shape[1:]) != tuple(expected):
                    raise VAEUserError(f"The decoder (model.decoder) outputs {list(out.shape[1:])} per example but the "
                                       f"likelihood ({type(self.likelihood).__name__}) needs {list(expected)}: build "
                                       f"the decoder with output_shape=likelihood.param_shape(input_shape).")
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        try:
            return self.objective.check(q, self.prior)
        except ConfigError as e:
            raise e.at("objective") from None

    # -- the model: encode, decode, sample ----------------------------------------------
    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"VAE expects float images in [0, 1], got {x.dtype}: scale them (x / 255) and "
                            f"binarise them first, as the DataModules of vae_lightning.data do.")
        dtype = self.dtype
        return x if x.dtype == dtype else x.to(dtype)  # e.g. bf16-true or 64-true precision: the data follows the weights

    def encode(self, x: torch.Tensor) -> Posterior:
        """q(z|x) for a batch x [B, *input_shape]."""
        return self.posterior(self.encoder(self._as_input(x)))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) for codes z [..., D]: [..., *input_shape]."""
        return self.likelihood.mean(self.decoder(z.to(self.dtype)), len(self.input_shape))

    def forward(self, x: torch.Tensor, with_iwae: bool | None = None, step: int | None = None) -> Terms:
        """Per-example terms of the bound for a batch x [B, *input_shape] of floats in [0, 1]; ``with_iwae``:
        also L_K (by default when the objective reports it: K > 1, or it trains on it); ``step``: the
        training batches seen, what the beta schedule reads (default :attr:`batches_seen`)."""
        return self._terms(x, with_iwae, step)[1]

    def _terms(self, x: torch.Tensor, with_iwae: bool | None = None,
               step: int | None = None) -> tuple[Posterior, Terms]:
        x = self._as_input(x)
        q = self.posterior(self.encoder(x))
        with_iwae = self.objective.reports_iwae if with_iwae is None else with_iwae
        terms = self.objective(x, q, self.decoder, self.prior, self.likelihood,
                               step=self.batches_seen if step is None else step, with_iwae=with_iwae)
        return q, terms

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) at z = E_q[z]: [B, *input_shape]."""
        return self.decode_mean(self.encode(x).mean)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Means of p(x|z) for z drawn from the prior: [num, *input_shape]."""
        return self.decode_mean(self.prior.sample(num, generator=generator))

    @torch.no_grad()
    def log_px(self, x: torch.Tensor, num_samples: int | None = None, chunk_size: int | None = None) -> torch.Tensor:
        """Importance-sampled log p(x) with S samples (default ``nll_samples``, else 5000): [B]."""
        x = self._as_input(x)
        return importance_sampled_log_px(x, self.encode(x), self.decoder, self.prior, self.likelihood,
                                         num_samples or self.nll_samples or 5000, chunk_size or self.nll_chunk_size)

    # -- training and evaluation ----------------------------------------------------------
    # Logging is Lightning's Python bookkeeping: compile=true runs it as it is (it does not trace).
    @torch.compiler.disable
    def _log_train(self, terms: Terms, batch_size: int, recorded: bool,
                   own: Mapping[str, torch.Tensor] | None = None) -> None:
        """A point per logged step: the step's batch means, beta, L_K, and what the objective's own update
        reports (``own``); ``recorded``: the loggers record this step (else it is the epoch's last, for the bar).

        The values go to the loggers the way Lightning's own callbacks (LearningRateMonitor) send theirs: one
        read of all of them (a single host-device sync) after the step's update is queued
        (:meth:`on_train_batch_end`), then Lightning's ``log_metrics`` to every logger, with the step and epoch
        ``self.log`` would give them; and, at once, into ``trainer.callback_metrics`` (what a ModelCheckpoint or
        EarlyStopping monitoring ``train/loss`` reads). ``self.log`` does the same at about 0.3 ms of Python
        per value (Lightning rebuilds each value's record): 2 ms a logged step, 40 us a step on average at
        the default interval. None of them is on Lightning's progress bar, which would read a bar value back
        from the device after every step (a sync per step): the bar shows ``train_progress``, plain floats."""
        recon, kl = self.train_terms["recon"].mean(), self.train_terms["kl"].mean()
        values = {"recon": recon, "kl": kl, "elbo": -(recon + kl), "loss": self.train_terms["loss"], "beta": terms.beta}
        if terms.iwae is not None:
            values["iwae"] = terms.iwae.detach().mean()
        values.update({name: value.detach().mean() for name, value in terms.extras.items()})
        values.update(own or {})
        log_metrics = self._lightning_log_metrics()
        if log_metrics is None:  # no trainer, or a Lightning without the connector: Lightning's self.log
            for name, value in values.items():
                self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=batch_size)
            self._last_train_logs = {"values": values, "batch_size": batch_size}
            self._pending_train_logs = (values, None)
            return
        trainer = self._trainer
        metrics = _as_logged(values)  # in the dictionaries Lightning's properties return and update
        trainer.callback_metrics.update({f"train/{name}": value for name, value in metrics.items()})
        trainer.logged_metrics.update({f"train/{name}": value for name, value in metrics.items()})
        # (also the epoch's latest values: what a short epoch logs at its end, and a stop step writes again)
        self._last_train_logs = {"values": values, "batch_size": batch_size}
        self._pending_train_logs = (metrics, recorded)

    def _lightning_log_metrics(self) -> Callable[[dict[str, Any]], None] | None:
        """Lightning's own writer to every logger (what ``self.log``'s values end in, with the step and epoch),
        or None (no trainer, or a Lightning without it: then ``self.log``)."""
        return getattr(getattr(self._trainer, "_logger_connector", None), "log_metrics", None)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # A logged step's values, read once (one sync) after its update is queued: to the progress bar, and to the
        # loggers when Lightning's self.log would write them: at the steps they record, and at a step that stops
        # training (a callback's should_stop, set before this hook: max_time, early stopping), where Lightning writes
        # the epoch's latest values again if this step logged none. Decided here, after every callback's hook.
        pending, trainer = self._pending_train_logs, self._trainer
        if trainer is None or (pending is None and not trainer.should_stop):
            return  # (most steps)
        if (self.automatic_optimization and (batch_idx + 1) % trainer.accumulate_grad_batches
                               and batch_idx + 1 < trainer.num_training_batches and not trainer.is_last_batch):
            return  # (gradients accumulate: the values of the batch that ends the accumulation are logged)
        self.__dict__["_pending_train_logs"] = None
        if pending is None:
            last, log_metrics = self._last_train_logs, self._lightning_log_metrics()
            if trainer.should_stop and last is not None and log_metrics is not None:
                log_metrics({f"train/{name}": value for name, value in _as_logged(last["values"]).items()})
            return
        values, recorded = pending
        if recorded is None:  # logged through self.log (no connector): the bar's value only
            self.train_progress = {"train/elbo": float(values["elbo"])}
            return
        on_device = {name: value for name, value in values.items() if value.device.type != "cpu"}
        host = dict(values)
        if on_device:  # one sync for all of them
            host.update(zip(on_device, torch.stack(list(on_device.values())).cpu().unbind()))
        self.train_progress = {"train/elbo": host["elbo"].item()}
        if recorded or trainer.should_stop:
            log_metrics = self._lightning_log_metrics()
            if log_metrics is not None:  # (CPU tensors: Lightning's .item() on each reads no device)
                log_metrics({f"train/{name}": value for name, value in host.items()})

    @torch.compiler.disable
    def _log_evaluation(self, split: str, terms: Terms) -> None:
        """The mean of each term over all examples of the epoch (``ExampleMean``, see ``epoch_means``)."""
        per_example = {"recon": terms.recon, "kl": terms.kl, "elbo": terms.elbo, **terms.extras}
        if terms.iwae is not None:
            per_example["iwae"] = terms.iwae
        for name, value in per_example.items():
            key = f"{split}_{name}"
            if key not in self.epoch_means:
                self.epoch_means[key] = ExampleMean().to(self.device)
            metric = self.epoch_means[key]
            metric.update(value)
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "elbo",
                     metric_attribute=f"epoch_means.{key}")

    def _train_logs_due(self, batch_idx: int) -> tuple[bool, bool, int]:
        """Whether this step logs: the loggers record it (every ``trainer.log_every_n_steps`` training batches,
        as Lightning's loggers count them), or it is the epoch's last batch, which the progress bar shows;
        whether the loggers record it; and the training batches seen so far (:attr:`batches_seen`, what the beta schedule reads). The other
        steps log nothing.

        Outside any compiled graph (see :meth:`_logs_due`) (compile=true compiles ``training_step``): the step changes from batch to
        batch, and read inside the graph it would be one of its constants, the step compiled again at every
        batch; returned from here it is an input of the rest, a symbol after one recompilation."""
        trainer = self._trainer
        step = self.batches_seen
        if trainer is None:
            return True, False, step
        every = trainer.log_every_n_steps
        recorded = every > 0 and (step + 1) % every == 0
        if recorded:
            self._train_logged_epoch = self.current_epoch
        return recorded or batch_idx + 1 >= trainer.num_training_batches, recorded, step

    # Called from a compiled step, the same outside any graph (a graph break); called eagerly, without the ~2 us of
    # the wrapper that keeps the compiler out.
    _train_logs_due_uncompiled = torch.compiler.disable(_train_logs_due)

    def _logs_due(self, batch_idx: int) -> tuple[bool, bool, int]:
        if torch.compiler.is_compiling():
            return self._train_logs_due_uncompiled(batch_idx)
        return self._train_logs_due(batch_idx)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if not self.automatic_optimization:
            return self._train_with_own_optimizer(batch[0], batch_idx)
        x = batch[0]
        log_now, recorded, step = self._logs_due(batch_idx)
        # L_K needs log q and log p of every sample: only on the steps that log it (or train on it).
        terms = self(x, with_iwae=self.objective.reports_iwae and log_now, step=step)
        loss = terms.loss.mean()
        # What the callbacks (the NaN guard) read of the step: the per-example terms and the loss, detached (their
        # means only where they are logged). (A plain attribute, set without nn.Module's __setattr__: ~1.5 us.)
        self.__dict__["train_terms"] = {"recon": terms.recon.detach(), "kl": terms.kl.detach(), "loss": loss.detach()}
        if log_now:
            self._log_train(terms, x.shape[0], recorded)
        return loss

    def _train_with_own_optimizer(self, x: torch.Tensor, batch_idx: int) -> None:
        """One batch when the objective trains parameters of its own: the VAE's update, then the objective's.

        The objective's parameters are constants of the VAE's loss (``requires_grad`` off during its
        forward), and ``own_loss`` reaches none of the VAE's: one backward pass of the sum gives each
        optimiser the gradient of its own loss only, with one gradient reduction under DDP. The NaN guard
        runs before the VAE's step (it sees every gradient then) and clipping (VAE's parameters only) in
        :meth:`on_before_optimizer_step`; the LR schedule is stepped here, at its interval.
        """
        log_now, recorded, step = self._logs_due(batch_idx)
        vae_optimizer, own_optimizer = self.optimizers()
        terms, own_loss, own_logs = self._two_losses(x, with_iwae=self.objective.reports_iwae and log_now, step=step)
        loss = terms.loss.mean()
        self.__dict__["train_terms"] = {"recon": terms.recon.detach(), "kl": terms.kl.detach(), "loss": loss.detach(),
                            "own_loss": own_loss.detach()}
        vae_optimizer.zero_grad(set_to_none=True)
        own_optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss + own_loss)
        vae_optimizer.step()
        own_optimizer.step()
        self._step_lr_schedulers(batch_idx)
        if log_now:
            self._log_train(terms, x.shape[0], recorded, {k: v.detach() for k, v in own_logs.items()})
        return None

    def _two_losses(self, x: torch.Tensor, with_iwae: bool,
                    step: int | None = None) -> tuple[Terms, torch.Tensor, dict[str, torch.Tensor]]:
        """The VAE's terms, with the objective's own parameters held constant, then the objective's own loss
        (which reaches none of the VAE's parameters): their gradients fall on disjoint parameters."""
        own_parameters = self._own_parameters()
        for p in own_parameters:
            p.requires_grad_(False)
        try:
            terms = self(x, with_iwae=with_iwae, step=step)
        finally:
            for p in own_parameters:
                p.requires_grad_(True)
        own_loss, own_logs = self.objective.own_loss()
        return terms, own_loss, own_logs

    def _step_lr_schedulers(self, batch_idx: int) -> None:
        """Under manual optimisation, the LR schedule where Lightning steps it under automatic optimisation:
        after the batch's update, every ``frequency`` batches (``interval: step``) or after the epoch's last
        batch, every ``frequency`` epochs (``interval: epoch``)."""
        trainer = self.trainer
        last = batch_idx + 1 >= trainer.num_training_batches or trainer.is_last_batch
        for config in trainer.lr_scheduler_configs:
            index = batch_idx + 1 if config.interval == "step" else self.current_epoch + 1
            if (config.interval == "step" or last) and index % config.frequency == 0:
                self.lr_scheduler_step(config.scheduler, None)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Under manual optimisation, clip the VAE's gradients here: after fp16's unscaling, as Lightning does.
        if self.gradient_clip_val and not self.automatic_optimization and optimizer is self.trainer.optimizers[0]:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val,
                                gradient_clip_algorithm=self.gradient_clip_algorithm)

    def setup(self, stage: str) -> None:
        # The DataModule is set up by now: an objective whose estimate needs N (beta-TCVAE) is told it.
        train_set = getattr(getattr(self._trainer, "datamodule", None), "train_set", None)
        if train_set is not None:
            self.objective.set_training_size(len(train_set))

    def on_train_epoch_end(self) -> None:
        # A short epoch (fewer steps than trainer.log_every_n_steps, or limit_train_batches) reaches no
        # logger step: record its last batch's terms with the epoch's metrics.
        last = self._last_train_logs
        if last is not None and self._train_logged_epoch != self.current_epoch:
            for name, value in last["values"].items():
                self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=last["batch_size"],
                         sync_dist=True)
        self._last_train_logs = None

    def validation_step(self, batch, batch_idx: int) -> None:
        x = batch[0]
        q, terms = self._terms(x)
        self._log_evaluation("val", terms)
        self.val_activity.update(q.mean, terms.kl_per_dim)

    def on_validation_epoch_end(self) -> None:
        activity = self.val_activity.compute()  # reduced across processes
        self.val_activity.reset()
        self.log("val/active_units", activity["active_units"].float())
        # A hierarchical posterior (z = [z1, z2, ...]) names its layers' sizes: active units per layer too.
        layer_dims = getattr(self.posterior, "layer_dims", None)
        for i, count in enumerate(active_units_per_layer(activity["variance"], layer_dims, self.val_activity.threshold)
                                  if layer_dims else ()):
            self.log(f"val/active_units/z{i + 1}", float(count))
        for d, kl in enumerate(activity.get("kl_per_dim", ())):
            self.log(f"val/kl_dim/{d:02d}", kl.float())

    def test_step(self, batch, batch_idx: int) -> None:
        x = batch[0]
        _, terms = self._terms(x)
        self._log_evaluation("test", terms)
        if self.nll_samples > 0:
            self.test_nll.update(self.log_px(x))

    def on_test_epoch_end(self) -> None:
        if self.nll_samples > 0:
            nll = self.test_nll.compute()  # reduced across processes
            self.test_nll.reset()
            self.log("test/nll", nll.float())
            if self.likelihood.data_kind != "continuous":
                # Bits per dimension of discrete data. For densities on [0, 1] intensities the usual
                # 8-bit figure would need dequantised data and +8 bits: not reported.
                self.log("test/bpd", self.test_nll.bits_per_dim(nll).float())

    # -- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self):
        precision = str(getattr(self._trainer, "precision", "32-true"))
        if self.automatic_optimization:
            optimizer = build_optimizer(self.make_optimizer, [p for p in self.parameters() if p.requires_grad],
                                        precision)
        else:
            if precision in ("16-mixed", "16", "16-true"):
                raise VAEUserError(f"trainer.precision={precision} scales one loss for two optimisers, which "
                                   f"{type(self.objective).__name__}'s own optimiser (objective.optimizer) makes "
                                   f"wrong: use trainer.precision=bf16-mixed or 32-true.")
            own = {id(p) for p in self.objective.parameters()}
            optimizer = build_optimizer(self.make_optimizer,
                                        [p for p in self.parameters() if p.requires_grad and id(p) not in own],
                                        precision)
            own_optimizer = build_optimizer(self.objective.optimizer, self._own_parameters(), precision)
        scheduler = None
        if self.make_lr_scheduler is not None:
            total_steps = planned_batches(self.trainer) if self._trainer is not None else 1
            scheduler = build_lr_scheduler(self.make_lr_scheduler, optimizer, total_steps)
        if self.automatic_optimization:
            return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
        if scheduler is not None and isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise VAEUserError(f"model.lr_scheduler: ReduceLROnPlateau is not stepped under manual optimisation, "
                               f"which {type(self.objective).__name__}'s own optimiser needs: use a schedule by step "
                               f"or epoch.")
        return ([optimizer, own_optimizer], [scheduler]) if scheduler else [optimizer, own_optimizer]

    @classmethod
    def from_config(cls, config: Mapping[str, Any], input_shape: Sequence[int]) -> "VAE":
        """Build a VAE from a run config (its ``model``, ``objective`` and ``eval`` groups); its
        checkpoints then rebuild themselves with :func:`vae_lightning.load_model`."""
        from .build import build_model

        return build_model(config, input_shape, default_class=cls)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location: Any = "cpu",  # type: ignore[override]
                             overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> "VAE":
        """The model of a checkpoint, rebuilt from the config inside it (see :func:`vae_lightning.load_model`)."""
        from .build import load_model

        if kwargs:
            raise TypeError(f"VAE.load_from_checkpoint takes overrides={{'objective.num_samples': ...}} by config "
                            f"key, not {sorted(kwargs)}.")
        return load_model(checkpoint_path, overrides=overrides, map_location=map_location, default_class=cls)

