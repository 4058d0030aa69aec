"""FactorVAE (Kim & Mnih 2018): the ELBO plus beta times a discriminator's estimate of the total correlation
of the aggregate posterior q(z) = E_x q(z|x).

    TC = KL(q(z) || prod_d q(z_d)) = E_q(z)[log q(z) - log prod_d q(z_d)]

Density-ratio trick: a classifier D trained to tell samples of q(z) (class 0) from samples of
prod_d q(z_d) (class 1) tends to D(z) = q(z) / (q(z) + prod_d q(z_d)), the probability of class 0, so

    log D(z) / (1 - D(z)) = logit_0(z) - logit_1(z)  ->  log q(z) - log prod_d q(z_d)
    TC ~ E_q(z)[logit_0(z) - logit_1(z)]                    (``tc``, per example: the mean over its K samples)

Samples of prod_d q(z_d) are the batch's codes with each latent dimension shuffled across the batch on
its own (:func:`permute_dims`). Kim & Mnih shuffle the codes of a second batch; here they are the same
batch's codes, detached, as in disentanglement_lib: no second encoder pass, every example of the batch
trains the VAE, and the data stay one batch per VAE update (which the resume position and the per-batch
seeds count on). A shuffled code takes each dimension from a different example (of B, or K * B codes),
so it is still a draw from the product of the batch's marginals.

Per batch, two updates (see :class:`vae_lightning.objectives.Objective`):
  the VAE  recon + kl + beta * tc, in which D's parameters are constants
           (beta is the paper's gamma; the KL keeps weight 1, and the KL schedule applies to beta);
  D        d_loss = -1/2 [mean_z log D(z) + mean_z log(1 - D(shuffled z))] on the detached codes, with its
           own optimiser (``optimizer``; the paper's Adam, lr 1e-4, betas (0.5, 0.9)).

Logged: ``tc`` per split; ``d_loss`` and ``d_acc`` (the discriminator's accuracy on the 2 N codes, 0.5 by
chance) for training from D's own update, and for validation and test on their batches.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import require_int, require_number, require_sizes
from ..errors import ConfigError
from .base import Objective, Terms, full_precision, iwae_bound

#: The paper's discriminator: 6 hidden layers of 1000 units.
PAPER_HIDDEN_DIMS = (1000,) * 6


def permute_dims(codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each latent dimension shuffled across the codes on its own: [N, D] -> [N, D], a sample of the product
    of the N codes' marginals (dimension d of row n comes from row pi_d(n), one permutation per dimension)."""
    keys = torch.rand(codes.shape, generator=generator, device=codes.device)
    return codes.gather(0, keys.argsort(dim=0))


class Discriminator(nn.Module):
    """An MLP z [N, D] -> 2 logits [N, 2] (class 0: from q(z); class 1: from prod_d q(z_d)), LeakyReLU
    between its layers."""

    def __init__(self, latent_dim: int, hidden_dims: Sequence[int] = PAPER_HIDDEN_DIMS, negative_slope: float = 0.2):
        super().__init__()
        sizes = [require_int("latent_dim", latent_dim, 1), *require_sizes("hidden_dims", hidden_dims)]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(negative_slope)]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FactorVAE(Objective):
    """Training minimises recon + kl + beta * tc (beta: Kim & Mnih's gamma), with K samples of z; a
    discriminator, trained alongside with its own optimiser, gives tc.

    latent_dim:     the size of the codes (built from a config: the posterior's, which it asks for);
    hidden_dims:    the discriminator's hidden layers (the paper's: six of 1000);
    negative_slope: of its LeakyReLUs (0.2);
    optimizer:      a partial building the discriminator's optimiser (default: Adam, lr 1e-4, betas (0.5, 0.9)).

    The logged ``kl`` and ``elbo`` are those of every objective. On its own, outside the VAE, the loss of
    :meth:`forward` also reaches the discriminator: train it on :meth:`discriminator_loss` only.
    """

    def __init__(self, num_samples: int = 1, beta: float = 10.0, kl_schedule: str = "constant", warmup_steps: int = 0,
                 cycle_steps: int = 0, cycle_ratio: float = 0.5, kl_estimator: str = "auto",
                 latent_dim: int | None = None, posterior: Any = None,
                 hidden_dims: Sequence[int] = PAPER_HIDDEN_DIMS, negative_slope: float = 0.2,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None):
        super().__init__(num_samples, beta, kl_schedule, warmup_steps, cycle_steps, cycle_ratio, kl_estimator)
        # The posterior is read, not kept: it belongs to the VAE (a second reference would be a second
        # copy of its weights in the state_dict).
        if posterior is not None:
            latent_dim = posterior.latent_dim
        if latent_dim is None:
            raise ConfigError("latent_dim", latent_dim, "is needed to size the discriminator (the posterior's "
                                                        "latent_dim when the objective is built from a config)")
        self.latent_dim = require_int("latent_dim", latent_dim, 1)
        slope = require_number("negative_slope", negative_slope, least=0)
        self.discriminator = Discriminator(self.latent_dim, hidden_dims, slope)
        if optimizer is not None and not callable(optimizer):
            raise ConfigError("optimizer", optimizer, "must be a partial (_partial_: true) building an optimiser")
        self.optimizer = optimizer or functools.partial(torch.optim.Adam, lr=1e-4, betas=(0.5, 0.9))
        self._codes: torch.Tensor | None = None  # the last training batch's codes, detached, for own_loss

    def check(self, q, prior) -> str:
        if q.mean.shape[-1] != self.latent_dim:
            raise ConfigError("latent_dim", self.latent_dim,
                              f"but q(z|x) has {q.mean.shape[-1]} latent dimensions: build the discriminator for them")
        return super().check(q, prior)

    def tc_estimate(self, codes: torch.Tensor) -> torch.Tensor:
        """logit_0 - logit_1 = log D/(1 - D) of each code, whose mean over codes of q(z) estimates TC:
        [N, D] -> [N]."""
        logits = full_precision(self.discriminator(codes))
        return logits[:, 0] - logits[:, 1]

    def discriminator_terms(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's loss and whether it was right, per code, on the codes (class 0) and their
        shuffle (class 1): [N, D] -> ([2, N], [2, N]), row 0 the codes, row 1 the shuffled ones."""
        both = torch.cat([codes, permute_dims(codes)])  # [2N, D]
        logits = full_precision(self.discriminator(both)).unflatten(0, (2, codes.shape[0]))  # [2, N, 2]
        labels = torch.arange(2, device=codes.device)[:, None].expand(2, codes.shape[0])  # [2, N]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(2, -1)
        right = (logits.argmax(-1) == labels).to(loss.dtype)
        return loss, right

    def discriminator_loss(self, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-1/2 [mean log D(z) + mean log(1 - D(shuffled z))] on codes [N, D] (detach them first), and its
        ``d_loss`` and ``d_acc`` (0-dim, detached)."""
        loss, right = self.discriminator_terms(codes)
        loss = loss.mean()
        return loss, {"d_loss": loss.detach(), "d_acc": right.mean()}

    def own_loss(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._codes is None:
            raise RuntimeError("FactorVAE.own_loss() needs a forward pass on a training batch first.")
        codes, self._codes = self._codes, None
        return self.discriminator_loss(codes)

    def forward(self, x, q, decode, prior, likelihood, step: int = 0, with_iwae: bool = False) -> Terms:
        beta = self.beta_at(step)
        z, log_ratio = self.draw(q, prior, with_iwae)  # [K, B, D]
        log_px_z = likelihood.log_prob(x, full_precision(decode(z)), x.dim() - 1)  # [K, B]
        kl, kl_per_dim = self.kl_terms(q, prior, log_ratio)
        recon = -log_px_z.mean(dim=0)  # [B]
        codes = z.reshape(-1, z.shape[-1])  # the K * B codes of q(z): [N, D]
        tc = self.tc_estimate(codes).view(z.shape[:2]).mean(0)  # [B]
        extras = {"tc": tc}
        if self.training:
            self._codes = codes.detach()  # for the discriminator's own update (own_loss)
        else:  # the discriminator's loss and accuracy on evaluation batches, per example
            loss, right = self.discriminator_terms(codes.detach())
            extras["d_loss"] = loss.mean(0).view(z.shape[:2]).mean(0)
            extras["d_acc"] = right.mean(0).view(z.shape[:2]).mean(0)
        iwae = iwae_bound(log_px_z + log_ratio) if with_iwae else None
        return Terms(recon=recon, kl=kl, elbo=-(recon + kl), loss=recon + kl + beta * tc, iwae=iwae,
                     kl_per_dim=kl_per_dim, beta=beta, extras=extras)
