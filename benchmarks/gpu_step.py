"""The GPU half of benchmarks/step_overhead.py: one call of under 8 minutes on one GPU (an H100).

  0. Syncs. Training steps 2-17 of the framework at batch 128 (not logged: log_every_n_steps=1000) under
     ``torch.cuda.set_sync_debug_mode("warn")``: every host-device sync PyTorch makes in them, counted
     with where it came from (there should be none; tests/test_syncs.py checks the same on the CPU).
  1. Step cost. The default MNIST MLP VAE (784-512-256-32 ReLU, Bernoulli, K = 1, fp32, fused Adam),
     data on the device, three ways: the framework (the VAE of parts, the MNIST DataModule with
     ``on_device``, the default callbacks: checkpointing, the rich bar, the parts summary, the epoch
     line, the NaN guard, the signal checkpoint, the per-batch seeds), the hand-written loop and the
     minimal LightningModule of benchmarks/step_overhead.py. At batch 128, 512, 2048 and the fastest
     batch (the framework's best images/s over --candidates): ms/step and images/s, the median of the
     timed epochs after a warm-up epoch, each epoch timed from its start to the next epoch's start after
     ``torch.cuda.synchronize()`` (so an epoch's end-of-epoch work is in it).
  2. Precision and compiler. The framework at batch 128 and at the fastest batch in fp32 (32-true,
     matmul precision highest), bf16-mixed, TF32 (matmul precision high) and torch.compile, the same
     epochs each: images/s (median epoch after the first, which for compile holds the compilation) and
     the validation ELBO reached (the 5,000 validation images, fixed binarisation, evaluated in float32).

It runs without hydra, omegaconf and wandb (the GPU machine has none of them): the run is built from
the parts directly, with Lightning's Trainer and no logger; vae_lightning's package __init__ is
bypassed, and the three names vae_lightning.checks imports from omegaconf get stand-ins, since a run
built from parts never reaches them. The image logger (every 5 epochs) is left out, and the checkpoint
callback writes nothing (validation is off, and so is save_last: a file write per epoch would dominate
an epoch of 17 ms).

Writes gpu_step.json and gpu_step.md under --out (default $OUT), after every measurement, so a cut-off
call keeps what it measured; --budget-s skips what is left once that much time has gone. Usage:

    VAE_DATA_DIR=<dir with MNIST/raw> python benchmarks/gpu_step.py --out "$OUT"     # on the GPU
    python benchmarks/gpu_step.py --dry-run --out /tmp/gpu_step                      # on a CPU: tiny, every path

Without MNIST under VAE_DATA_DIR (or --data) it makes up MNIST-shaped data: the speeds hold, the ELBOs
then mean nothing (the report says so).
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.machinery
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_LIBRARIES = ("hydra", "omegaconf", "wandb")


def block_config_libraries() -> None:
    """Make hydra, omegaconf and wandb missing here as they are on the GPU machine, before torch and
    Lightning look for them (Lightning then takes omegaconf as absent, as it is there)."""
    loaded = [n for n in sys.modules if n.split(".")[0] in CONFIG_LIBRARIES and sys.modules[n] is not None]
    if loaded:
        raise RuntimeError(f"imported before gpu_step could keep them out: {loaded}")
    for name in CONFIG_LIBRARIES:
        sys.modules[name] = None  # `import name` now fails as if it were not installed


def omegaconf_stand_ins() -> None:
    """vae_lightning.checks imports DictConfig, OmegaConf and OmegaConfBaseException at its top; a run built
    from parts passes it no config, so stand-ins that nothing is an instance of are enough."""
    omegaconf, errors = types.ModuleType("omegaconf"), types.ModuleType("omegaconf.errors")
    omegaconf.__spec__ = importlib.machinery.ModuleSpec("omegaconf", None)
    errors.__spec__ = importlib.machinery.ModuleSpec("omegaconf.errors", None)

    class OmegaConf:
        def __getattr__(self, name):
            raise RuntimeError("omegaconf is not installed here (benchmarks/gpu_step.py)")

    omegaconf.DictConfig = type("DictConfig", (), {})
    omegaconf.ListConfig = type("ListConfig", (), {})
    omegaconf.OmegaConf = OmegaConf()
    errors.OmegaConfBaseException = type("OmegaConfBaseException", (Exception,), {})
    omegaconf.errors = errors
    sys.modules["omegaconf"], sys.modules["omegaconf.errors"] = omegaconf, errors


def framework_package() -> None:
    """vae_lightning as a bare package: its submodules import as usual, its __init__ (which registers the
    config's resolvers, with omegaconf) is not run."""
    package = types.ModuleType("vae_lightning")
    package.__path__ = [str(ROOT / "vae_lightning")]
    package.__spec__ = importlib.machinery.ModuleSpec("vae_lightning", None, is_package=True)
    package.__spec__.submodule_search_locations = package.__path__
    sys.modules["vae_lightning"] = package


block_config_libraries()
import lightning as L  # noqa: E402
import torch  # noqa: E402
import torchmetrics  # noqa: E402,F401 - (it too looks for the libraries at import)

omegaconf_stand_ins()
framework_package()
sys.path.insert(0, str(ROOT / "benchmarks"))
from step_overhead import MinimalModule, PlainVAE, Slices, made_up_mnist, plain_optimizer  # noqa: E402

from vae_lightning.callbacks import (Checkpoints, EpochSummary, PartsSummary, ProgressBar,  # noqa: E402
                                     SeedEveryStep)
from vae_lightning.data import MNISTDataModule  # noqa: E402
from vae_lightning.faults import AtomicCheckpointIO, CheckpointOnSignal, NonFiniteGuard  # noqa: E402
from vae_lightning.likelihoods.bernoulli import Bernoulli  # noqa: E402
from vae_lightning.module import VAE  # noqa: E402
from vae_lightning.nets.mlp import MLPDecoder, MLPEncoder  # noqa: E402
from vae_lightning.objectives.elbo import ELBO  # noqa: E402
from vae_lightning.posteriors.diagonal_gaussian import DiagonalGaussianPosterior  # noqa: E402
from vae_lightning.priors.standard_normal import StandardNormal  # noqa: E402

SETTINGS = {  # name -> (Trainer precision, float32 matmul precision, compile)
    "fp32": ("32-true", "highest", False),
    "bf16-mixed": ("bf16-mixed", "highest", False),
    "tf32": ("32-true", "high", False),
    "compile": ("32-true", "highest", True),
}


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.accelerator = "gpu" if self.device.type == "cuda" else "cpu"
        self.start = time.perf_counter()
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu-step-"))
        given = args.data or os.environ.get("VAE_DATA_DIR")
        if given and (Path(given) / "MNIST" / "raw").is_dir():
            self.data_dir, self.data = Path(given), "MNIST"
        else:
            sizes = (3000, 500) if args.dry_run else (60_000, 10_000)
            self.data_dir, self.data = made_up_mnist(self.tmp / "data", *sizes), "made-up MNIST-shaped data"
        self.val_size = 500 if args.dry_run else 5000
        self.hidden, self.latent = ([32], 4) if args.dry_run else ([512, 256], 32)
        self.results: dict = {"steps": [], "settings": [], "skipped": []}
        self._images: torch.Tensor | None = None

    # -- bookkeeping -------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def within_budget(self, what: str) -> bool:
        if self.elapsed() < self.args.budget_s:
            return True
        self.results["skipped"].append(what)
        print(f"skipped (time budget): {what}", flush=True)
        return False

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def datamodule(self, batch: int) -> MNISTDataModule:
        return MNISTDataModule(data_dir=self.data_dir, batch_size=batch, val_size=self.val_size, download=False,
                               on_device=True)

    def train_images(self) -> torch.Tensor:
        """The framework's training split on the device (uint8), for the hand loop and the minimal module."""
        if self._images is None:
            dm = self.datamodule(128)
            dm.setup("fit")
            self._images = dm.train_set.images.to(self.device)
            self._val = dm.val_set.images.to(self.device).float() / 255
        return self._images

    # -- the three ways --------------------------------------------------------------------------------
    def framework(self, compile: bool = False):
        model = VAE(encoder=MLPEncoder((1, 28, 28), 2 * self.latent, self.hidden, "relu"),
                    decoder=MLPDecoder(self.latent, (1, 28, 28), list(reversed(self.hidden)), "relu"),
                    posterior=DiagonalGaussianPosterior(self.latent), prior=StandardNormal(self.latent),
                    likelihood=Bernoulli(), objective=ELBO(num_samples=1),
                    optimizer=functools.partial(torch.optim.Adam, lr=1e-3, fused=True), input_shape=(1, 28, 28))
        return torch.compile(model) if compile else model

    def callbacks(self) -> list[L.Callback]:
        quiet = {"file": open(os.devnull, "w")}  # the bar is drawn (its cost counted), into /dev/null
        return [Checkpoints(dirpath=self.tmp / "checkpoints", monitor="val/elbo", mode="max", save_last=False),
                ProgressBar(console_kwargs=quiet), PartsSummary(max_depth=1), EpochSummary(), NonFiniteGuard(),
                CheckpointOnSignal(self.tmp / "checkpoints"), SeedEveryStep(seed=0)]

    def fit_framework(self, batch: int, epochs: int, precision: str = "32-true", compile: bool = False,
                      extra: tuple[L.Callback, ...] = (), **trainer_args):
        L.seed_everything(0, verbose=False)
        timer = EpochTimer(self.sync)
        model = self.framework(compile)
        trainer = L.Trainer(**{"accelerator": self.accelerator, "devices": 1, "max_epochs": epochs,
                               "precision": precision, "logger": False, "plugins": [AtomicCheckpointIO()],
                               "callbacks": [timer, *extra, *self.callbacks()], "limit_val_batches": 0,
                               "num_sanity_val_steps": 0, "log_every_n_steps": 50, "default_root_dir": self.tmp,
                               **trainer_args})
        trainer.fit(model, datamodule=self.datamodule(batch))
        return timer.seconds, getattr(model, "_orig_mod", model)

    def fit_minimal(self, batch: int, epochs: int):
        L.seed_everything(0, verbose=False)
        timer = EpochTimer(self.sync)
        model = MinimalModule(self.hidden, self.latent)
        trainer = L.Trainer(accelerator=self.accelerator, devices=1, max_epochs=epochs, precision="32-true",
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                            callbacks=[timer], default_root_dir=self.tmp)
        trainer.fit(model, train_dataloaders=Slices(self.train_images(), batch))
        return timer.seconds, model

    def fit_hand(self, batch: int, epochs: int):
        torch.manual_seed(0)
        model = PlainVAE(self.hidden, self.latent).to(self.device)
        optimizer = plain_optimizer(model)
        loader = Slices(self.train_images(), batch)
        starts = []
        for _ in range(epochs):
            self.sync()
            starts.append(time.perf_counter())
            for images, _ in loader:
                loss = model.loss(images)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        self.sync()
        starts.append(time.perf_counter())
        return [b - a for a, b in zip(starts, starts[1:])], model

    # -- the measurements ------------------------------------------------------------------------------
    def steps(self, way: str, batch: int, epochs: int) -> dict | None:
        if not self.within_budget(f"{way} at batch {batch}"):
            return None
        fit = {"framework": self.fit_framework, "hand": self.fit_hand, "minimal": self.fit_minimal}[way]
        seconds, _ = fit(batch, epochs)
        n = len(self.train_images())
        per_epoch = statistics.median(seconds[1:] or seconds)
        steps_per_epoch = -(-n // batch)
        row = {"way": way, "batch": batch, "epochs": epochs, "epoch_seconds": seconds,
               "ms_per_step": per_epoch / steps_per_epoch * 1e3, "images_per_s": n / per_epoch}
        self.results["steps"].append(row)
        print(f"{way:9s} batch {batch:6d}: {row['ms_per_step']:.3f} ms/step, {row['images_per_s']:,.0f} images/s "
              f"({self.elapsed():.0f} s in)", flush=True)
        self.write()
        return row

    def syncs(self) -> None:
        """Count the host-device syncs of unlogged training steps (CUDA only)."""
        if self.device.type != "cuda":
            self.results["syncs"] = "not measured: no CUDA device (set_sync_debug_mode needs one)"
            return
        import warnings

        watch = SyncWatch(first=2, stop=18)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.fit_framework(128, 1, extra=(watch,), max_steps=20, log_every_n_steps=1000)
        torch.cuda.set_sync_debug_mode(0)
        found = [f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}" for w in caught
                 if "synchroniz" in str(w.message)]
        self.results["syncs"] = {"steps": watch.stop - watch.first, "count": len(found), "where": sorted(set(found))}
        print(f"syncs in {watch.stop - watch.first} unlogged steps: {len(found)}", flush=True)
        self.write()

    def setting(self, name: str, batch: int, epochs: int) -> None:
        if not self.within_budget(f"{name} at batch {batch}"):
            return
        precision, matmul, compile = SETTINGS[name]
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(matmul)
        try:
            seconds, model = self.fit_framework(batch, epochs, precision, compile)
        finally:
            torch.set_float32_matmul_precision(before)
        per_epoch = statistics.median(seconds[1:] or seconds)
        n = len(self.train_images())
        row = {"setting": name, "batch": batch, "epochs": epochs, "epoch_seconds": seconds,
               "images_per_s": n / per_epoch, "first_epoch_extra_s": seconds[0] - per_epoch,
               "val_elbo": self.val_elbo(model)}
        self.results["settings"].append(row)
        print(f"{name:10s} batch {batch:6d}: {row['images_per_s']:,.0f} images/s, val ELBO {row['val_elbo']:.2f} "
              f"({self.elapsed():.0f} s in)", flush=True)
        self.write()

    def val_elbo(self, model: VAE) -> float:
        model = copy.deepcopy(model).float().to(self.device).eval()
        self.train_images()
        with torch.no_grad():
            return float(torch.cat([model(chunk).elbo for chunk in self._val.split(1000)]).mean())

    # -- the report ------------------------------------------------------------------------------------
    def machine(self) -> str:
        gpu = torch.cuda.get_device_name(0) if self.device.type == "cuda" else "no GPU (CPU)"
        return (f"{gpu}; {os.cpu_count()} CPU cores; torch {torch.__version__}, Lightning {L.__version__}, "
                f"Python {platform.python_version()}")

    def write(self) -> None:
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.results.update(machine=self.machine(), data=self.data, dry_run=self.args.dry_run,
                            elapsed_s=self.elapsed(), model=f"MLP 784-{'-'.join(map(str, self.hidden))}-{self.latent}")
        (out / "gpu_step.json").write_text(json.dumps(self.results, indent=2))
        (out / "gpu_step.md").write_text(self.markdown())

    def _syncs_lines(self) -> list[str]:
        syncs = self.results.get("syncs")
        if syncs is None:
            return []
        if isinstance(syncs, str):
            return [f"Syncs of unlogged steps: {syncs}.", ""]
        where = "".join(f"\n- `{w}`" for w in syncs["where"])
        return [f"Host-device syncs in {syncs['steps']} unlogged training steps (set_sync_debug_mode): "
                f"**{syncs['count']}**{where}", ""]

    def markdown(self) -> str:
        r = self.results
        lines = [f"# Training step on {r['machine'].split(';')[0]}", "",
                 f"`python benchmarks/gpu_step.py{' --dry-run' if r['dry_run'] else ''}` ({r['elapsed_s']:.0f} s); "
                 f"{r['machine']}; data: {r['data']}; model {r['model']}, Bernoulli, K = 1, fused Adam, data on "
                 f"the device. Median epoch after a warm-up epoch.", "",
                 *self._syncs_lines(),
                 "| batch | way | ms / step | images / s | / hand | / minimal |", "|---:|---|---:|---:|---:|---:|"]
        by = {(s["way"], s["batch"]): s for s in r["steps"]}
        for s in r["steps"]:
            hand, minimal = by.get(("hand", s["batch"])), by.get(("minimal", s["batch"]))
            lines.append(f"| {s['batch']} | {s['way']} | {s['ms_per_step']:.3f} | {s['images_per_s']:,.0f} | "
                         f"{s['ms_per_step'] / hand['ms_per_step']:.2f} |" if hand else
                         f"| {s['batch']} | {s['way']} | {s['ms_per_step']:.3f} | {s['images_per_s']:,.0f} | |")
            lines[-1] += f" {s['ms_per_step'] / minimal['ms_per_step']:.2f} |" if minimal else " |"
        if r.get("fastest"):
            lines += ["", f"Fastest batch of the framework over {r['candidates']}: {r['fastest']}."]
        lines += ["", "| batch | setting | images / s | / fp32 | first epoch extra (s) | val ELBO |",
                  "|---:|---|---:|---:|---:|---:|"]
        fp32 = {s["batch"]: s for s in r["settings"] if s["setting"] == "fp32"}
        for s in r["settings"]:
            ratio = f"{s['images_per_s'] / fp32[s['batch']]['images_per_s']:.2f}" if s["batch"] in fp32 else ""
            lines.append(f"| {s['batch']} | {s['setting']} | {s['images_per_s']:,.0f} | {ratio} | "
                         f"{s['first_epoch_extra_s']:.1f} | {s['val_elbo']:.2f} |")
        if r["skipped"]:
            lines += ["", "Skipped for the time budget: " + "; ".join(r["skipped"]) + "."]
        return "\n".join(lines) + "\n"


class SyncWatch(L.Callback):
    """``torch.cuda.set_sync_debug_mode("warn")`` from the start of batch ``first`` to the start of ``stop``."""

    def __init__(self, first: int, stop: int):
        self.first, self.stop = first, stop

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.first:
            torch.cuda.set_sync_debug_mode("warn")
        elif batch_idx == self.stop:
            torch.cuda.set_sync_debug_mode(0)


class EpochTimer(L.Callback):
    """Seconds from each training epoch's start to the next's (the last to the end of training), read after
    the device has finished what was queued."""

    def __init__(self, sync):
        self.sync, self.starts = sync, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.sync()
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.sync()
        self.starts.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_step_out")))
    parser.add_argument("--data", help="a directory holding MNIST/raw (default: $VAE_DATA_DIR)")
    parser.add_argument("--dry-run", action="store_true", help="tiny data and model, every path: a check on a CPU")
    parser.add_argument("--budget-s", type=float, default=420, help="start nothing new after this many seconds")
    parser.add_argument("--batches", default="128,512,2048")
    parser.add_argument("--candidates", default="4096,8192,16384,32768", help="batches tried for the fastest")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="of fp32, bf16-mixed, tf32, compile")
    args = parser.parse_args()
    batches, candidates = [int(b) for b in args.batches.split(",")], [int(b) for b in args.candidates.split(",")]
    settings = [s for s in args.settings.split(",") if s]
    if args.dry_run:
        batches, candidates = [16, 64], [128, 256]
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "vae_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    run = Run(args)
    print(f"{run.machine()}; data: {run.data}", flush=True)
    # Epochs per measurement: about a second or more of timed epochs each on an H100 (a step of this model
    # costs some 4-5 ms of fixed overhead there), one warm-up epoch first.
    run.syncs()
    timing_epochs = (lambda b: 2) if args.dry_run else (lambda b: 3 if b <= 128 else 4 if b <= 512 else 6)
    for batch in batches:
        for way in ("framework", "hand", "minimal"):
            run.steps(way, batch, timing_epochs(batch))
    sweep = [run.steps("framework", b, 2 if args.dry_run else 5) for b in candidates]
    measured = [row for row in sweep if row] + [row for row in run.results["steps"]
                                                if row["way"] == "framework" and row not in sweep]
    fastest = max(measured, key=lambda row: row["images_per_s"])["batch"] if measured else candidates[-1]
    run.results.update(fastest=fastest, candidates=candidates)
    for way in ("hand", "minimal"):
        run.steps(way, fastest, 2 if args.dry_run else 5)
    # Precision and compile: the same epochs for every setting at a batch (compile last: it compiles first).
    precision_epochs = {batches[0]: 2 if args.dry_run else 3,
                        fastest: 2 if args.dry_run else min(200, max(3, 3 * fastest // batches[0]))}
    for batch in (batches[0], fastest):
        for name in settings:
            run.setting(name, batch, precision_epochs[batch])
    run.write()
    print(run.markdown())


if __name__ == "__main__":
    main()
