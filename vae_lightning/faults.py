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
from .callbacks import QuietCallback

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


class NonFiniteGuard(QuietCallback):
    """Stop at the first NaN or Inf in the loss or the gradients, naming the step and the term.

    Every training step is checked, on the device and without waiting for it: after backward, one fused
    kernel (the one fp16 loss scaling uses to find an overflow) looks at the step's loss terms (the VAE's
    ``train_terms``) and every parameter's gradient and raises a flag on the device, which is copied into
    a row of a small buffer: no host-device sync. The buffer is read, one sync for all its rows, every
    ``every_n_steps`` training batches, and before each validation, before any checkpoint is written and
    when training ends. ``auto`` reads it at the loggers' interval (``trainer.log_every_n_steps``, at most
    1000), on the steps whose logging waits for the device anyway; ``1`` reads each step at once, before
    its update (a sync per step: the stop comes before the faulty update, whatever the optimiser, and the
    message names the parameter whose gradient is not finite); ``0`` turns the guard off.
    A fault is reported as found: its step and epoch, the terms' values at that step, and where it was found.

    The trade-off of reading later: training goes on for up to ``every_n_steps - 1`` steps after a
    fault before it stops.
    - With a fused optimiser (Adam, AdamW or SGD with ``fused: true``; the default Adam is), the flag is
      the optimiser's ``found_inf``, as under fp16 loss scaling: from the faulty step on, every update is
      skipped on the device, so the weights and the optimiser's state stay those before the fault.
    - With any other optimiser the faulty update is applied, and the weights may carry the fault until
      the read stops training.
    Either way nothing is saved after a fault: a checkpoint reads the buffer first (and checks the
    weights), so the last checkpoint on disk is the last good one. Under fp16 loss scaling the
    gradients are left to the GradScaler (an overflowing step is skipped by design); the loss terms
    are still checked.
    """

    def __init__(self, every_n_steps: int | str = "auto"):
        if every_n_steps != "auto":
            require_int("callbacks.non_finite_guard.every_n_steps", every_n_steps, 0)
        self.every_n_steps = every_n_steps
        self._every = every_n_steps if every_n_steps != "auto" else 50
        self._set_up([], [])

    def _set_up(self, params: list[torch.nn.Parameter], names: list[str]) -> None:
        self._params, self._param_names = params, names  # the parameters whose gradients are checked
        self._found: torch.Tensor | None = None  # 1.0 once a checked value was not finite (sticky until read)
        self._one: torch.Tensor | None = None  # the 'scale' of the check: the values are multiplied by 1.0
        self._buffer: torch.Tensor | None = None  # [every]: the flag after each step since the last read
        self._rows: tuple[torch.Tensor, ...] = ()  # its elements, as views made once (no indexing per step)
        self._pending: list[tuple[int, int, dict[str, torch.Tensor]]] = []  # (step, epoch, terms) since the read
        self.on_train_batch_end = None  # (set for the batch that ends a reading interval)
        self._skipping: list[torch.optim.Optimizer] = []  # the fused optimisers that read the flag

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_steps == "auto":
            self._every = min(max(int(trainer.log_every_n_steps or 1), 1), 1000)
        else:
            self._every = self.every_n_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        named = [] if scaled else [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self._set_up([p for _, p in named], [n for n, _ in named])
        if not self._every or self._every == 1:
            return
        devices = {p.device for p in self._params} or {pl_module.device}
        if len(devices) > 1:  # a model over several devices: read at once, as every_n_steps=1 does (this fit only)
            self._every = 1
            return
        device = devices.pop()
        self._found = torch.zeros((), dtype=torch.float32, device=device)
        self._one = torch.ones((), dtype=torch.float32, device=device)
        self._buffer = torch.zeros(self._every, dtype=torch.float32, device=device)
        self._rows = self._buffer.unbind(0)
        optimizers = list(trainer.optimizers)
        if not scaled and optimizers and all(_skips_on_found_inf(o) for o in optimizers):
            # Each fused optimiser reads found_inf on its step and leaves everything as it was when it is 1.
            for optimizer in optimizers:
                optimizer.found_inf = self._found
            self._skipping = optimizers

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """After backward, before the weights change: check the step's loss terms and gradients.

        With an objective that has an optimiser of its own, before the VAE's step only: one backward pass
        has given every gradient by then, the objective's parameters' included."""
        if not self._every or (len(trainer.optimizers) > 1 and optimizer is not trainer.optimizers[0]):
            return
        terms = getattr(pl_module, "train_terms", None) or {}
        step = batches_seen(trainer)
        if self._found is None:  # every_n_steps=1: read at once, before the update
            self._check_now(trainer, step, terms)
            return
        if len(self._pending) == len(self._rows):
            self._read(trainer)  # (a full buffer cannot happen when the reads come on time)
        checked = [*terms.values(), *(p.grad for p in self._params if p.grad is not None)]
        if checked:
            try:
                # One kernel for all: found = 1 if any value is NaN or Inf (each is multiplied by 1.0: unchanged).
                torch._amp_foreach_non_finite_check_and_unscale_(checked, self._found, self._one)
            except torch.cuda.OutOfMemoryError:  # (what torch.OutOfMemoryError names in torch >= 2.5)
                raise
            except (NotImplementedError, RuntimeError):  # a backend without it: the same flag, a kernel per tensor
                flags = torch.stack([torch.isfinite(t).all().logical_not() for t in checked]).any()
                torch.maximum(self._found, flags.to(self._found.dtype), out=self._found)
        self._rows[len(self._pending)].copy_(self._found)
        self._pending.append((step, trainer.current_epoch, terms))
        if (step + 1) % self._every == 0:
            # Read after the step's update is queued, on the steps the loggers record: Lightning calls this
            # callback's on_train_batch_end on those steps only (it skips a hook that is None).
            self.on_train_batch_end = self._read_at_batch_end

    on_train_batch_end = None

    def _read_at_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.on_train_batch_end = None
        self._read(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release()  # (Lightning calls no teardown after an exception)

    def _release(self) -> None:
        for optimizer in self._skipping:  # the optimisers are the user's again
            optimizer.__dict__.pop("found_inf", None)
        self._skipping = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """Never save after a fault: read what is pending first, then check the weights themselves."""
        if trainer.state.fn != "fit":
            return
        self._read(trainer)
        weights = [p.detach() for p in pl_module.parameters()]
        if weights and not torch.isfinite(_total_norm(weights)):
            checked = f", checked every {self._every} steps" if self._every > 1 else ""
            self._stop(trainer, f"the weights are not finite at step {batches_seen(trainer)} (epoch "
                                f"{trainer.current_epoch}{checked}), as a checkpoint was to be saved")

    def _read(self, trainer: L.Trainer) -> None:
        """Read the flags of the steps since the last read (the one device sync of the guard) and stop at the
        first that is raised."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        flags = self._buffer[: len(pending)].tolist()
        if not any(flags):
            return
        bad = next(i for i, flag in enumerate(flags) if flag)
        step, epoch, terms = pending[bad]
        if self._skipping:
            skipped = f"the updates from step {step} on were skipped"
        else:
            skipped = f"the update of step {step} and those after it were applied"
        later = ""
        if step + 1 < batches_seen(trainer):
            later = (f" (Found at step {batches_seen(trainer)}: the guard checks every step and reads the checks "
                     f"every {self._every} steps; {skipped}.)")
        self._report(trainer, f"at step {step} (epoch {epoch})", terms, later)
        self._stop(trainer, f"a gradient is not finite at step {step} (epoch {epoch}), the loss terms are finite "
                            f"(callbacks.non_finite_guard.every_n_steps=1 names the parameter)", later)

    def _check_now(self, trainer: L.Trainer, step: int, terms: dict[str, torch.Tensor]) -> None:
        """every_n_steps=1: the step's terms and each parameter's gradient norm, read at once (one sync)."""
        where = f"at step {step} (epoch {trainer.current_epoch})"
        grads = [(name, p.grad) for name, p in zip(self._param_names, self._params) if p.grad is not None]
        norms = torch._foreach_norm([g for _, g in grads], 2, dtype=torch.float32) if grads else []
        means = [t.detach().float().mean() for t in terms.values()]
        if not means and not grads:
            return
        values = torch.stack([*means, *norms]).tolist()  # (one device: the terms' and the gradients')
        self._report(trainer, where, dict(zip(terms, values[:len(means)])))
        for (name, _), norm in zip(grads, values[len(means):]):
            if not math.isfinite(norm):
                self._stop(trainer, f"the gradient of {name} is not finite {where}")

    def _report(self, trainer: L.Trainer, where: str, terms: dict[str, torch.Tensor | float], later: str = "") -> None:
        """Stop when one of a step's terms (their batch means) is not finite, naming it."""
        if not terms:
            return
        values = {name: value if isinstance(value, float) else float(value.detach().float().mean())
                  for name, value in terms.items()}
        if all(math.isfinite(v) for v in values.values()):
            return
        bad_terms = [name for name, value in values.items() if not math.isfinite(value) and name != "loss"]
        what = " and ".join(f"the {name} term" for name in bad_terms) or "the loss"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        self._stop(trainer, f"the loss is not finite {where}: {what} ({shown})", later)

    @staticmethod
    def _stop(trainer: L.Trainer, what: str, later: str = "") -> None:
        last = _last_checkpoint(trainer)
        raise NonFiniteError(
            f"Training stopped: {what}.{later} The last good checkpoint is {last or 'none (no epoch finished)'}. "
            f"Try a lower model.optimizer.lr, trainer.gradient_clip_val=1.0, or a larger model.likelihood.min_sigma."
        )


def _skips_on_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimiser's step reads ``found_inf`` and then changes nothing: the fused kernels do."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) and optimizer.defaults.get("fused"))


class CheckpointOnSignal(QuietCallback):
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
