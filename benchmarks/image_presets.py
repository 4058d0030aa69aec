"""Seconds per training epoch and peak memory of the CIFAR-10 and CelebA presets, in memory and
streamed from disk, on made data of the real size (the real sets cannot be downloaded everywhere).

The made data is written where the DataModules cache the real sets after their one-time
preparation (uint8 .npy files), so an epoch here costs what it costs on the real data from the
second run on: 50k x 3 x 32 x 32 for CIFAR-10 (45k train after the validation split), and
--celeba-images x 3 x 64 x 64 for CelebA split 80/10/10 like the official partition. Images are
smooth colour fields with a few shapes, so a model has something to learn. Also timed: CelebA's
one-time preparation (decode, crop, resize) per image, on --prep-images JPEGs of the official size.

Each (preset, path) runs in its own process (peak memory is its own) for --epochs epochs, the first
a warm-up; the median of the others is reported. Usage:

    python benchmarks/image_presets.py --data /tmp/vae-image-bench --epochs 2 --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"cifar10": "cifar10", "celeba64": "celeba64"}


def made_images(n: int, size: int, seed: int) -> np.ndarray:
    """n smooth uint8 colour images [n, 3, size, size]: a gradient per channel and a bright square."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for start in range(0, n, 2048):
        m = min(2048, n - start)
        a, b, c = (rng.random((m, 3, 1, 1), dtype=np.float32) for _ in range(3))
        field = 255 * (a * ramp[None, None, :, None] + b * ramp[None, None, None, :] + c) / (a + b + c + 1e-3)
        r0, c0 = rng.integers(0, size // 2, size=(2, m))
        colour = rng.integers(0, 256, size=(m, 3))
        for i in range(m):
            field[i, :, r0[i] : r0[i] + size // 4, c0[i] : c0[i] + size // 4] = colour[i, :, None, None]
        out[start : start + m] = field.clip(0, 255).astype(np.uint8)
    return out


def make_data(root: Path, celeba_images: int) -> None:
    cifar = root / "cifar-10-batches-py" / "cache"
    if not (cifar / "test_images.npy").is_file():
        cifar.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for split, n in (("train", 50_000), ("test", 10_000)):
            np.save(cifar / f"{split}_labels.npy", rng.integers(0, 10, size=n))
            np.save(cifar / f"{split}_images.npy", made_images(n, 32, seed=n))
    celeba = root / "celeba" / "cache"
    if not (celeba / "test_crop148_64x64.npy").is_file():
        celeba.mkdir(parents=True, exist_ok=True)
        n_val = n_test = celeba_images // 10
        for split, n in (("train", celeba_images - n_val - n_test), ("val", n_val), ("test", n_test)):
            np.save(celeba / f"{split}_crop148_64x64.npy", made_images(n, 64, seed=n + 1))


def time_celeba_preparation(root: Path, count: int) -> float:
    """Seconds per image of CelebA's one-time preparation (JPEG decode, 148 crop, resize to 64)."""
    from PIL import Image

    from vae_lightning.data.sources import FileSource, cache_images

    folder = root / "celeba_prep"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        if not path.is_file():
            Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    cache = folder / "cache.npy"
    cache.unlink(missing_ok=True)
    start = time.perf_counter()
    cache_images(FileSource(paths, (64, 64), channels=3, crop=148), cache)
    return (time.perf_counter() - start) / count


def child(preset: str, in_memory: str, epochs: int, data: str, extra: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"+experiment={preset}", "logger=none", f"paths.data_dir={data}", "paths.output_dir=/tmp/vae-image-bench-run",
            f"data.in_memory={in_memory}", f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0",
            "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "callbacks.image_logger=null",
            "callbacks.model_checkpoint=null", "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false",
            *extra])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from epoch_speed import fit_timed

    times, _, dm, trainer = fit_timed(cfg)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batches = trainer.num_training_batches
    print(json.dumps({"times": times, "peak_mib": peak_mib, "streaming": dm.streaming, "batches": batches,
                      "images": len(dm.train_set), "batch_size": dm.batch_size,
                      "train_loss": float(trainer.callback_metrics.get("train/loss", float("nan")))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/vae-image-bench")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--celeba-images", type=int, default=20_000)
    parser.add_argument("--prep-images", type=int, default=1000)
    parser.add_argument("--presets", default="cifar10,celeba64")
    parser.add_argument("--paths", default="true,false", help="data.in_memory values to time")
    parser.add_argument("--write", help="append the table to this markdown file")
    parser.add_argument("--child", nargs=2, metavar=("PRESET", "IN_MEMORY"))
    parser.add_argument("extra", nargs="*", help="more overrides for every run")
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.epochs, args.data, args.extra)

    data = Path(args.data)
    make_data(data, args.celeba_images)
    rows = []
    for preset in args.presets.split(","):
        for in_memory in args.paths.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", preset, in_memory, "--epochs", str(args.epochs),
                                  "--data", str(data), *args.extra], capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(f"{preset} in_memory={in_memory} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            timed = result["times"][1:] or result["times"]
            seconds = statistics.median(timed)
            rows.append((preset, "streamed" if result["streaming"] else "in memory", result["images"],
                         result["batch_size"], seconds, result["images"] / seconds, result["peak_mib"]))
            print(f"{preset:9} {rows[-1][1]:10} {seconds:7.1f} s/epoch  {rows[-1][5]:7.0f} img/s  "
                  f"peak RSS {result['peak_mib']:.0f} MiB", flush=True)
    prep = time_celeba_preparation(data, args.prep_images)
    print(f"CelebA one-time preparation: {1000 * prep:.2f} ms per image ({prep * 202_599 / 60:.1f} min for 202,599)")

    table = ["| preset | data path | train images | batch | s / epoch | images / s | peak RSS (MiB) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    table += [f"| {p} | {path} | {n} | {b} | {s:.1f} | {r:.0f} | {m:.0f} |" for p, path, n, b, s, r, m in rows]
    report = (f"\n### Image presets, {time.strftime('%Y-%m-%d')} ({platform.processor() or platform.machine()}, "
              f"{__import__('os').cpu_count()} cores, torch threads default)\n\n"
              f"`python benchmarks/image_presets.py --data {args.data} --epochs {args.epochs} "
              f"--celeba-images {args.celeba_images}{' ' + ' '.join(args.extra) if args.extra else ''}`\n\n"
              + "\n".join(table)
              + f"\n\nCelebA's one-time preparation (JPEG decode, 148x148 centre crop, resize to 64x64, all cores): "
                f"{1000 * prep:.2f} ms per image, about {prep * 202_599 / 60:.0f} minutes for the 202,599 images.\n")
    print(report)
    if args.write:
        with open(args.write, "a") as f:
            f.write(report)


if __name__ == "__main__":
    main()
