"""The VampPrior (Tomczak and Welling 2018): the model's own posterior at M learned pseudo-inputs, mixed.

    p(z) = (1/M) sum_m q(z | u_m),    u_m = sigmoid(v_m) in (0, 1)^input_shape

Each pseudo-input u_m has the shape of one data example and goes through the model's own encoder and
posterior family, so the prior follows the encoder as it learns. There is no closed-form KL against
q(z|x): the objective estimates it by Monte Carlo from its own samples (``kl_estimator`` says
``monte_carlo``).

Pseudo-inputs. The paper makes them with a linear layer (no bias) applied to the M one-hot vectors,
followed by a hardtanh onto [0, 1]: a linear layer applied to the identity is just its weight matrix, so
that is a free [M, *input_shape] parameter squashed onto [0, 1]. Here the squashing is a sigmoid rather
than the hardtanh (a clamp): a value clamped at 0 or 1 gets no gradient and can never come back, a
sigmoid keeps a gradient everywhere. The values stay in (0, 1), where the data lives.
``init: uniform`` (the default) starts every value of every pseudo-input at an independent U(0, 1)
draw, random images like the paper's; ``init: gray`` starts them all near mid-gray,
sigmoid(0.01 * N(0, 1)) = 0.5 +- 0.0025, a little noise so the components do not stay identical. The
draws come from the run's seed by a generator of their own: choosing this prior changes no other draw.

The encoder and the posterior family are the VAE's: it registers them, trains them, moves them to the
device and saves them. They are held here in a plain tuple, not as submodules: as submodules they
would be saved a second time in the state dict (``prior.encoder.*`` beside ``encoder.*``, two copies a
checkpoint would have to keep equal), and a prior built on its own must be moved with its encoder.

Components need q(z|u_m).log_prob(z) at any z, evaluated with broadcasting ([..., 1, D] against the
M posteriors' [M, D]): the diagonal and full-covariance Gaussians have it. A posterior whose density
is known only at its own samples (a normalising flow, through ``rsample_and_log_prob``) cannot be a
component, and is refused when the prior is built.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import require_choice, require_int
from ..errors import ConfigError
from ..posteriors.base import Posterior, PosteriorFamily
from ..posteriors.diagonal_gaussian import DiagonalGaussian
from .base import Prior

INITS = ("uniform", "gray")


class VampPrior(Prior):
    """(1/M) sum_m q(z | u_m) over M = ``num_pseudo_inputs`` learned pseudo-inputs u_m of ``input_shape``."""

    #: log_prob takes z in chunks of rows so that no intermediate holds more values than this
    #: (rows x M x D: 64 MiB in float32), whatever the number of samples (the test NLL's are many).
    max_elements = 2**24

    def __init__(self, latent_dim: int, input_shape: Sequence[int], encoder: nn.Module,
                 posterior: PosteriorFamily, num_pseudo_inputs: int = 500, init: str = "uniform"):
        super().__init__(latent_dim)
        num = require_int("num_pseudo_inputs", num_pseudo_inputs, 1)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pseudo_input_logits = nn.Parameter(_initial_logits((num, *self.input_shape),
                                                                require_choice("init", init, INITS)))
        # Not submodules (see the module docstring): their weights belong to the VAE, saved once.
        self._networks = (encoder, posterior)
        _require_broadcasting_log_prob(encoder, posterior, self.pseudo_inputs.detach())

    @property
    def num_pseudo_inputs(self) -> int:
        return self.pseudo_input_logits.shape[0]

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_m in (0, 1): [M, *input_shape]."""
        return torch.sigmoid(self.pseudo_input_logits)

    def components(self, pseudo_inputs: torch.Tensor | None = None) -> Posterior:
        """q(z | u_m) for the pseudo-inputs (by default all M), a posterior over a batch of M."""
        encoder, posterior = self._networks
        return posterior(encoder(self.pseudo_inputs if pseudo_inputs is None else pseudo_inputs))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log (1/M) sum_m q(z | u_m), by logsumexp over the components: [..., D] -> [...]."""
        components = self.components()  # a batch of M posteriors, encoded once for all of z
        if isinstance(components, DiagonalGaussian):
            return _diagonal_mixture_log_prob(z, components.loc, components.logvar)
        rows = z.reshape(-1, 1, z.shape[-1])  # [N, 1, D], against the components' [M, D]
        per_chunk = max(1, self.max_elements // (self.num_pseudo_inputs * z.shape[-1]))
        log_mix = [torch.logsumexp(components.log_prob(chunk), dim=-1)  # [n, M] -> [n]
                   for chunk in rows.split(per_chunk)]
        return (torch.cat(log_mix) - math.log(self.num_pseudo_inputs)).reshape(z.shape[:-1])

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A pseudo-input m uniformly at random, then z ~ q(z | u_m): [num, D]."""
        component = torch.randint(self.num_pseudo_inputs, (num,), generator=generator,
                                  device=generator.device if generator is not None else self.device).to(self.device)
        q = self.components(self.pseudo_inputs[component])  # one posterior per draw, a batch of num
        return q.rsample(1, generator=generator)[0]  # [1, num, D] -> [num, D]

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, num_pseudo_inputs={self.num_pseudo_inputs}, "
                f"input_shape={list(self.input_shape)}")


def _diagonal_mixture_log_prob(z: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/M) sum_m N(z; loc_m, diag exp(logvar_m)) by matrix products: [..., D] -> [...].

    sum_d (z_d - mu_md)^2 / s_md^2 = z^2 . (1/s^2)_m - 2 z . (mu/s^2)_m + sum_d mu_md^2 / s_md^2, so the
    [N, M] table of squared distances is two [N, D] x [D, M] products instead of an [N, M, D] tensor:
    the same numbers, in the time of the products (the test NLL evaluates the prior for every sample).
    The three terms nearly cancel where z is near a narrow component, so they are taken in float64."""
    dtype = z.dtype
    z, loc, logvar = z.double(), loc.double(), logvar.double()
    precision = torch.exp(-logvar)  # [M, D]
    rows = z.reshape(-1, z.shape[-1])  # [N, D]
    squared = rows.pow(2) @ precision.T - 2 * rows @ (loc * precision).T + (loc.pow(2) * precision).sum(-1)  # [N, M]
    log_n = -0.5 * (squared + logvar.sum(-1) + z.shape[-1] * math.log(2 * math.pi))  # [N, M]
    log_mix = torch.logsumexp(log_n, dim=-1) - math.log(loc.shape[0])
    return log_mix.reshape(z.shape[:-1]).to(torch.promote_types(dtype, torch.float32))


def _initial_logits(shape: tuple[int, ...], init: str) -> torch.Tensor:
    """The pseudo-inputs' logits v at the start, so that sigmoid(v) is U(0, 1) (``uniform``) or 0.5 +- a
    little (``gray``), from the run's seed by a generator of their own (the global stream is left as it was)."""
    generator = torch.Generator().manual_seed(torch.initial_seed() + 2)
    if init == "gray":
        return 0.01 * torch.randn(shape, generator=generator)
    u = torch.rand(shape, generator=generator).clamp(1e-3, 1 - 1e-3)  # finite logits
    return torch.log(u) - torch.log1p(-u)


def _require_broadcasting_log_prob(encoder: nn.Module, posterior: PosteriorFamily,
                                   pseudo_inputs: torch.Tensor) -> None:
    """A ConfigError unless the posterior's log_prob takes any z [..., 1, D] against a batch of components.

    Tried on two pseudo-inputs, in eval mode and without gradients (a check, not a step)."""
    modules = [m for m in (encoder, posterior) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            q = posterior(encoder(pseudo_inputs[:2]))
            batch = q.mean.shape[0]
            if type(q).log_prob is Posterior.log_prob:
                log_q = None  # a density known only at its own samples
            else:
                try:
                    log_q = q.log_prob(q.mean.new_zeros(3, 1, q.mean.shape[-1]))  # [3, 1, D] -> [3, batch]
                except (NotImplementedError, RuntimeError):
                    log_q = None
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    if log_q is None or tuple(log_q.shape) != (3, batch):
        raise ConfigError("_target_", f"{VampPrior.__module__}.{VampPrior.__qualname__}",
                          f"needs a posterior whose log_prob(z) takes any z and broadcasts ([..., 1, D] against its "
                          f"batch of pseudo-inputs), which {type(q).__name__} does not: choose "
                          f"model/posterior=diagonal_gaussian or full_covariance with model/prior=vamp")
