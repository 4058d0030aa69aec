"""Faults that must lose nothing: atomic checkpoints, a stop on NaN/Inf, a checkpoint on SIGTERM."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .checks import require_int
from .errors import VAEUserError
from .steps import batches_seen

log = logging.getLogger("vae_lightning")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, then rename over it.

    A rename within one directory is atomic, so a kill during a save leaves the
    previous ``last.ckpt`` whole, never a truncated one. (Writing through the
    system temp directory, as the default does, turns the rename into a copy
    when that directory is on another filesystem.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class NonFiniteError(VAEUserError):
    """The loss or a gradient became NaN or Inf."""


class NonFiniteGuard(L.Callback):
    """Stop at the first NaN or Inf in the loss or the gradients, naming the step and the term.

    Checks every ``every_n_steps`` training batches; each check waits for the device, which costs
    nothing on a CPU but stalls a GPU's queue, so ``auto`` checks every step on a CPU and every 100
    on an accelerator. Between checks a fault can reach the weights: before any checkpoint is
    written the weights are checked too, so nothing is saved after a fault and the last checkpoint
    on disk is the last good one.
    """

    def __init__(self, every_n_steps: int | str = "auto"):
        if every_n_steps != "auto":
            require_int("callbacks.non_finite_guard.every_n_steps", every_n_steps, 0)
        self.every_n_steps = every_n_steps
        self._every = every_n_steps if every_n_steps != "auto" else 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps == "auto":
            self._every = 1 if trainer.strategy.root_device.type == "cpu" else 100

    def _due(self, trainer: L.Trainer) -> bool:
        return self._every > 0 and batches_seen(trainer) % self._every == 0

    def _where(self, trainer: L.Trainer) -> str:
        checked = f", checked every {self._every} steps" if self._every > 1 else ""
        return f"at step {batches_seen(trainer)} (epoch {trainer.current_epoch}{checked})"

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """After backward, before the weights change: the loss terms first, then every gradient.

        With an objective that has an optimiser of its own, before the VAE's step only: one backward pass
        has given every gradient by then, the objective's parameters' included."""
        if not self._due(trainer) or (len(trainer.optimizers) > 1 and optimizer is not trainer.optimizers[0]):
            return
        # The batch means of the step's terms, which the VAE publishes as `train_terms` (0-dim tensors).
        terms = getattr(pl_module, "train_terms", None) or {}
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        # fp16 loss scaling: an overflowing step is skipped by the GradScaler, by design.
        grads = [] if scaled else [p.grad for p in pl_module.parameters() if p.grad is not None]
        checked = [t.reshape(1).float() for t in terms.values()]
        if grads:
            checked.append(_total_norm(grads).reshape(1).float())  # one fused pass over all gradients
        if not checked or torch.isfinite(torch.cat(checked)).all():  # the one device sync of the step
            return
        if any(not math.isfinite(float(v)) for v in terms.values()):
            bad = [name for name, value in terms.items() if not math.isfinite(float(value)) and name != "loss"]
            what = " and ".join(f"the {name} term" for name in bad) or "the loss"
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            self._stop(trainer, f"the loss is not finite {self._where(trainer)}: {what} ({shown})")
        for name, param in pl_module.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                self._stop(trainer, f"the gradient of {name} is not finite {self._where(trainer)}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """Between checks a fault may have reached the weights: never save them then."""
        if self._every == 1 or not trainer.training:
            return
        weights = [p.detach() for p in pl_module.parameters()]
        if weights and not torch.isfinite(_total_norm(weights)):
            self._stop(trainer, f"the weights are not finite {self._where(trainer)}, as a checkpoint was to be saved")

    @staticmethod
    def _stop(trainer: L.Trainer, what: str) -> None:
        last = _last_checkpoint(trainer)
        raise NonFiniteError(
            f"Training stopped: {what}. The last good checkpoint is {last or 'none (no epoch finished)'}. "
            f"Try a lower model.optimizer.lr, trainer.gradient_clip_val=1.0, or a larger model.likelihood.min_sigma."
        )


class CheckpointOnSignal(L.Callback):
    """On SIGTERM (Lightning stops after the current batch), save ``last.ckpt`` so the run can resume.

    Unlike Lightning's ``OnExceptionCheckpoint`` it saves on SIGTERM only: after a NaN the
    state is not worth keeping, and the last good ``last.ckpt`` must not be overwritten.

    Resume with the same run directory (``hydra.run.dir=<run dir>``: ``ckpt_path=auto``
    finds ``checkpoints/last.ckpt``) or with ``ckpt_path=<run dir>/checkpoints/last.ckpt``.
    """

    def __init__(self, dirpath: str | os.PathLike, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                log.info(f"SIGTERM: saved {self.path} at step {batches_seen(trainer)}; resume with "
                         f"ckpt_path={self.path}")


def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all tensors together: non-finite as soon as one value is."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6, foreach kernels
        return torch.nn.utils.get_total_norm(tensors)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _last_checkpoint(trainer: L.Trainer) -> str:
    checkpoint = trainer.checkpoint_callback
    for attr in ("last_model_path", "best_model_path"):
        path = getattr(checkpoint, attr, "") if checkpoint is not None else ""
        if path and os.path.exists(path):
            return path
    return ""
