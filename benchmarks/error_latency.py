"""Seconds from starting `python train.py <bad override>` (or eval.py) to its error line.

Every bad override the test suite checks (tests/test_train.py's two bad-override lists, a key that
moved, missing data, eval.py without or with a missing checkpoint) is run as a user runs it, in its own
process, from a scratch directory; the clock stops when the expected message appears on stderr
("error at") and when the process exits ("exit"). Usage:

    python benchmarks/error_latency.py --repeat 3
    git archive HEAD | tar -x -C /tmp/before    # the last commit, beside the working tree
    python benchmarks/error_latency.py --repeat 3 --before-root /tmp/before --out latency.json

With --before-root, each case runs in that tree and in this one by turns (so that both see the same load on
the machine) and the table has both. --repeat N takes the median of N runs of each; --only SUBSTRING runs the
cases whose override contains it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (script, override(s), text the error line must hold). The override is split on spaces.
CASES: list[tuple[str, str, str]] = [
    ("train", "objective.beta=-1", "objective.beta=-1"),
    ("train", "objective.num_samples=0", "objective.num_samples=0"),
    ("train", "objective.num_samples=2.5", "objective.num_samples=2.5 must be an integer"),
    ("train", "objective.kl_schedule=sigmoid", "objective.kl_schedule='sigmoid'"),
    ("train", "objective.kl_schedule=linear", "objective.warmup_steps=0 must be >= 1"),
    ("train", "model.latent_dim=0", "model.latent_dim=0"),
    ("train", "model.latent_dim=abc", "model.latent_dim='abc' must be an integer"),
    ("train", "model.optimizer.lr=-1", "Invalid learning rate"),
    ("train", "model.encoder.hidden_dims=64", "model.encoder.hidden_dims=64 must be a non-empty list"),
    ("train", "model.encoder.activation=swishy", "model.encoder.activation='swishy' must be one of"),
    ("train", "model/likelihood=gaussian model.likelihood.sigma=-1", "model.likelihood.sigma=-1 must be > 0"),
    ("train", "model.encoder._target_=vae_lightning.nets.RNNEncoder", "model.encoder (vae_lightning.nets.RNNEncoder)"),
    ("train", "data.batch_size=0", "data.batch_size=0 must be an integer >= 1"),
    ("train", "data.num_workers=-1", "data.num_workers=-1"),
    ("train", "data.binarize=otsu", "data.binarize='otsu'"),
    ("train", "logger=wandb logger.wandb.mode=online", "logger.wandb.mode=online but no wandb API key"),
    ("train", "trainer.accelerator=gpu trainer.devices=64", "trainer."),
    ("train", "trainer.strategy=ddp", "trainer.strategy='ddp' needs several devices"),
    ("train", "trainer.precision=8-bit", "Precision '8-bit' is invalid"),
    ("train", "trainer.max_epochs=-5", "`max_epochs` must be a non-negative integer or -1"),
    ("train", "trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number >= 0"),
    ("train", "ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt does not exist"),
    ("train", "objective=iwae +objective.free_bits=0.5", "objective.free_bits=0.5 applies to the ELBO only"),
    ("train", "objective.free_bits_group_size=5", "objective.free_bits_group_size=5 must divide"),
    ("train", "eval.nll_chunk_size=-5", "eval.nll_chunk_size=-5 must be an integer >= 1"),
    ("train", "model=conv model.encoder.activation=swishy", "model.encoder.activation='swishy' must be one of"),
    ("train", "model=conv +model.decoder.depth=3", "model.decoder (vae_lightning.nets.ConvDecoder) cannot be built"),
    ("train", "model/prior=mixture_of_gaussians objective.kl_estimator=analytic", "has no closed-form KL"),
    ("train", "model/prior=mixture_of_gaussians objective.free_bits=0.5", "needs a KL per latent dimension"),
    ("train", "model/decoder=mlp model=conv", "model.decoder.hidden_dims=[] must be a non-empty list"),
    ("train", "data=cifar", "Could not find 'data/cifar'"),
    ("train", "model/prior=vampire", "Could not find 'model/prior/vampire'"),
    ("train", "data=image_folder", "data.path must be set"),
    ("train", "model.likelihood=gaussian", "model.likelihood has moved"),
    ("train", "+model.lr=0.01", "model.lr has moved"),
    ("train", "data.data_dir=/nonexistent data.download=false", "train-images-idx3-ubyte.gz"),
    ("eval", "", "ckpt_path is not set"),
    ("eval", "ckpt_path=/nonexistent/last.ckpt", "does not exist"),
]


def run_case(root: Path, script: str, override: str, expected: str, workdir: Path, env: dict[str, str]) -> dict:
    """One run of ``root``'s script: seconds to the expected line on stderr, and to the exit."""
    args = override.split()
    if script == "train" and not any(a.startswith("logger=") for a in args):
        args.append("logger=none")
    args.append(f"hydra.run.dir={workdir / 'run'}")
    if "logger.wandb.mode" in override:  # WANDB_MODE in the environment would win over the config
        env = {k: v for k, v in env.items() if k != "WANDB_MODE"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(root / f"{script}.py"), *args], cwd=workdir,
                            env=dict(env, PYTHONPATH=str(root)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    error_at, lines = None, []
    for line in proc.stderr:
        lines.append(line.rstrip())
        if error_at is None and expected in line:
            error_at = time.perf_counter() - start
    proc.wait()
    return {"script": script, "override": override, "error_at": error_at, "exit": time.perf_counter() - start,
            "returncode": proc.returncode, "last_line": lines[-1] if lines else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--before-root", type=Path, default=None, help="another tree to time by turns with this one")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    env.pop("HYDRA_FULL_ERROR", None)
    roots = {"after": ROOT, **({"before": args.before_root.resolve()} if args.before_root else {})}
    measured: dict[str, list[dict]] = {name: [] for name in roots}
    for script, override, expected in CASES:
        if args.only and args.only not in override:
            continue
        runs: dict[str, list[dict]] = {name: [] for name in roots}
        for _ in range(args.repeat):
            for name, root in sorted(roots.items()):  # by turns: the same load for both
                with tempfile.TemporaryDirectory() as tmp:
                    runs[name].append(run_case(root, script, override, expected, Path(tmp), dict(env, HOME=tmp)))
        for name, these in runs.items():
            found = [r["error_at"] for r in these if r["error_at"] is not None]
            result = {**these[-1], "error_at": statistics.median(found) if found else None,
                      "exit": statistics.median(r["exit"] for r in these)}
            measured[name].append(result)
            shown = f"{result['error_at']:.2f}" if result["error_at"] is not None else "not seen"
            print(f"[{name}] {script}.py {override or '(none)'}: error at {shown} s, exit {result['exit']:.2f} s "
                  f"(rc {result['returncode']})", file=sys.stderr)
            if result["error_at"] is None:
                print(f"  last line: {result['last_line']}", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(measured, indent=1) + "\n")
    results = measured["after"]
    before = {(r["script"], r["override"]): r for r in measured.get("before", [])}

    def seconds(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "—"

    header = "| command | before: error at (s) | after: error at (s) | after: exit (s) |" if before else \
        "| command | error at (s) | exit (s) |"
    print(header)
    print("|---|" + "---:|" * (header.count("|") - 2))
    for r in results:
        command = f"`{r['script']}.py {r['override']}`".replace(" `", "`")
        if before:
            b = before.get((r["script"], r["override"]), {})
            print(f"| {command} | {seconds(b.get('error_at'))} | {seconds(r['error_at'])} | {seconds(r['exit'])} |")
        else:
            print(f"| {command} | {seconds(r['error_at'])} | {seconds(r['exit'])} |")
    for name, these in sorted(measured.items()):
        found = [r["error_at"] for r in these if r["error_at"] is not None]
        if found:
            print(f"\n{name}: median error at {statistics.median(found):.2f} s, max {max(found):.2f} s over "
                  f"{len(found)} cases")


if __name__ == "__main__":
    main()
