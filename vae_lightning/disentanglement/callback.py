"""Disentanglement metrics during training and after testing, on data with known factors.

The metrics sample the whole factor grid (``datamodule.ground_truth``, as disentanglement_lib does),
from a seed of their own, so two evaluations of the same weights give the same numbers, and epochs
compare. One process computes them and hands the numbers to the others, so a run on any number of
processes logs the same values.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning as L
import torch

from ..checks import require_int
from ..errors import VAEUserError
from ..steps import batches_seen
from .metrics import discrete_entropy, evaluate_disentanglement, mutual_info_matrix, resolve_settings, sample_codes
from .plots import captured_factors, normalised_mi, plot_factor_traversals, plot_mi_heatmap

log = logging.getLogger("vae_lightning")


def require_known_factors(datamodule: Any, key: str) -> None:
    """A VAEUserError that says which data has known factors, unless ``datamodule``'s class has them
    (``ground_truth``). Reads nothing: the files may not be downloaded yet."""
    if getattr(type(datamodule), "ground_truth", None) is None and getattr(datamodule, "ground_truth", None) is None:
        raise VAEUserError(f"{key} needs data with known factors (data=dsprites or data=shapes3d); "
                           f"{type(datamodule).__name__} has none: remove it (~{key}) or change the data.")


def ground_truth_of(datamodule: Any, key: str) -> Any:
    """The datamodule's known factors (its whole grid, read when first asked), or a VAEUserError that says
    which data has them."""
    require_known_factors(datamodule, key)
    return datamodule.ground_truth


def run_on_rank_zero(trainer: L.Trainer, compute: Callable[[], Any]) -> Any:
    """``compute()`` on rank 0, its result handed to every process; an error there is raised on every
    process (the others would otherwise wait for the broadcast for ever)."""
    result = None
    if trainer.is_global_zero:
        try:
            result = compute()
        except Exception as e:  # noqa: BLE001 - raised again below, on every process
            result = e
    result = trainer.strategy.broadcast(result, src=0)
    if isinstance(result, Exception):
        raise result
    return result


def encoder_of(model: Any, batch_size: int = 1000):
    """``represent``: uint8 images [n, C, H, W] -> the means of q(z|x) [n, D] (float32, on the CPU), in
    batches, in evaluation mode."""

    @torch.no_grad()
    def represent(images: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            codes = [model.encode(chunk.to(model.device).float() / 255.0).mean.float().cpu()
                     for chunk in images.split(batch_size)]
        finally:
            model.train(was_training)
        return torch.cat(codes)

    return represent


def measure(model: Any, data: Any, seed: int, settings: Mapping[str, Any] | None = None) -> tuple[dict[str, float],
                                                                                             torch.Tensor]:
    """Every metric of :func:`evaluate_disentanglement` for ``model`` on ``data`` (known factors), from
    ``seed``; and the [D, F] normalised mutual information of each latent with each factor (from
    ``num_points`` codes of their own), which the pictures show."""
    represent = encoder_of(model)
    settings = resolve_settings(settings)
    metrics = evaluate_disentanglement(represent, data, torch.Generator().manual_seed(seed), settings)
    codes, factors = sample_codes(represent, data, int(settings["num_points"]), torch.Generator().manual_seed(seed + 1))
    mi = mutual_info_matrix(codes, factors, int(settings["num_bins"]))
    return metrics, normalised_mi(torch.as_tensor(mi), torch.as_tensor(discrete_entropy(factors)))


def checked_settings(key: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` as a dict, checked now (not after an epoch of training): a bad key or value is a
    VAEUserError naming ``key``."""
    settings = dict(settings or {})
    try:
        resolve_settings(settings)
    except ValueError as e:
        raise VAEUserError(f"{key}: {e}.") from None
    return settings


class DisentanglementMetrics(L.Callback):
    """MIG, DCI, SAP, the beta-VAE and FactorVAE scores, modularity, explicitness and the unsupervised
    scores of the mean codes (:func:`~vae_lightning.disentanglement.metrics.evaluate_disentanglement`),
    logged as ``val/dis/<name>`` every ``every_n_validations`` validations of training and as
    ``test/dis/<name>`` after testing (the best checkpoint's, in ``metrics.json`` and the sweep summary).

    ``settings`` shrinks the metrics' sample sizes for the evaluations during training (their defaults
    are disentanglement_lib's, which take minutes on a CPU); ``test_settings`` those of the test
    (``{}``: the reference's). Each evaluation also writes two pictures to ``dirpath``:
    ``mi_heatmap/`` (the latent x factor mutual information) and ``factor_traversals/`` (traversals
    labelled by the factor each latent captures), as ``step_NNNNNNN.png`` (training batches seen) and
    ``test.png``, sent to the run's trackers beside the others (``images/mi_heatmap``, ``images/factor_traversals``).
    """

    def __init__(self, every_n_validations: int = 1, seed: int = 0, settings: Mapping[str, Any] | None = None,
                 test_settings: Mapping[str, Any] | None = None, dirpath: str | Path | None = None,
                 traversal_steps: int = 9, traversal_range: float = 2.5):
        self.every_n_validations = require_int("callbacks.disentanglement.every_n_validations", every_n_validations, 0)
        self.seed = require_int("callbacks.disentanglement.seed", seed, 0)
        self.traversal_steps = require_int("callbacks.disentanglement.traversal_steps", traversal_steps, 2)
        self.settings = checked_settings("callbacks.disentanglement.settings", settings)
        self.test_settings = checked_settings("callbacks.disentanglement.test_settings", test_settings)
        self.dirpath = Path(dirpath) if dirpath else None
        self.traversal_range = float(traversal_range)
        self.validations = 0  # validations of training seen (sanity checks excluded), kept in checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = int(state_dict.get("validations", 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_known_factors(trainer.datamodule, "callbacks.disentanglement")  # a clear error before any training

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.every_n_validations == 0:
            return
        self.validations += 1
        if self.validations % self.every_n_validations == 0:
            self._evaluate(trainer, pl_module, "val", self.settings, f"epoch {trainer.current_epoch + 1}")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate(trainer, pl_module, "test", self.test_settings, "test")

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str, settings: dict, where: str):
        def compute() -> dict[str, float]:
            start = time.perf_counter()
            data = ground_truth_of(trainer.datamodule, "callbacks.disentanglement")
            metrics, mi = measure(pl_module, data, self.seed, settings)
            seconds = time.perf_counter() - start
            shown = "  ".join(f"{k}={v:.3f}" for k, v in metrics.items())
            log.info(f"disentanglement ({where}): {shown}  ({seconds:.1f} s)")
            if self.dirpath is not None:
                self._pictures(trainer, pl_module, data, mi, split, where)
            return metrics

        metrics = run_on_rank_zero(trainer, compute)  # every process logs rank 0's numbers
        for name, value in metrics.items():
            pl_module.log(f"{split}/dis/{name}", float(value), on_step=False, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def _pictures(self, trainer, pl_module, data, mi: torch.Tensor, split: str, where: str) -> None:
        import matplotlib

        from ..trackers import log_images

        matplotlib.use("Agg")
        # By training batch: the preset validates several times an epoch.
        name = f"step_{batches_seen(trainer):07d}.png" if split == "val" else "test.png"
        heatmap = plot_mi_heatmap(mi, data.factor_names, self.dirpath / "mi_heatmap" / name, where)
        images, _ = data.sample(1, torch.Generator().manual_seed(self.seed + 2))
        represent = encoder_of(pl_module)
        code = represent(images)[0]
        scores = torch.linspace(-self.traversal_range, self.traversal_range, self.traversal_steps)
        quantiles = pl_module.prior.quantiles(torch.distributions.Normal(0.0, 1.0).cdf(scores.double())).float().cpu()
        was_training = pl_module.training
        pl_module.eval()
        try:
            traversals = plot_factor_traversals(
                lambda z: pl_module.decode_mean(z.to(pl_module.device)).float().cpu(), code, quantiles, scores,
                captured_factors(mi, data.factor_names), self.dirpath / "factor_traversals" / name, where)
        finally:
            pl_module.train(was_training)
        log_images(trainer.loggers, {"mi_heatmap": heatmap, "factor_traversals": traversals}, batches_seen(trainer),
                   caption=where)
