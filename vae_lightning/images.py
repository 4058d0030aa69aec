"""Pictures of what a VAE learned: reconstructions, prior samples, latent traversals and, for a
2-D latent space, the decoded manifold and a scatter of codes. Written as PNG files in the run
directory, and sent under ``images/`` to the trackers the run logs to (wandb, TensorBoard, MLflow).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .callbacks import QuietCallback
from .errors import VAEUserError
from .steps import batches_seen
from .trackers import log_images

log = logging.getLogger("vae_lightning")

#: Figure sizes in inches at DPI dots per inch: the PNGs are exactly these sizes in pixels.
DPI = 100
FIGSIZES = {
    "reconstructions": (8.0, 5.0),
    "samples": (6.0, 6.5),
    "traversals": (8.0, 7.0),
    "manifold": (7.0, 7.5),
    "latent_scatter": (7.0, 6.0),
}


def png_size(name: str) -> tuple[int, int]:
    """(width, height) in pixels of the PNG called ``name``."""
    w, h = FIGSIZES[name]
    return round(w * DPI), round(h * DPI)


def background(channels: int) -> float:
    """The value of the frame between tiles, and of an empty tile: a light grey (greyscale is drawn
    ink-dark, gray_r; colour as is)."""
    return 0.15 if channels == 1 else 0.85


def tile(images: torch.Tensor, ncol: int, pad: int = 2, pad_value: float | None = None) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] as one [H', W', C] array, ``ncol`` per row, ``pad`` pixels apart."""
    n, c, h, w = images.shape
    nrow = math.ceil(n / ncol)
    if pad_value is None:
        pad_value = background(c)
    grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i, image in enumerate(images):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = image
    return grid.permute(1, 2, 0)


def _show(ax, grid: torch.Tensor) -> None:
    grid = grid.clamp(0, 1).float().numpy()
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")


def _row_ticks(ax, labels: list[str], cell: int, pad: int = 2) -> None:
    ax.set_yticks([pad + i * (cell + pad) + cell / 2 for i in range(len(labels))], labels)
    ax.tick_params(axis="y", length=0)


class ImageLogger(QuietCallback):  # no per-batch hooks: Lightning skips it between batches
    """Render the model's pictures every ``every_n_epochs`` epochs (and after the last one).

    The inputs (validation images picked with ``seed``), the prior noise and the traversal
    range are fixed for the whole run, so the frames of successive epochs compare directly.

      reconstructions   ``num_inputs`` validation images above their reconstructions (means of p(x|z) at z = mu(x))
      samples           means of p(x|z) for ``num_samples`` draws z ~ p(z) from fixed noise
      traversals        the first input's code with each of the ``traversal_dims`` most active dimensions
                        (largest KL where the KL has one per dimension, else largest Var_x E_q[z_d])
                        swept over the prior's quantiles at the N(0, 1) scores -traversal_range ..
                        traversal_range (``traversal_steps`` values; the scores themselves for N(0, I))
      manifold          2-D latent space only: decoded grid at the prior's quantiles 0.05..0.95
      latent_scatter    2-D latent space only: E_q[z] of ``scatter_points`` test images, coloured by label

    It uses only the model's public contract: ``encode(x)`` -> q (``q.mean``, ``q.kl_per_dim(prior)``),
    ``decode_mean(z)``, ``prior.sample(n, generator)``, ``prior.quantiles(probs)`` and ``latent_dim``,
    so any posterior and prior get their pictures.

    Files: ``<dirpath>/<name>/epoch_NNN.png`` (sizes in :data:`FIGSIZES`); also ``images/<name>`` in each
    tracker the run logs to (:func:`vae_lightning.trackers.log_images`), at the step of training batches
    seen. ``every_n_epochs=0`` turns it off. Rank 0 renders; under FSDP (sharded weights) it is skipped.
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 5, num_inputs: int = 16, num_samples: int = 64,
                 traversal_dims: int = 8, traversal_steps: int = 11, traversal_range: float = 3.0,
                 manifold_steps: int = 20, scatter_points: int = 2000, seed: int = 0):
        for key, value, least in [("every_n_epochs", every_n_epochs, 0), ("num_inputs", num_inputs, 1),
                                  ("num_samples", num_samples, 1), ("traversal_dims", traversal_dims, 1),
                                  ("traversal_steps", traversal_steps, 2), ("manifold_steps", manifold_steps, 2),
                                  ("scatter_points", scatter_points, 1)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise VAEUserError(f"callbacks.image_logger.{key}={value!r} must be an integer >= {least}.")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.num_inputs, self.num_samples = num_inputs, num_samples
        self.traversal_dims, self.traversal_steps, self.traversal_range = traversal_dims, traversal_steps, traversal_range
        self.manifold_steps, self.scatter_points, self.seed = manifold_steps, scatter_points, seed
        self._fixed: dict[str, torch.Tensor] | None = None
        self._rendered_epoch = -1

    # -- when ----------------------------------------------------------------------------
    def _due(self, trainer: L.Trainer) -> bool:
        if self.every_n_epochs == 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return False
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and self._due(trainer):
            self.render(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Stopped early (max_time, max_steps, early stopping) or no validation: the final pictures anyway,
        # of the last epoch trained (Lightning has counted it, finished or not, by now).
        last = max(trainer.current_epoch - 1, 0)
        if self.every_n_epochs and trainer.is_global_zero and self._rendered_epoch != last:
            self.render(trainer, pl_module, epoch=last)

    # -- what ----------------------------------------------------------------------------
    def _fixed_inputs(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        """Validation inputs and the test images whose codes are scattered: chosen once, used every time
        (the prior noise comes from ``noise_generator``)."""
        if self._fixed is not None:
            return self._fixed
        generator = torch.Generator().manual_seed(self.seed)
        datamodule = trainer.datamodule
        val_set = getattr(datamodule, "val_set", None)
        if val_set is not None and hasattr(val_set, "__getitems__"):  # in memory or streamed: by index
            pick = torch.randperm(len(val_set), generator=generator)[: self.num_inputs]
            inputs = val_set.__getitems__(pick.tolist())[0]
            scatter_set = getattr(datamodule, "test_set", None) or val_set
            scatter_x, scatter_y = scatter_set.__getitems__(list(range(min(self.scatter_points, len(scatter_set)))))
        else:  # any other DataModule: the first validation batch
            loader = trainer.val_dataloaders
            x, y = next(iter(loader[0] if isinstance(loader, (list, tuple)) else loader))
            inputs, scatter_x, scatter_y = x[: self.num_inputs], x[: self.scatter_points], y[: self.scatter_points]
        self._fixed = {"inputs": inputs.cpu(), "scatter_x": scatter_x.cpu(), "scatter_y": scatter_y.cpu()}
        return self._fixed

    def noise_generator(self) -> torch.Generator:
        """The generator of the prior samples, in the same state at every render: the same noise each
        time (through a learnable prior's current parameters)."""
        return torch.Generator().manual_seed(self.seed + 1)

    def _as_model_input(self, trainer: L.Trainer, pl_module: L.LightningModule, x: torch.Tensor) -> torch.Tensor:
        """What the model sees in evaluation: the DataModule's own transfer hook (uint8 -> [0, 1])."""
        x = x.to(pl_module.device)
        datamodule = trainer.datamodule
        hook = getattr(datamodule, "on_after_batch_transfer", None)
        if hook is not None:
            training = trainer.training
            if training:  # (after the last epoch) evaluation input: no fresh binarisation draw
                trainer.training = False
            try:
                x, _ = hook((x, torch.zeros(len(x), dtype=torch.long, device=x.device)), 0)
            finally:
                if training:
                    trainer.training = True
        return x if x.is_floating_point() else x.float() / 255.0

    @torch.no_grad()
    def render(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int | None = None) -> list[Path]:
        """Draw every picture for the current epoch (or ``epoch``, counted from 0); write the PNGs and log them."""
        epoch = trainer.current_epoch if epoch is None else epoch
        if "fsdp" in type(trainer.strategy).__name__.lower():
            log.warning("ImageLogger: skipped under FSDP (the weights are sharded across processes).")
            self.every_n_epochs = 0
            return []
        import matplotlib

        matplotlib.use("Agg")
        fixed = self._fixed_inputs(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            figures = self._figures(trainer, pl_module, fixed, f"epoch {epoch + 1}, step {batches_seen(trainer)}")
        finally:
            pl_module.train(was_training)
        step = batches_seen(trainer)
        paths = []
        import matplotlib.pyplot as plt

        for name, fig in figures.items():
            path = self.dirpath / name / f"epoch_{epoch:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=DPI)
            plt.close(fig)
            paths.append(path)
        log_images(trainer.loggers, {p.parent.name: p for p in paths}, step, caption=f"epoch {epoch + 1}")
        self._rendered_epoch = epoch
        return paths

    def _figures(self, trainer: L.Trainer, pl_module: L.LightningModule, fixed: dict[str, torch.Tensor],
                 where: str) -> dict[str, Any]:
        import matplotlib.pyplot as plt

        x = self._as_model_input(trainer, pl_module, fixed["inputs"])
        prior = pl_module.prior
        q = pl_module.encode(x)
        mu = q.mean  # [N, D]
        decode = lambda z: pl_module.decode_mean(z).float().cpu()  # noqa: E731
        figures = {}

        # Inputs above their reconstructions, 8 to a row.
        ncol = min(8, len(x))
        recon = decode(mu)
        rows, labels = [], []
        for start in range(0, len(x), ncol):
            block = slice(start, start + ncol)
            pair_x, pair_r = x[block].float().cpu(), recon[block]
            width = ncol - len(pair_x)
            if width:  # a short last row: pad with empty tiles, of the frame's colour (not black or white)
                blank = torch.full((width, *pair_x.shape[1:]), background(pair_x.shape[1]))
                pair_x, pair_r = torch.cat([pair_x, blank]), torch.cat([pair_r, blank])
            rows += [pair_x, pair_r]
            labels += ["input", "reconstruction"]
        fig, ax = plt.subplots(figsize=FIGSIZES["reconstructions"])
        _show(ax, tile(torch.cat(rows), ncol))
        _row_ticks(ax, labels, x.shape[-2])
        ax.set_xticks([])
        ax.set_title(f"Validation images and their reconstructions ({where})")
        fig.tight_layout()
        figures["reconstructions"] = fig

        # Prior samples.
        samples = decode(prior.sample(self.num_samples, generator=self.noise_generator()))
        fig, ax = plt.subplots(figsize=FIGSIZES["samples"])
        _show(ax, tile(samples, math.ceil(math.sqrt(len(samples)))))
        ax.set_axis_off()
        # Two lines: on one, a prior's name and the epoch run off the figure's 6 inches.
        ax.set_title(f"Samples from the prior {type(prior).__name__}\n(fixed noise; {where})")
        fig.tight_layout()
        figures["samples"] = fig

        # Traversals of the most active dimensions around the first input's code: by their KL where the
        # posterior/prior pair has one per dimension, else by how much E_q[z_d] varies over the inputs.
        kl_per_dim = q.kl_per_dim(prior)
        if kl_per_dim is not None:
            activity, measure = kl_per_dim.float().mean(0).cpu(), "KL"
        else:
            activity, measure = mu.float().var(0, unbiased=False).cpu(), "var"
        dims = activity.argsort(descending=True)[: min(self.traversal_dims, len(activity))]
        # The values: the prior's quantiles at these N(0, 1) scores (the scores themselves for N(0, I)), so a
        # learned or mixture prior is traversed over its own range.
        values = torch.linspace(-self.traversal_range, self.traversal_range, self.traversal_steps)
        quantiles = prior.quantiles(torch.distributions.Normal(0.0, 1.0).cdf(values.double())).float().cpu()
        z = mu[:1].float().cpu().repeat(len(dims) * len(values), 1)
        for i, d in enumerate(dims):
            z[i * len(values) : (i + 1) * len(values), d] = quantiles[:, d]
        traversal = decode(z.to(pl_module.device))
        fig, ax = plt.subplots(figsize=FIGSIZES["traversals"])
        _show(ax, tile(traversal, len(values)))
        cell = x.shape[-1]
        ax.set_xticks([2 + i * (cell + 2) + cell / 2 for i in range(len(values))],
                      [f"{round(float(v), 1) + 0.0:+.1f}" for v in values])  # + 0.0: no "-0.0"
        _row_ticks(ax, [f"z{int(d)} ({measure} {float(activity[d]):.2f})" for d in dims], x.shape[-2])
        ax.set_xlabel("N(0, 1) score: the dimension is set to the prior's quantile there\n"
                      "(the other dimensions stay at the input's code)")
        ax.set_title(f"Latent traversals, most active dimensions first ({where})")
        fig.tight_layout()
        figures["traversals"] = fig

        if pl_module.latent_dim == 2:
            probs = torch.linspace(0.05, 0.95, self.manifold_steps, dtype=torch.float64)
            quantiles = prior.quantiles(probs).float().cpu()  # [P, 2]: each marginal's
            grid_x, grid_y = quantiles[:, 0], quantiles[:, 1].flip(0)  # z2 grows upwards
            z1, z2 = torch.meshgrid(grid_x, grid_y, indexing="xy")
            manifold = decode(torch.stack([z1.reshape(-1), z2.reshape(-1)], 1).to(pl_module.device))
            fig, ax = plt.subplots(figsize=FIGSIZES["manifold"])
            _show(ax, tile(manifold, self.manifold_steps))
            step_px = x.shape[-1] + 2
            ticks = list(range(0, self.manifold_steps, max(1, self.manifold_steps // 5)))
            ax.set_xticks([2 + i * step_px + x.shape[-1] / 2 for i in ticks], [f"{grid_x[i]:.1f}" for i in ticks])
            ax.set_yticks([2 + i * step_px + x.shape[-2] / 2 for i in ticks], [f"{grid_y[i]:.1f}" for i in ticks])
            ax.set_xlabel("z1 (the prior's quantiles 0.05 to 0.95)")
            ax.set_ylabel("z2")
            ax.set_title(f"Decoded latent manifold ({where})")
            fig.tight_layout()
            figures["manifold"] = fig

            labels = fixed["scatter_y"].cpu()
            num_classes = getattr(trainer.datamodule, "num_classes", None) or int(labels.max()) + 1
            if labels.dim() == 1 and (labels >= 0).any():  # class labels only (not unlabelled, not factors [N, F])
                figures["latent_scatter"] = self._scatter(trainer, pl_module, fixed["scatter_x"], labels,
                                                          num_classes, where)
        return figures

    def _scatter(self, trainer, pl_module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 where: str):
        """The codes E_q[z] of labelled images in 2-D, one colour per class."""
        import matplotlib.pyplot as plt

        codes = []
        for chunk in images.split(1000):
            codes.append(pl_module.encode(self._as_model_input(trainer, pl_module, chunk)).mean.float().cpu())
        codes = torch.cat(codes)
        cmap = "tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "viridis"
        fig, ax = plt.subplots(figsize=FIGSIZES["latent_scatter"])
        points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap=cmap, s=4, vmin=-0.5, vmax=num_classes - 0.5)
        ticks = range(num_classes) if num_classes <= 20 else None
        fig.colorbar(points, ax=ax, ticks=ticks, label="label")
        ax.set_xlabel("E_q[z_1]")
        ax.set_ylabel("E_q[z_2]")
        ax.set_title(f"Codes of {len(codes)} test images ({where})")
        fig.tight_layout()
        return fig
