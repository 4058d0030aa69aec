"""How fast the test NLL runs against the machine's dense matrix-multiply rate for the same shapes.

The importance-sampled log p(x) of the Burda et al. (2016) one-layer model (784-200-200-50 tanh,
Bernoulli) costs, per sample and test image, the decoder's three matrix products:
2 * (50*200 + 200*200 + 200*784) = 413,600 floating-point operations; S = 5000 samples on the
10,000 test images are 20.7 TFLOP. This script measures

  - the rate of those three products (torch.matmul, float32) at the row count a piece of the NLL's
    work uses (its samples times its block of examples), on this machine, and
  - the NLL itself (``VAE.log_px``, the framework's code path) on --images test-sized images with
    --samples samples, at the default chunking and at another --max-elements,

and prints the NLL's achieved rate (its matrix-product FLOPs / seconds) beside the product rate,
and the time the full S = 5000 x 10,000 evaluation takes at that rate. Usage:

    python benchmarks/nll_speed.py --images 1000 --samples 1000
    python benchmarks/nll_speed.py --images 1000 --samples 1000 --max-elements 67108864   # the old chunking
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FLOP_PER_SAMPLE = 2 * (50 * 200 + 200 * 200 + 200 * 784)


def matmul_rate(rows: int, repeats: int = 20) -> float:
    """GFLOP/s of the decoder's three products for ``rows`` rows (best of a few rounds)."""
    weights = [torch.randn(50, 200), torch.randn(200, 200), torch.randn(200, 784)]
    h = torch.randn(rows, 50)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = h
            for w in weights:
                out = out @ w
        best = min(best, (time.perf_counter() - start) / repeats)
    return FLOP_PER_SAMPLE * rows / best / 1e9


def burda_model():
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_vae  # the real configs, composed as train.py composes them

    return make_vae("+experiment=burda").eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="test images (one evaluation batch)")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples S per image")
    parser.add_argument("--max-elements", type=int, default=None,
                        help="the NLL's chunk budget (decoder outputs per chunk); default: the framework's")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from vae_lightning.evaluation import CPU_ELEMENTS, MIN_ROWS, importance_sampled_log_px

    torch.manual_seed(0)
    model = burda_model()
    x = (torch.rand(args.images, 1, 28, 28) < 0.3).float()
    budget = args.max_elements or CPU_ELEMENTS
    block = min(args.images, max(MIN_ROWS, budget // 784))  # the rows the NLL decodes together
    rows = max(1, budget // (block * 784)) * block  # times the samples of a chunk
    seconds = float("inf")
    with torch.no_grad():
        q = model.encode(x)
        for _ in range(args.repeats):
            start = time.perf_counter()
            importance_sampled_log_px(x, q, model.decoder, model.prior, model.likelihood, args.samples,
                                      max_elements=args.max_elements)
            seconds = min(seconds, time.perf_counter() - start)
    achieved = FLOP_PER_SAMPLE * args.samples * args.images / seconds / 1e9
    rate = matmul_rate(rows)
    full = FLOP_PER_SAMPLE * 5000 * 10_000 / (achieved * 1e9)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"chunk budget {budget} decoder outputs -> {rows} rows per product")
    print(f"matrix products at {rows} rows: {rate:.1f} GFLOP/s")
    print(f"NLL, {args.images} images x S = {args.samples}: {seconds:.2f} s, {achieved:.1f} GFLOP/s "
          f"= {achieved / rate:.2f} of the product rate")
    print(f"S = 5000 on 10,000 test images at this rate: {full / 60:.1f} min")


if __name__ == "__main__":
    main()
