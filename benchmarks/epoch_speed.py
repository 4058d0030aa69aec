"""Seconds per training epoch of the default MNIST VAE, three ways, on the same machine.

  (a) the framework: `+experiment=mnist` composed from the real configs, trained by Lightning
      (validation and logging off, the default callbacks on: what a user runs, minus the epilogue);
  (b) a hand-written PyTorch loop of the same model over a standard DataLoader(TensorDataset)
      (per-example indexing and collate: how most scripts do it);
  (c) a hand-written loop that takes batches by slicing one in-memory tensor;
and, to show where the differences come from and what the options do:
  (d) loop (c) with Adam's fused kernel (which the framework uses by default);
  (e) the framework with compile=true;  (f) the framework with trainer.precision=bf16-mixed;
  (g) the framework with matmul_precision=high (TF32 matrix products on a GPU's tensor cores).

Each way runs in its own process (so peak memory is its own), for --epochs epochs; the first
epoch is a warm-up and the median of the others is reported. Usage:

    VAE_DATA_DIR=../shared/data python benchmarks/epoch_speed.py --epochs 4 --write benchmarks/RESULTS.md
    VAE_DATA_DIR=../shared/data python benchmarks/epoch_speed.py --device cuda --batch-size 4096 --ways abc

On a GPU (``--device cuda``) the data sits on the device for (a), (c), (d) (the framework with
``trainer=gpu``, whose ``data.on_device=auto`` puts it there), (b) copies each batch from pinned
host memory as scripts do; epochs are timed after ``torch.cuda.synchronize()``, and peak GPU
memory is reported beside peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = int(os.environ.get("VAE_BENCH_BATCH", 128))
DEVICE = os.environ.get("VAE_BENCH_DEVICE", "cpu")


def _sync() -> None:
    """Wait for the GPU's queued work, so a timer reads the work done, not the work launched."""
    if DEVICE == "cuda":
        import torch

        torch.cuda.synchronize()


#: Train on the first N images only (a quick end-to-end check of this script); unset: all 55,000.
LIMIT = int(os.environ.get("VAE_BENCH_IMAGES", 0)) or None


def _splits():
    from vae_lightning.data import MNISTDataModule

    dm = MNISTDataModule(batch_size=BATCH, download=False)
    dm.setup()
    return dm


def _images():
    return _splits().train_set.images[:LIMIT]  # [55000, 1, 28, 28] uint8, the split the framework trains on


def val_elbo(model) -> float:
    """The mean ELBO of the 5,000 validation images (fixed binarisation), in float32: the quality a way
    reached in its epochs, so precisions and compilers compare on it as well as on speed."""
    import copy

    import torch

    model = copy.deepcopy(getattr(model, "_orig_mod", model)).float().to(DEVICE).eval()
    x = _splits().val_set.images.to(DEVICE).float() / 255
    with torch.no_grad():
        return float(torch.cat([model(chunk).elbo for chunk in x.split(1000)]).mean())


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        device = ["trainer=gpu"] if DEVICE == "cuda" else []
        return compose("train", overrides=["+experiment=mnist", "logger=none", *device, f"data.batch_size={BATCH}",
                                           f"paths.data_dir={os.environ.get('VAE_DATA_DIR', 'data')}",
                                           "paths.output_dir=/tmp/vae-bench", *overrides])


def _model(fused: bool = False):
    import torch
    from omegaconf import OmegaConf

    from vae_lightning import VAE

    # The mnist experiment's model (784-512-256-32 MLPs, Bernoulli, K = 1), its own optimiser left aside.
    model = VAE.from_config(OmegaConf.to_container(_compose(), resolve=True), (1, 28, 28)).to(DEVICE)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)


def _loop(batches, model, optimizer) -> None:
    import torch

    for x in batches:
        loss = model(torch.bernoulli(x)).loss.mean()  # dynamic binarisation per batch, as most scripts draw it
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run_framework(epochs: int, *extra: str) -> list[float]:
    limit = [f"trainer.limit_train_batches={-(-LIMIT // BATCH)}"] if LIMIT else []
    cfg = _compose(f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0", "callbacks.rich_progress_bar=null",
                   "callbacks.model_summary=null", "+trainer.enable_progress_bar=false", *limit, *extra)
    times, model, _, _ = fit_timed(cfg)
    return times, val_elbo(model)


def fit_timed(cfg):
    """Fit the model and data of a composed run config, timing each training epoch (synchronised on a
    GPU): (seconds per epoch, model, datamodule, trainer)."""
    import lightning as L
    import torch
    from omegaconf import OmegaConf

    from vae_lightning import VAE
    from vae_lightning.run import _compiled, build_trainer, instantiate

    times: list[float] = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            _sync()
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            _sync()
            times.append(time.perf_counter() - self.start)

    L.seed_everything(0, verbose=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    dm = instantiate(cfg.data)
    model = VAE.from_config(OmegaConf.to_container(cfg, resolve=True), dm.input_shape)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + [EpochTimer()]
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=False)
    if cfg.compile:
        model = _compiled(model, trainer)
    trainer.fit(model, datamodule=dm)
    return times, model, dm, trainer


def run_dataloader(epochs: int) -> list[float]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = TensorDataset(_images().float() / 255)
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, pin_memory=DEVICE == "cuda")
    model, optimizer = _model()
    times = []
    for _ in range(epochs):
        _sync()
        start = time.perf_counter()
        _loop((x.to(DEVICE, non_blocking=True) for (x,) in loader), model, optimizer)
        _sync()
        times.append(time.perf_counter() - start)
    return times, val_elbo(model)


def run_slicing(epochs: int, fused: bool = False) -> list[float]:
    import torch

    torch.manual_seed(0)
    images = _images().to(DEVICE)
    model, optimizer = _model(fused)
    times = []
    for _ in range(epochs):
        _sync()
        start = time.perf_counter()
        order = torch.randperm(len(images), device=DEVICE)
        _loop((images[order[i:i + BATCH]].float() / 255 for i in range(0, len(images), BATCH)), model, optimizer)
        _sync()
        times.append(time.perf_counter() - start)
    return times, val_elbo(model)


WAYS = {"a": ("framework (+experiment=mnist via Lightning)", run_framework, ()),
        "b": ("hand-written loop, DataLoader(TensorDataset)", run_dataloader, ()),
        "c": ("hand-written loop, tensor slicing", run_slicing, ()),
        "d": ("hand-written loop, tensor slicing, fused Adam", run_slicing, (True,)),
        "e": ("framework, compile=true", run_framework, ("compile=true",)),
        "f": ("framework, trainer.precision=bf16-mixed", run_framework, ("trainer.precision=bf16-mixed",)),
        "g": ("framework, matmul_precision=high (TF32)", run_framework, ("matmul_precision=high",))}


def child(way: str, epochs: int) -> None:
    import torch

    _, function, args = WAYS[way]
    times, elbo = function(epochs, *args)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else 0.0
    print(json.dumps({"times": times, "peak_rss_mib": peak_mib, "peak_gpu_mib": gpu_mib, "val_elbo": elbo}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per way; the first is a warm-up")
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--ways", default="".join(WAYS), help="which ways to run (default: all, %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="run every way this many times, interleaved, so a slow spell of a shared machine "
                             "does not fall on one way only")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=DEVICE)
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--child", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.epochs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "VAE_BENCH_DEVICE": args.device, "VAE_BENCH_BATCH": str(args.batch_size)}

    ways = [w for w in WAYS if w in args.ways]
    if not ways:
        parser.error(f"--ways {args.ways!r} names none of {''.join(WAYS)}")
    results = {way: {"times": [], "peak_rss_mib": 0.0, "peak_gpu_mib": 0.0, "val_elbo": []} for way in ways}
    for _ in range(args.rounds):
        for way in ways:
            out = subprocess.run([sys.executable, __file__, "--child", way, "--epochs", str(args.epochs)],
                                 capture_output=True, text=True, env=env)
            if out.returncode:  # said, and the other ways still measured
                print(f"way ({way}) failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                results[way]["error"] = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[way]["peak_gpu_mib"] = max(results[way]["peak_gpu_mib"], result["peak_gpu_mib"])
            results[way]["val_elbo"].append(result["val_elbo"])
            results[way]["times"] += result["times"][1:] or result["times"]  # without each run's warm-up epoch
            results[way]["peak_rss_mib"] = max(results[way]["peak_rss_mib"], result["peak_rss_mib"])
    import torch

    n = LIMIT or 55_000
    rows = []
    failed = {way: results.pop(way)["error"] for way in list(results) if not results[way]["times"]}
    ways = [way for way in ways if way in results]
    if not ways:
        sys.exit("every way failed: " + "; ".join(f"({w}) {e}" for w, e in failed.items()))
    for way in ways:
        label = WAYS[way][0]
        t = statistics.median(results[way]["times"])
        results[way]["median"] = t
        results[way]["images_per_s"] = n / t
        gpu = f" {results[way]['peak_gpu_mib']:.0f} |" if args.device == "cuda" else ""
        elbo = statistics.mean(results[way]["val_elbo"])
        rows.append(f"| ({way}) {label} | {t:.3f} | {n / t:,.0f} | {elbo:.2f} | {results[way]['peak_rss_mib']:.0f} |{gpu}")
    median = {way: results[way]["median"] for way in ways}
    ratios = [f"{x}/{y} = {median[x] / median[y]:.2f}{note}" for x, y, note in
              (("a", "b", " (target <= 1.0)"), ("a", "c", " (target <= 1.15)"), ("a", "d", " (the same optimiser)"),
               ("e", "a", " (compile against fp32)"), ("f", "a", " (bf16-mixed against fp32)"),
               ("g", "a", " (TF32 against fp32)"))
              if x in median and y in median]
    machine = (f"{platform.node() or 'this machine'}: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}")
    if args.device == "cuda":
        machine += f", GPU {torch.cuda.get_device_name(0)}"
    text = "\n".join([
        "# Epoch speed: framework against hand-written loops",
        "",
        f"Command: `VAE_DATA_DIR=../shared/data python benchmarks/epoch_speed.py --epochs {args.epochs} --rounds {args.rounds}"
        f"{'' if ways == list(WAYS) else ' --ways ' + ''.join(ways)}"
        f"{'' if args.device == 'cpu' else ' --device ' + args.device}"
        f"{'' if args.batch_size == 128 else f' --batch-size {args.batch_size}'}`",
        f"Machine: {machine}",
        f"Model: the `+experiment=mnist` MLP VAE (784-512-256-32, Bernoulli, K = 1), batch {args.batch_size}, "
        f"{n:,} training images, dynamic binarisation; each way run {args.rounds} times in its own process "
        f"(interleaved), median of the {max(args.epochs - 1, 1) * args.rounds} epochs after each run's warm-up epoch.",
        "",
        "| way | s / epoch | images / s | val ELBO after the run | peak RSS (MiB) |"
        + (" peak GPU memory (MiB) |" if args.device == "cuda" else ""),
        "|---|---|---|---|---|" + ("---|" if args.device == "cuda" else ""),
        *rows,
        *[f"| ({way}) {WAYS[way][0]} | failed: {error} |" for way, error in failed.items()],
        "",
        "The validation ELBO each way reached (fixed binarisation, float32): (a), (e), (f), (g) share the framework's "
        "schedule (the preset's cosine lr over the run), (b)-(d) a constant lr 1e-3; compare within each group.",
        "",
        "Ratios of seconds per epoch: " + (", ".join(ratios) + "." if ratios else "none (they need two ways)."),
        "",
        "Every timed epoch (s), in the order run:",
        "",
        *[f"- ({way}) " + ", ".join(f"{t:.2f}" for t in results[way]["times"]) for way in ways],
        "",
    ])
    print(text)
    if args.write:
        args.write.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "batch_size": args.batch_size, "ways": results,
                                         "failed": failed, "machine": machine}, indent=2))
    if failed:
        sys.exit(f"{len(failed)} way(s) failed: " + "; ".join(f"({w}) {e}" for w, e in failed.items()))


if __name__ == "__main__":
    main()
