"""The summary of a Hydra multirun: one row per job, and the rate-distortion picture a beta sweep is for."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("vae_lightning")

COLUMNS = ("test/elbo", "test/recon", "test/kl", "test/iwae", "test/nll", "val/elbo_best", "epochs", "kl_estimator")


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per job directory of a sweep: its number, overrides and final metrics (failed jobs included)."""
    rows = []
    jobs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    for job in sorted(jobs, key=lambda p: (len(p.name), p.name)):
        overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append({"job": job.name, "overrides": overrides, "status": "done" if metrics else "failed",
                     **{k: metrics.get(k) for k in COLUMNS}})
    # Show what the sweep varied, not what all jobs share.
    values: dict[str, set] = {}
    for row in rows:
        for item in row["overrides"]:
            key = item.split("=", 1)[0]
            values.setdefault(key, set()).add(item)
    varied = {k for k, v in values.items() if len(v) > 1 or any(k not in _keys(r) for r in rows)}
    for row in rows:
        row["swept"] = " ".join(item for item in row.pop("overrides") if item.split("=", 1)[0] in varied)
    return rows


def _keys(row: dict[str, Any]) -> set[str]:
    return {item.split("=", 1)[0] for item in row["overrides"]}


def write_table(rows: list[dict[str, Any]], sweep_dir: Path) -> tuple[Path, Path]:
    """summary.csv and summary.md in the sweep directory."""
    fields = ["job", "swept", "status", *COLUMNS]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in fields) + " |" for r in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return sweep_dir / "summary.csv", sweep_dir / "summary.md"


def plot_rate_distortion(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """KL (rate) against reconstruction loss (distortion), one labelled point per finished job."""
    done = [r for r in rows if r.get("test/kl") is not None and r.get("test/recon") is not None]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    kl = [r["test/kl"] for r in done]
    recon = [r["test/recon"] for r in done]
    ax.plot(kl, recon, "o", color="tab:blue")
    for r, x, y in zip(done, kl, recon):
        ax.annotate(r["swept"] or f"job {r['job']}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("rate: test KL(q(z|x) || p(z)) [nats]")
    ax.set_ylabel("distortion: test recon = -E_q[log p(x|z)] [nats]")
    ax.set_title("Rate-distortion of the sweep")
    ax.grid(alpha=0.3)
    ax.margins(0.2)  # room for the labels
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write summary.csv, summary.md and
    rate_distortion.png into the sweep directory and print the table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) != 0:
            return  # a DDP rank Lightning started by re-running the command: rank 0 writes the summary
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect(sweep_dir)
        if not rows:
            return
        _, md = write_table(rows, sweep_dir)
        plot = plot_rate_distortion(rows, sweep_dir / "rate_distortion.png")
        print(f"\nSweep summary ({sweep_dir}):\n{md.read_text()}")
        log.info(f"Sweep summary in {md}" + (f", rate-distortion plot in {plot}" if plot else ""))
        wandb_cfg = (config.get("logger") or {}).get("wandb")
        if wandb_cfg is not None:
            try:
                _log_to_wandb(rows, plot, sweep_dir, wandb_cfg)
            except Exception as e:  # the files on disk are the summary; wandb is a copy
                log.warning(f"Could not log the sweep summary to wandb ({type(e).__name__}: {e}).")


def _log_to_wandb(rows: list[dict[str, Any]], plot: Path | None, sweep_dir: Path, wandb_cfg: DictConfig) -> None:
    """One extra wandb run in the sweep's group, job type sweep_summary: the table and the plot."""
    import wandb

    from .loggers import resolve_wandb_mode

    mode, _ = resolve_wandb_mode(wandb_cfg.get("mode", "auto"))
    fields = ["job", "swept", "status", *COLUMNS]
    run = wandb.init(project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity"), mode=mode,
                     group="sweep-" + "_".join(sweep_dir.parts[-2:]), job_type="sweep_summary",
                     name=f"summary {sweep_dir.name}", dir=str(sweep_dir), reinit="finish_previous")
    table = wandb.Table(columns=[f.replace("/", "_") for f in fields],
                        data=[[r.get(f) for f in fields] for r in rows])
    payload: dict[str, Any] = {"sweep/summary": table}
    if plot is not None:
        payload["sweep/rate_distortion"] = wandb.Image(str(plot))
    run.log(payload)
    run.finish()
