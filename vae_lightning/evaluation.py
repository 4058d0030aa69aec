"""Test log-likelihood by importance sampling, and posterior-collapse diagnostics, as torchmetrics."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torchmetrics import Metric

from .likelihoods import Likelihood
from .objectives.base import full_precision


#: Decoder outputs per piece of work on a CPU: 1 MiB of float32, so a piece's activations stay in
#: cache (the NLL then runs at about half the machine's matrix-product rate, twice as fast as with
#: 2^26; see benchmarks/nll_speed.py). An accelerator takes large pieces: they keep it busy.
CPU_ELEMENTS, ACCELERATOR_ELEMENTS = 2**18, 2**26
#: A row block is never smaller than this, so a decoder with large outputs still gets real batches.
MIN_ROWS = 64


@torch.no_grad()
def importance_sampled_log_px(
    x: torch.Tensor,
    q,
    decode: Callable[[torch.Tensor], torch.Tensor],
    prior,
    likelihood: Likelihood,
    num_samples: int = 5000,
    chunk_size: int | None = None,
    max_elements: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x) ~= log (1/S) sum_s p(x, z_s) / q(z_s|x), z_s ~ q(z|x): [B, *event] -> [B].

    ``q`` is the posterior of x (``model.encode(x)``); any posterior family works. The S
    samples are taken ``chunk_size`` at a time and decoded in blocks of the batch's rows, both
    sized (by default) so a piece of work's decoder output holds about ``max_elements`` values
    (:data:`CPU_ELEMENTS` on a CPU, :data:`ACCELERATOR_ELEMENTS` elsewhere), whether a row is 784
    Bernoulli logits or 100 x 32 x 32 mixture parameters; the log-sum-exp is carried from chunk
    to chunk, so memory is bounded whatever S is. Each sample is drawn on its own, for the whole
    batch, and the blocks only split the decoding, so the estimate does not depend on either.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    batch = x.shape[0]
    row = math.prod(likelihood.param_shape(tuple(x.shape[1:])))  # decoder outputs per sample and example
    if max_elements is None:
        max_elements = CPU_ELEMENTS if x.device.type == "cpu" else ACCELERATOR_ELEMENTS
    rows = min(batch, max(MIN_ROWS, max_elements // row))  # examples decoded together
    chunk = chunk_size or max(1, max_elements // (rows * row))
    total = None  # the running log-sum-exp, [B]
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        draws = [q.rsample_and_log_prob(1, generator=generator) for _ in range(k)]
        z, log_q = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])  # [k, B, D], [k, B]
        chunk_total = torch.logsumexp(log_weights(x, z, log_q, decode, prior, likelihood, rows), dim=0)  # [B]
        total = chunk_total if total is None else torch.logaddexp(total, chunk_total)
    return total - math.log(num_samples)


def log_weights(x: torch.Tensor, z: torch.Tensor, log_q: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor],
                prior, likelihood: Likelihood, rows: int) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) [k, B] for samples z [k, B, D] with their log q [k, B],
    decoding ``rows`` examples at a time. The prior is evaluated once for all the blocks (a VampPrior
    encodes its pseudo-inputs at each call), which is why this is not objectives'
    ``log_importance_weights`` applied block by block."""
    log_px_z = torch.cat([likelihood.log_prob(x[i : i + rows], full_precision(decode(z[:, i : i + rows])), x.dim() - 1)
                          for i in range(0, x.shape[0], rows)], dim=1)  # [k, B]
    return full_precision(log_px_z + prior.log_prob(z) - log_q)


class ExampleMean(Metric):
    """The mean of per-example values over all examples seen, from a float64 sum and a count.

    Reduced across processes by summing both, so the mean is exact whatever the shards (Lightning's
    own sync of an epoch mean divides integer counts, off for uneven DDP shards). Updates are
    out-of-place: states reset under inference mode (trainer.validate/test) must still accept
    updates outside it.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total = self.total + values.detach().double().sum()
        self.count = self.count + values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class NegativeLogLikelihood(ExampleMean):
    """Mean -log p(x) over all examples seen, in nats, from per-example estimates of log p(x).

    The same on one process or across DDP ranks (see :class:`ExampleMean`). ``bits_per_dim``
    converts it for data of ``num_dims`` values per example.
    """

    higher_is_better = False

    def __init__(self, num_dims: int, **kwargs):
        super().__init__(**kwargs)
        self.num_dims = num_dims

    def update(self, log_px: torch.Tensor) -> None:
        super().update(-log_px)

    def bits_per_dim(self, nll: torch.Tensor) -> torch.Tensor:
        return nll / (self.num_dims * math.log(2))


class LatentActivity(Metric):
    """Active units and KL per latent dimension over a dataset.

    A unit d is active when Cov_x(E_q[z_d]) = Var_x(mean_d) > ``threshold`` (Burda et al.
    2016 use 0.01); it needs only the posterior's mean, so it works for any posterior.
    ``compute`` returns a dict: ``active_units``, ``variance`` [D] and, when a KL per
    dimension was given (an analytic, factorised KL), ``kl_per_dim`` [D] (mean over examples).
    """

    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        zeros = torch.zeros(latent_dim, dtype=torch.float64)
        self.add_state("sum_mu", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("sum_mu_sq", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("sum_kl", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("kl_count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, mean: torch.Tensor, kl_per_dim: torch.Tensor | None = None) -> None:
        """mean: E_q[z] [B, D]; kl_per_dim: [B, D] or None."""
        mu64 = mean.detach().double()
        self.sum_mu = self.sum_mu + mu64.sum(0)  # out-of-place, as in NegativeLogLikelihood
        self.sum_mu_sq = self.sum_mu_sq + mu64.pow(2).sum(0)
        self.count = self.count + mean.shape[0]
        if kl_per_dim is not None:
            self.sum_kl = self.sum_kl + kl_per_dim.detach().double().sum(0)
            self.kl_count = self.kl_count + mean.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.sum_mu / self.count
        variance = (self.sum_mu_sq / self.count - mean.pow(2)).clamp_min(0)
        out = {"active_units": (variance > self.threshold).sum(), "variance": variance}
        if self.kl_count > 0:
            out["kl_per_dim"] = self.sum_kl / self.kl_count
        return out


def active_units_per_layer(variance: torch.Tensor, layer_dims: Sequence[int], threshold: float = 0.01) -> list[int]:
    """Active units of each layer, from the variance over the data of the posterior's mean [d1 + d2] (what
    :class:`LatentActivity` computes): [active in z1, active in z2]."""
    return [int((v > threshold).sum()) for v in variance.split(list(layer_dims))]
