"""Where a training step's time goes: the framework against a hand-written loop and a minimal
LightningModule of the same model, and the framework with each of its own per-step pieces off in turn.

On a tiny model (one hidden layer of 8, latent 2, batch 16, one thread) the arithmetic is a few
microseconds, so what is measured is the per-step overhead of each layer:

  hand       a hand-written PyTorch loop: the same MLPs and ELBO in plain torch, batches sliced from the
             uint8 training tensor in a fresh random order each epoch, binarised as the framework does
             (u < x), fused Adam
  minimal    a minimal LightningModule of the same model (its training_step is the hand loop's body) and
             the same slicing loader, under the same Trainer settings as the framework, with logger,
             checkpointing, progress bar and summary off: what Lightning itself costs
  framework  what `python train.py` builds (the default callbacks, the csv logger every 50 steps, the
             VAE of parts, the MNIST DataModule), with validation off and the tiny model
  -X         the framework with one piece X off (see PIECES): framework - (-X) is X's cost
  bare       the framework's module and DataModule alone: every callback, the logger and the bar off
  +X         the framework with another setting X (see VARIANTS)

Each arm trains --warmup steps, then --steps timed steps, the time of every batch read at its start
(so a chunk of steps includes everything between two batches: the hooks, the loader, the logging);
per round an arm's figure is the median over chunks of --chunk steps. The arms run one after another
in one process, --rounds times, in an order rotated every round; the table gives the median of the
rounds and, for a shared machine, the 10th percentile of all chunks (interference only ever adds
time). Usage (MNIST under VAE_DATA_DIR; without it, made-up MNIST-shaped data of the same size):

    VAE_DATA_DIR=../shared/data python benchmarks/step_overhead.py --rounds 7 --markdown /tmp/step_overhead.md
    python benchmarks/step_overhead.py --arms hand,minimal,framework --rounds 3   # the headline ratio alone
    ... --clock cpu   # the main thread's CPU time instead of the wall clock: steadier on a busy machine
    taskset -c 1 python benchmarks/step_overhead.py --clock cpu ...   # pinned to one core: steadier still (a VM)
    ... --pieces      # each per-step piece of the framework timed alone inside a running fit, us per call
    ... --count calls # no time: Python function calls per step (or `ops`: PyTorch operators per step),
                      # exact and the same on any machine, however busy

benchmarks/gpu_step.py imports the plain model, the minimal module, the loader and the timer from here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

#: The framework with one of its per-step pieces off: arm name -> (what it is, config overrides).
PIECES = {
    "-seed": ("SeedEveryStep off (a seed per batch)", ["callbacks.seed_every_step=null"]),
    "-guard": ("NonFiniteGuard off (the NaN/Inf check)", ["callbacks.non_finite_guard=null"]),
    "-progress": ("the rich progress bar off",
                  ["callbacks.rich_progress_bar=null", "+trainer.enable_progress_bar=false"]),
    "-logging": ("logging off (no logger, no train logs)", ["logger=none", "trainer.log_every_n_steps=1000000000"]),
    "-checkpoint": ("Checkpoints (the ModelCheckpoint) off",
                    ["callbacks.model_checkpoint=null", "+trainer.enable_checkpointing=false"]),
    "-images": ("ImageLogger off", ["callbacks.image_logger=null"]),
    "-epoch_summary": ("EpochSummary off", ["callbacks.epoch_summary=null"]),
    "-signal": ("CheckpointOnSignal off", ["callbacks.checkpoint_on_signal=null"]),
    "-model_summary": ("PartsSummary off", ["callbacks.model_summary=null"]),
    "-binarize": ("binarisation off (data.binarize=none)", ["data.binarize=none"]),
}
#: The framework with another setting: arm name -> (what it is, config overrides).
VARIANTS = {
    "+modelcheckpoint": ("Lightning's ModelCheckpoint instead of vae_lightning.callbacks.Checkpoints (the default)",
                         ["callbacks.model_checkpoint._target_=lightning.pytorch.callbacks.ModelCheckpoint"]),
    "+guard_every_step": ("the NaN guard reading every step (every_n_steps=1: a sync per step)",
                          ["callbacks.non_finite_guard.every_n_steps=1"]),
}
BARE = ["callbacks=none", "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false",
        "+trainer.enable_model_summary=false", "logger=none", "trainer.log_every_n_steps=1000000000"]
ARMS = {"hand": "hand-written PyTorch loop", "minimal": "minimal LightningModule, same Trainer loop",
        "framework": "the framework (train.py's defaults)", **{k: v[0] for k, v in PIECES.items()},
        **{k: v[0] for k, v in VARIANTS.items()},
        "bare": "the framework's module + DataModule, no callbacks/logger/bar"}


# -- the same model in plain PyTorch -----------------------------------------------------------
class PlainVAE(nn.Module):
    """The framework's MLP VAE (ReLU MLPs, the decoder mirroring the encoder, diagonal Gaussian q with a
    log-variance, N(0, I) prior, Bernoulli decoder, K = 1) in plain torch."""

    def __init__(self, hidden_dims: Sequence[int], latent: int):
        super().__init__()
        self.encoder = _mlp([784, *hidden_dims, 2 * latent])
        self.decoder = _mlp([latent, *reversed(hidden_dims), 784])

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """The negative ELBO, averaged over the batch, of uint8 images [B, 1, 28, 28], binarised here."""
        x = images.float() / 255
        x = (torch.rand_like(x) < x).to(x.dtype).flatten(1)  # dynamic binarisation, as the framework draws it
        loc, logvar = self.encoder(x).chunk(2, dim=-1)
        z = loc + (0.5 * logvar).exp() * torch.randn_like(loc)
        recon = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return (recon + kl).mean()


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(n_in, n_out)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def plain_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


class MinimalModule(L.LightningModule):
    def __init__(self, hidden_dims: Sequence[int], latent: int):
        super().__init__()
        self.vae = PlainVAE(hidden_dims, latent)

    def training_step(self, batch, batch_idx):
        return self.vae.loss(batch[0])

    def configure_optimizers(self):
        return plain_optimizer(self)


class Slices:
    """Batches sliced from one uint8 tensor in a fresh random order each epoch, drawn where the tensor is:
    the hand loop's and the minimal module's loader (an iterable with a length, which Lightning takes)."""

    def __init__(self, images: torch.Tensor, batch: int):
        self.images, self.batch = images, batch
        self.labels = torch.zeros(len(images), dtype=torch.long, device=images.device)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)

    def __iter__(self):
        order = torch.randperm(len(self.images), device=self.images.device)
        for i in range(0, len(order), self.batch):
            index = order[i:i + self.batch]
            yield self.images[index], self.labels[index]


# -- timing ----------------------------------------------------------------------------------------
#: What a step's time is read from: ``wall`` (time.perf_counter, what a user waits) or ``cpu`` (the
#: main thread's CPU time, time.thread_time: with one thread, the work done, and far less disturbed by
#: other processes on a shared machine; on a GPU only ``wall`` means anything).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


class Counting:
    """``--count``: instead of a clock, a count that only the arm's own work advances: Python function calls
    (``calls``: every call and builtin call, through ``sys.setprofile``) or PyTorch operators dispatched
    (``ops``: a ``TorchDispatchMode``, forward, backward and optimiser). Exact, and the same on any
    machine: what a timing on a busy one cannot give. Used as ``with Counting("calls") as clock: ...``."""

    def __init__(self, what: str):
        self.what, self.n = what, 0

    def __call__(self) -> float:
        return float(self.n)

    def _profile(self, frame, event, arg) -> None:
        if event == "call" or event == "c_call":
            self.n += 1

    def __enter__(self) -> "Counting":
        if self.what == "calls":
            sys.setprofile(self._profile)
        else:
            from torch.utils._python_dispatch import TorchDispatchMode

            counting = self

            class CountOps(TorchDispatchMode):
                def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                    counting.n += 1
                    return func(*args, **(kwargs or {}))

            self._mode = CountOps()
            self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.what == "calls":
            sys.setprofile(None)
        else:
            self._mode.__exit__(*exc)


class StepTimer(L.Callback):
    """The clock at the start of each training batch ``first`` .. ``first + count`` (global steps).

    ``sync``: called before each reading (``torch.cuda.synchronize`` on a GPU, or None); a reading per
    batch then makes the host wait for each step, so on a GPU only the window's two ends sync
    (``every_batch=False``) and only the window's total is known."""

    def __init__(self, first: int, count: int, clock: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None, every_batch: bool = True):
        self.first, self.count, self.clock, self.sync, self.every_batch = first, count, clock, sync, every_batch
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if self.first <= step <= self.first + self.count and (
                self.every_batch or step in (self.first, self.first + self.count)):
            if self.sync is not None:
                self.sync()
            self.times.append(self.clock())

    def per_step(self, chunk: int) -> list[float]:
        """Seconds per step of each chunk of ``chunk`` steps (one figure for the whole window when only its
        ends were read)."""
        if len(self.times) == 2 and self.count > 1:
            return [(self.times[1] - self.times[0]) / self.count]
        if len(self.times) != self.count + 1:
            raise RuntimeError(f"the timed window did not complete: {len(self.times) - 1} of {self.count} steps "
                               f"(raise the epoch's length or lower --warmup/--steps)")
        edges = list(range(0, self.count + 1, chunk))
        return [(self.times[b] - self.times[a]) / (b - a) for a, b in zip(edges, edges[1:])]


class Setting:
    def __init__(self, args: argparse.Namespace, data_dir: Path, out_dir: Path):
        self.args, self.data_dir, self.out_dir = args, data_dir, out_dir
        self.clock = CLOCKS[args.clock]
        self.images = None

    @property
    def hidden_dims(self) -> list[int]:
        return [self.args.hidden]

    def train_images(self) -> torch.Tensor:
        """The framework's training split (uint8 [55000, 1, 28, 28]), read once."""
        if self.images is None:
            from vae_lightning.data import MNISTDataModule

            dm = MNISTDataModule(data_dir=self.data_dir, batch_size=self.args.batch, download=False)
            dm.setup("fit")
            self.images = dm.train_set.images
        return self.images

    def timer(self) -> StepTimer:
        return StepTimer(self.args.warmup, self.args.steps, self.clock)


def time_hand(s: Setting) -> list[float]:
    a = s.args
    torch.manual_seed(0)
    model = PlainVAE(s.hidden_dims, a.latent)
    optimizer = plain_optimizer(model)
    times = []
    for step, (images, _) in enumerate(Slices(s.train_images(), a.batch)):
        if step >= a.warmup:
            times.append(s.clock())
        if step == a.warmup + a.steps:
            break
        loss = model.loss(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    edges = list(range(0, a.steps + 1, a.chunk))
    return [(times[j] - times[i]) / (j - i) for i, j in zip(edges, edges[1:])]


def time_minimal(s: Setting) -> list[float]:
    a = s.args
    torch.manual_seed(0)
    timer = s.timer()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=a.warmup + a.steps + 1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, precision="32-true", callbacks=[timer],
                        default_root_dir=s.out_dir)
    trainer.fit(MinimalModule(s.hidden_dims, a.latent), train_dataloaders=Slices(s.train_images(), a.batch))
    return timer.per_step(a.chunk)


def framework_config(s: Setting, *overrides: str):
    from hydra import compose, initialize_config_dir

    a = s.args
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            "logger=csv", f"paths.data_dir={s.data_dir}", f"paths.output_dir={s.out_dir}", "seed=0", "test=false",
            "ckpt_path=null", "data.download=false", f"data.batch_size={a.batch}", f"model.latent_dim={a.latent}",
            f"model.encoder.hidden_dims=[{a.hidden}]", "trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
            f"+trainer.max_steps={a.warmup + a.steps + 1}", *overrides])


def time_framework(s: Setting, *overrides: str) -> list[float]:
    """What vae_lightning.run.train builds (datamodule, model, callbacks, loggers, trainer), timed."""
    import warnings

    import hydra
    from omegaconf import OmegaConf

    import vae_lightning.build  # noqa: F401 - the config's resolvers
    from vae_lightning.module import VAE

    cfg = framework_config(s, *overrides)
    L.seed_everything(0, verbose=False)
    dm = hydra.utils.instantiate(cfg.data)
    model = VAE.from_config(OmegaConf.to_container(cfg, resolve=True), dm.input_shape)
    timer = s.timer()
    callbacks = [timer, *(hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None)]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checkpoint's monitor without validation, Bernoulli on intensities
        trainer.fit(model, datamodule=dm)
    return timer.per_step(s.args.chunk) if isinstance(timer, StepTimer) else []


def measure(arm: str, s: Setting) -> list[float]:
    if arm == "hand":
        return time_hand(s)
    if arm == "minimal":
        return time_minimal(s)
    if arm == "framework":
        return time_framework(s)
    if arm == "bare":
        return time_framework(s, *BARE)
    return time_framework(s, *(PIECES.get(arm) or VARIANTS[arm])[1])


class PieceTimer(L.Callback):
    """``--pieces``: at one training step of a running fit (after its backward, before its update), each of the
    framework's per-step pieces is called ``reps`` times alone and timed: microseconds per call. A piece's cost
    is then read directly, not as the difference of two whole steps, which a busy machine blurs by more than
    the piece. Gradients, generators and the guard's state are put back after each piece."""

    def __init__(self, at: int, reps: int):
        self.at, self.reps = at, reps
        self.results: dict[str, float] = {}

    def _time(self, name: str, fn: Callable[[], object], reps: int | None = None) -> None:
        reps = reps or self.reps
        for _ in range(max(reps // 20, 10)):
            fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        self.results[name] = (time.perf_counter() - start) / reps * 1e6

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step != self.at:
            return
        from lightning.pytorch.trainer import call

        from vae_lightning.callbacks import ProgressBar, SeedEveryStep
        from vae_lightning.faults import NonFiniteGuard

        callbacks = {type(c): c for c in trainer.callbacks}
        guard, seed, bar = callbacks[NonFiniteGuard], callbacks[SeedEveryStep], callbacks[ProgressBar]
        grads = [p.grad.clone() for p in pl_module.parameters()]
        rng = torch.get_rng_state()
        uint8 = self.images[:16]
        x = (torch.rand(uint8.shape) < uint8.float() / 255).float()
        dims = [(p.shape[1], p.shape[0]) for p in pl_module.encoder.parameters() if p.dim() == 2]
        plain = PlainVAE([n_out for _, n_out in dims[:-1]], pl_module.latent_dim)

        def plain_flat():  # the same maths on the same binarised batch, flat, as the minimal module writes it
            xf = x.flatten(1)
            loc, logvar = plain.encoder(xf).chunk(2, dim=-1)
            z = loc + (0.5 * logvar).exp() * torch.randn_like(loc)
            recon = F.binary_cross_entropy_with_logits(plain.decoder(z), xf, reduction="none").sum(-1)
            (recon + 0.5 * (loc.pow(2) + logvar.exp() - 1 - logvar).sum(-1)).mean().backward()

        self._time("the module of parts: forward and backward of a K = 1 ELBO step",
                   lambda: pl_module(x, with_iwae=False, step=self.at).loss.mean().backward())
        self._time("the same maths written flat (the minimal module's training_step, binarised input)", plain_flat)
        self._time("the module's per-step bookkeeping (_logs_due)", lambda: pl_module._logs_due(1))
        dm = trainer.datamodule
        batch = (uint8, torch.zeros(16, dtype=torch.long))
        self._time("the DataModule's on_after_batch_transfer (uint8 -> float, dynamic binarisation)",
                   lambda: dm.on_after_batch_transfer(batch, 0))
        def in_line():
            xf = uint8.float() / 255.0
            return (torch.rand_like(xf) < xf).to(xf.dtype)

        self._time("the same ops in line", in_line)
        terms = {"recon": torch.zeros(16), "kl": torch.zeros(16), "loss": torch.zeros(())}
        checked = [*terms.values(), *(p.grad for p in guard._params if p.grad is not None)]
        found, one, row = torch.zeros(()), torch.ones(()), torch.zeros(())
        self._time("NonFiniteGuard: its fused check over the terms and gradients, and the flag's copy",
                   lambda: (torch._amp_foreach_non_finite_check_and_unscale_(checked, found, one), row.copy_(found)))
        params = [p.detach().clone().requires_grad_() for p in pl_module.parameters()]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        adam, adam_flagged = (torch.optim.Adam(params, lr=1e-3, fused=True) for _ in range(2))
        adam_flagged.found_inf = torch.zeros(())
        self._time("fused Adam's step", adam.step)
        self._time("fused Adam's step with found_inf (the guard's skip: it undoes its step count)", adam_flagged.step)
        self._time("SeedEveryStep.on_train_batch_end (a lookup and a seeding)",
                   lambda: seed.on_train_batch_end(trainer, pl_module, None, batch, 3))
        self._time("ProgressBar.on_train_batch_end (between refreshes)",
                   lambda: bar.on_train_batch_end(trainer, pl_module, None, batch, 3))
        every = list(trainer.callbacks)
        self._time(f"Lightning's dispatch of a hook none implements, over the run's {len(every)} callbacks",
                   lambda: call._call_callback_hooks(trainer, "on_before_zero_grad", optimizer))
        trainer.callbacks = [self]
        self._time("the same over 1 callback", lambda: call._call_callback_hooks(trainer, "on_before_zero_grad", optimizer))
        trainer.callbacks = every
        for p, g in zip(pl_module.parameters(), grads):
            p.grad = g
        torch.set_rng_state(rng)


def time_pieces(s: Setting) -> dict[str, float]:
    timer = PieceTimer(s.args.warmup, s.args.reps)
    timer.images = s.train_images()
    s_timer, s.timer = s.timer, lambda: timer
    try:
        time_framework(s, "trainer.log_every_n_steps=1000000000")
    except RuntimeError:  # (the window's step timer is this one: no step times)
        pass
    finally:
        s.timer = s_timer
    return timer.results


def made_up_mnist(root: Path, train: int = 60_000, test: int = 10_000) -> Path:
    """MNIST-shaped IDX files (by default of the real sizes): the cost of a step does not depend on what
    the images show."""
    import numpy as np

    from vae_lightning.data.idx import write_idx

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", train), ("t10k", test)):
        write_idx(raw / f"{name}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{name}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=n, dtype=np.uint8))
    return root


def _p10(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.1 * (len(ordered) - 1))]


def table(results: dict[str, list[list[float]]], args: argparse.Namespace, data: str) -> str:
    """Markdown: per arm, the median of the rounds' medians and the 10th percentile of all chunks (ms/step)."""
    med = {arm: statistics.median(statistics.median(r) for r in rounds) * 1e3 for arm, rounds in results.items()}
    low = {arm: _p10([c for r in rounds for c in r]) * 1e3 for arm, rounds in results.items()}
    lines = ["| arm | ms / step, median | ms / step, p10 | / minimal (median, p10) | framework - arm (median, p10) |",
             "|---|---:|---:|---:|---:|"]
    for arm in results:
        ratio = f"{med[arm] / med['minimal']:.2f}, {low[arm] / low['minimal']:.2f}" if "minimal" in med else ""
        saved = (f"{med['framework'] - med[arm]:+.3f}, {low['framework'] - low[arm]:+.3f}"
                 if "framework" in med and arm != "framework" else "")
        lines.append(f"| `{arm}` {ARMS[arm]} | {med[arm]:.3f} | {low[arm]:.3f} | {ratio} | {saved} |")
    notes = []
    for stat, m in (("median", med), ("p10", low)):
        if {"framework", "minimal"} <= m.keys():
            notes.append(f"{stat}: framework / minimal = {m['framework'] / m['minimal']:.2f} (target <= 1.15)"
                         + (f"; minimal / hand = {m['minimal'] / m['hand']:.2f} (Lightning's own loop)"
                            if "hand" in m else "")
                         + (f"; the project's own per-step additions (framework - minimal) "
                            f"{m['framework'] - m['minimal']:.3f} ms (target < 0.1 ms): callbacks, logger and bar "
                            f"(framework - bare) {m['framework'] - m['bare']:.3f} ms, the module of parts and the "
                            f"DataModule (bare - minimal) {m['bare'] - m['minimal']:.3f} ms" if "bare" in m else ""))
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
               f"Lightning {L.__version__}, {torch.get_num_threads()} thread(s), Python {platform.python_version()}")
    command = (f"python benchmarks/step_overhead.py --rounds {args.rounds} --steps {args.steps} --warmup {args.warmup}"
               f" --chunk {args.chunk} --batch {args.batch} --hidden {args.hidden} --latent {args.latent}"
               f" --threads {args.threads}{'' if args.clock == 'wall' else ' --clock ' + args.clock}"
               + (f" --arms {args.arms}" if args.arms else ""))
    return "\n".join([
        f"Command: `{'VAE_DATA_DIR=<MNIST> ' if data == 'MNIST' else ''}{command}`  ",
        f"Machine: {machine}; data: {data}  ",
        f"Model: MLP 784-{args.hidden}-{args.latent} (decoder mirrored), Bernoulli, K = 1, batch {args.batch}; "
        f"{'wall-clock' if args.clock == 'wall' else 'main-thread CPU'} time; {args.warmup} warm-up + {args.steps} "
        f"timed steps per arm and round (chunks of {args.chunk}), {args.rounds} interleaved rounds.",
        "", *lines, "", *[f"- {n}" for n in notes], "",
        "Every round's median (ms / step): " + "; ".join(
            f"{arm} " + ", ".join(f"{statistics.median(r) * 1e3:.3f}" for r in rounds)
            for arm, rounds in results.items()),
        ""])


def count_table(results: dict[str, list[list[float]]], args: argparse.Namespace, data: str) -> str:
    unit = {"calls": "Python calls", "ops": "PyTorch operators"}[args.count]
    per = {arm: statistics.median(rounds[0]) for arm, rounds in results.items()}
    lines = [f"| arm | {unit} / step | - minimal | framework - arm |", "|---|---:|---:|---:|"]
    for arm, n in per.items():
        lines.append(f"| `{arm}` {ARMS[arm]} | {n:.1f} | {n - per['minimal']:+.1f} |"
                     if "minimal" in per else f"| `{arm}` {ARMS[arm]} | {n:.1f} | |")
        lines[-1] += f" {per['framework'] - n:+.1f} |" if "framework" in per and arm != "framework" else " |"
    command = (f"python benchmarks/step_overhead.py --count {args.count} --steps {args.steps} --warmup {args.warmup}"
               f" --chunk {args.chunk} --batch {args.batch} --hidden {args.hidden} --latent {args.latent}"
               + (f" --arms {args.arms}" if args.arms else ""))
    return "\n".join([f"Command: `{command}` (data: {data}; the median over chunks of {args.chunk} steps)", "",
                      *lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="", help=f"comma-separated, from {', '.join(ARMS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400, help="timed steps per arm and round")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=25, help="steps per timed chunk")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--latent", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: the main thread's CPU time, steadier on a busy "
                             "machine")
    parser.add_argument("--count", choices=["calls", "ops"],
                        help="count Python calls or PyTorch operators per step instead of timing (one round)")
    parser.add_argument("--pieces", action="store_true",
                        help="time each per-step piece of the framework alone, inside a running fit (us per call)")
    parser.add_argument("--reps", type=int, default=20000, help="calls per piece with --pieces")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown to this file")
    parser.add_argument("--json", type=Path, help="write every chunk's figure as JSON to this file")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a] or list(ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}: choose from {', '.join(ARMS)}")
    if args.steps % args.chunk:
        parser.error("--steps must be a multiple of --chunk")
    torch.set_num_threads(args.threads)
    # A tiny model's Adam state drifts into subnormal floats, whose arithmetic is many times slower on a CPU:
    # which arm meets them would depend on its random draws, not on its overhead.
    torch.set_flush_denormal(True)
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("vae_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("WANDB_MODE", "offline")

    with tempfile.TemporaryDirectory(prefix="step-overhead-") as tmp:
        tmp = Path(tmp)
        given = os.environ.get("VAE_DATA_DIR")
        if given and (Path(given) / "MNIST" / "raw").is_dir():
            data_dir, data = Path(given), "MNIST"
        else:
            data_dir, data = made_up_mnist(tmp / "data"), "made-up MNIST-shaped data"
        setting = Setting(args, data_dir, tmp / "run")
        results: dict[str, list[list[float]]] = {arm: [] for arm in arms}
        if args.pieces:
            rounds = [time_pieces(setting) for _ in range(args.rounds)]
            lines = [f"Command: `python benchmarks/step_overhead.py --pieces --rounds {args.rounds} --reps {args.reps}`"
                     f" (tiny model 784-{args.hidden}-{args.latent}, batch {args.batch}, {torch.get_num_threads()} "
                     f"thread; the median of the rounds, each the mean of {args.reps} calls)", "",
                     "| piece | us / call |", "|---|---:|"]
            lines += [f"| {name} | {statistics.median(r[name] for r in rounds):.2f} |" for name in rounds[0]]
            text = "\n".join(lines) + "\n"
            print(text)
            if args.markdown:
                args.markdown.write_text(text)
            return
        if args.count:
            for arm in arms:
                with Counting(args.count) as counter:
                    setting.clock = counter
                    results[arm].append(measure(arm, setting))
                print(f"{arm}: {statistics.median(results[arm][-1]):.1f} {args.count} / step", file=sys.stderr,
                      flush=True)
            text = count_table(results, args, data)
            print(text)
            if args.markdown:
                args.markdown.write_text(text)
            return
        for r in range(args.rounds):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            for arm in order:
                results[arm].append(measure(arm, setting))
            print(f"round {r + 1}/{args.rounds} (median ms/step): "
                  + "  ".join(f"{a} {statistics.median(results[a][-1]) * 1e3:.3f}" for a in arms),
                  file=sys.stderr, flush=True)
    text = table(results, args, data)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "data": data,
                                         "seconds_per_step": results}, indent=2))


if __name__ == "__main__":
    main()
