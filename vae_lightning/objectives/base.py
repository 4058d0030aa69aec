"""The shared parts of every objective: the terms it returns, K samples, the beta schedule, the KL.

    log p(x) = KL(q(z|x) || p(z|x)) + ELBO,    so ELBO <= log p(x)
    ELBO     = E_q[log p(x|z)] - KL(q(z|x) || p(z))
             =   -recon        -      kl
    log w    = log p(x|z) + log p(z) - log q(z|x)     (IWAE bound, test NLL, Monte-Carlo KL)

All values are per example, in nats: summed over data and latent dimensions, not averaged.
Nothing here knows about Lightning, so it can be tested and reused alone.

An objective is a ``torch.nn.Module``, like the other parts: what it holds (a discriminator, say) is in
the VAE's ``parameters()``, its ``state_dict`` and its device and dtype moves. One that trains
parameters of its own with an optimiser of its own (FactorVAE's discriminator) sets ``optimizer`` and
implements ``own_loss``; the VAE then takes two optimiser steps per batch (see :class:`Objective`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..checks import require_choice, require_int, require_number
from ..errors import ConfigError
from ..kl import analytic_kl, has_analytic_kl
from ..likelihoods import Likelihood
from ..schedules import KL_SCHEDULES, beta_at

KL_ESTIMATORS = ("auto", "analytic", "monte_carlo")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Half-precision values in float32 (what sums over many pixels or samples need); others as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound L_K = log (1/K) sum_k w_k, stably: [K, B] -> [B].

    (Burda et al. 2016.) L_1 is the ELBO; L_K rises with K towards log p(x).
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def log_importance_weights(x: torch.Tensor, z: torch.Tensor, q, decode: Callable[[torch.Tensor], torch.Tensor],
                           prior, likelihood: Likelihood, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for samples z_k of q.

    x: [B, *event], z: [K, B, D]  ->  [K, B]; ``log_q`` [K, B]: log q(z_k|x) where the sampler gave it
    (:meth:`Posterior.rsample_and_log_prob`; a flow's density is known only there), else ``q.log_prob(z)``.

    Its mean over k is an unbiased ELBO estimate (the KL estimated too); its
    log-mean-exp is the importance-weighted bound. When q is the exact posterior,
    log w is the same for every z: it is log p(x).
    """
    log_q = q.log_prob(z) if log_q is None else log_q
    return likelihood.log_prob(x, full_precision(decode(z)), x.dim() - 1) + prior.log_prob(z) - log_q


def free_bits_kl(kl_per_group: torch.Tensor, floor: float, group_size: int = 1) -> torch.Tensor:
    """The KL term of the loss with free bits (Kingma et al. 2016): [B, D] -> [B].

    Latent dimensions are taken in groups of ``group_size``; a group whose KL,
    averaged over the minibatch, is below ``floor`` nats contributes the floor
    (a constant: no gradient) instead of its KL. The batch mean of the result is
    sum_g max(floor, mean_batch KL_g), the objective of the paper; above the
    floor the gradient is exactly that of the plain KL.
    """
    batch, dims = kl_per_group.shape
    if dims % group_size:
        raise ValueError(f"free_bits_group_size={group_size} does not divide the latent size {dims}.")
    groups = kl_per_group.view(batch, dims // group_size, group_size).sum(-1)  # [B, G]
    above = groups.detach().mean(0, keepdim=True) > floor  # [1, G]
    return torch.where(above, groups, torch.full_like(groups, floor)).sum(-1)


@dataclass
class Terms:
    """Per-example terms of the bound, each of shape [B], in nats.

    recon:  -E_q[log p(x|z)], the reconstruction loss, estimated with K samples.
    kl:     KL(q(z|x) || p(z)): analytic when the pair has a closed form, else the
            Monte-Carlo estimate (1/K) sum_k log q(z_k|x) - log p(z_k) on the same samples.
    elbo:   -(recon + kl), the true bound on log p(x) whatever beta is; may be left out (computed when read).
    loss:   what training minimises (with beta, free bits, ...): the VAE takes its batch mean. The only
            field trained; nothing else is added to it.
    iwae:   the importance-weighted bound L_K over the same K samples (beta = 1); None unless
            asked for or trained on.
    kl_per_dim: [B, D], the analytic KL of each latent dimension when the pair factorises, else None
            (logged as ``val/kl_dim/NN``).
    beta:   the beta the loss was computed with (logged as ``train/beta``).
    extras: anything more an objective reports, ``{name: [B] tensor}``: reported, never trained on (put
            into ``loss`` what should be). Each is logged as ``train/<name>`` (the batch mean, at the
            logged steps) and ``val/<name>``, ``test/<name>`` (the mean over all examples of the epoch),
            and ``report.py`` plots it. A name of its own: not recon, kl, elbo, loss, beta or iwae.

    recon, kl, elbo (and iwae when given) are logged the same way, per split; ``loss`` as ``train/loss``.
    """

    recon: torch.Tensor
    kl: torch.Tensor
    elbo: torch.Tensor | None = None  # None: -(recon + kl), computed when first read (see below)
    loss: torch.Tensor = None  # type: ignore[assignment]  (required: checked in __post_init__)
    iwae: torch.Tensor | None = None
    kl_per_dim: torch.Tensor | None = None
    beta: float = 1.0
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss is None:
            raise TypeError("Terms needs loss=: the per-example tensor [B] that training minimises")


def _elbo(terms: Terms) -> torch.Tensor:
    elbo = terms.__dict__.get("_elbo")
    if elbo is None:
        elbo = terms.__dict__["_elbo"] = -(terms.recon + terms.kl)
    return elbo


def _set_elbo(terms: Terms, value: torch.Tensor | None) -> None:
    terms.__dict__["_elbo"] = value


# ``elbo`` is always -(recon + kl), so an objective need not pass it: it is then computed when first read
# (the logged steps and evaluation), not on every training step, where nothing reads it.
Terms.elbo = property(_elbo, _set_elbo, doc="-(recon + kl), the true bound on log p(x) whatever beta is: [B]")


class Objective(nn.Module):
    """K samples of z per example, a beta schedule, and the KL estimator. Subclasses implement ``forward``,
    called as ``objective(x, q, decode, prior, likelihood, step=0, with_iwae=False) -> Terms``.

    num_samples:  K, the Monte-Carlo samples of z per example.
    beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio: the weight of the KL term against the
                  training batches seen (``step``; see :func:`vae_lightning.schedules.beta_at`).
    kl_estimator: ``auto`` (analytic where the posterior/prior pair has a closed form, else Monte
                  Carlo), ``analytic`` (refuse a pair without one) or ``monte_carlo`` (always).

    An objective that trains parameters of its own (a discriminator, a critic) with an optimiser of
    its own sets ``optimizer`` (a partial, ``optimizer(params) -> torch.optim.Optimizer``, from its
    config) and implements :meth:`own_loss`. The VAE then trains in two updates per batch, counted as
    one batch (:mod:`vae_lightning.steps`): the VAE's optimiser on the VAE's parameters with the loss
    of ``forward``, in which this objective's own parameters are constants (the VAE turns their
    ``requires_grad`` off around the call); then ``optimizer`` on this objective's parameters with
    ``own_loss()``. Both gradients come from one backward pass of the sum (one gradient reduction under
    DDP), so ``own_loss`` must reach no parameter of the VAE: it uses what ``forward`` kept, detached.
    Gradient clipping and the LR schedule apply to the VAE's optimiser only.
    """

    #: A partial building this objective's own optimiser over its parameters, or None (the default: the
    #: objective has nothing of its own to train, and the VAE trains with one optimiser step per batch).
    optimizer: Callable[..., torch.optim.Optimizer] | None = None

    def __init__(self, num_samples: int = 1, beta: float = 1.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto"):
        super().__init__()
        self.num_samples = require_int("num_samples", num_samples, 1)
        self.beta = require_number("beta", beta, least=0)
        self.kl_schedule = require_choice("kl_schedule", kl_schedule, KL_SCHEDULES)
        self.warmup_steps = require_int("warmup_steps", warmup_steps, 0)
        self.cycle_steps = require_int("cycle_steps", cycle_steps, 0)
        self.cycle_ratio = require_number("cycle_ratio", cycle_ratio)
        if kl_schedule == "linear" and warmup_steps < 1:
            raise ConfigError("warmup_steps", warmup_steps, "must be >= 1 for kl_schedule=linear")
        if kl_schedule == "cyclical" and cycle_steps < 1:
            raise ConfigError("cycle_steps", cycle_steps, "must be >= 1 for kl_schedule=cyclical")
        if not 0 < cycle_ratio <= 1:
            raise ConfigError("cycle_ratio", cycle_ratio, "must be in (0, 1]")
        self.kl_estimator = require_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)

    def beta_at(self, step: int) -> float:
        """The beta in use after ``step`` training batches."""
        if self.kl_schedule == "constant":
            return self.beta
        return beta_at(step, self.beta, self.kl_schedule, self.warmup_steps, self.cycle_steps, self.cycle_ratio)

    @property
    def reports_iwae(self) -> bool:
        """Whether L_K says more than the ELBO: K > 1 (or it is what is trained)."""
        return self.num_samples > 1

    def check(self, q, prior) -> str:
        """Whether this objective works with this posterior/prior pair (a ConfigError if not), and which
        KL it will log: ``analytic`` or ``monte_carlo``. ``q`` is any posterior of the family."""
        analytic = has_analytic_kl(q, prior)
        if self.kl_estimator == "analytic" and not analytic:
            raise ConfigError("kl_estimator", self.kl_estimator,
                              f"but {type(q).__name__} against {type(prior).__name__} has no closed-form KL: "
                              f"use auto or monte_carlo")
        return "analytic" if analytic and self.kl_estimator != "monte_carlo" else "monte_carlo"

    def sample_terms(self, x: torch.Tensor, q, decode: Callable[[torch.Tensor], torch.Tensor], prior,
                     likelihood: Likelihood, need_log_ratio: bool):
        """Draw K samples and evaluate what every objective needs from them: the start of a ``forward``.

        Draws K = ``num_samples`` reparameterised samples z_k of q (gradients flow through them) and
        returns log p(x|z_k) [K, B], log p(z_k) - log q(z_k|x) [K, B] (None unless needed: a
        Monte-Carlo KL or ``need_log_ratio``, e.g. for the IWAE bound), kl [B] (analytic or Monte
        Carlo, as ``kl_estimator`` says) and kl_per_dim [B, D] or None. The ELBO is then
        ``recon = -log_px_z.mean(0)``, ``elbo = -(recon + kl)``, and L_K ``iwae_bound(log_px_z + log_ratio)``.
        """
        if self.one_sample(q, prior, need_log_ratio):
            # one sample, drawn and decoded without the sample axis ([B, D]), which log p(x|z) gets back
            z, log_ratio = q.rsample_one(), None
            log_px_z = likelihood.log_prob(x, full_precision(decode(z)), x.dim() - 1)[None]  # [1, B]
        else:
            z, log_ratio = self.draw(q, prior, need_log_ratio)
            log_px_z = likelihood.log_prob(x, full_precision(decode(z)), x.dim() - 1)  # [K, B], summed in float32+
        kl, kl_per_dim = self.kl_terms(q, prior, log_ratio)
        return log_px_z, log_ratio, kl, kl_per_dim

    def one_sample(self, q, prior, need_log_ratio: bool) -> bool:
        """Whether this step draws one sample without the sample axis: K = 1, a closed-form KL, no log-density
        needed, and an objective that draws as :class:`Objective` does (a ``draw`` or ``sample_terms`` of its own
        would be bypassed)."""
        return (self.num_samples == 1 and not need_log_ratio and type(self)._draws_as_built
                and self.analytic(q, prior))

    #: Whether the class keeps Objective's ``draw`` and ``sample_terms`` (set for each subclass).
    _draws_as_built = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._draws_as_built = cls.draw is Objective.draw and cls.sample_terms is Objective.sample_terms

    def one_sample_recon(self, x: torch.Tensor, q, decode: Callable[[torch.Tensor], torch.Tensor],
                         likelihood: Likelihood) -> torch.Tensor:
        """-log p(x|z) [B] for one reparameterised z ~ q(z|x) per example: the reconstruction term of K = 1,
        drawn and decoded without a sample axis (``q.rsample_one()``, ``likelihood.nll``): on a small model
        the ELBO's training step is then as short as a hand-written one."""
        return likelihood.nll(x, full_precision(decode(q.rsample_one())), x.dim() - 1)

    def analytic(self, q, prior) -> bool:
        """Whether the KL of this pair is the closed form (``kl_estimator`` is not monte_carlo and the pair has
        one): no log-density of a sample is needed then."""
        return self.kl_estimator != "monte_carlo" and has_analytic_kl(q, prior)

    def draw(self, q, prior, need_log_ratio: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """K samples z [K, B, D] of q, and log p(z_k) - log q(z_k|x) [K, B] when a Monte-Carlo KL or
        ``need_log_ratio`` needs it (else None)."""
        if need_log_ratio or not self.analytic(q, prior):
            z, log_q = q.rsample_and_log_prob(self.num_samples)  # [K, B, D], [K, B]
            return z, prior.log_prob(z) - log_q
        # the ELBO with an analytic KL: no log-density to evaluate, on the training's hot path
        return q.rsample(self.num_samples), None

    def kl_terms(self, q, prior, log_ratio: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The logged KL as every objective gives it: analytic where the pair has a closed form (unless
        ``kl_estimator=monte_carlo``), else -mean log p(z)/q(z) over the samples ([K, B] -> [B]); and
        the KL per latent dimension [B, D] where the analytic one factorises, else None."""
        analytic = None if self.kl_estimator == "monte_carlo" else analytic_kl(q, prior)
        if analytic is None and self.kl_estimator == "analytic":
            self.check(q, prior)  # raises: the pair has no closed form
        return analytic if analytic is not None else (-log_ratio.mean(dim=0), None)

    def forward(self, x: torch.Tensor, q, decode: Callable[[torch.Tensor], torch.Tensor], prior,
                likelihood: Likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        """The terms of a batch x [B, *event] with q(z|x) from the encoder; ``step``: the training batches
        seen so far (what schedules read)."""
        raise NotImplementedError

    def set_training_size(self, num_examples: int) -> None:
        """Told N, the number of training examples, before training or testing starts (the VAE passes its
        DataModule's); an objective whose estimate needs N (beta-TCVAE's q(z)) takes it here. By default
        nothing."""

    def own_loss(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """For an objective with an ``optimizer``: the loss of its own parameters on the batch its last
        ``forward`` saw (0-dim), and 0-dim values to log beside it (``train/NAME``). Called once per
        training batch, right after ``forward``; it must not reach the VAE's parameters (detach)."""
        raise NotImplementedError(f"{type(self).__name__} sets an optimizer but does not implement own_loss()")
