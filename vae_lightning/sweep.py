"""The summary of a Hydra multirun: one row per job, the rate-distortion picture a beta sweep is for, and,
for data with known factors, each disentanglement metric against beta (the plots of Higgins et al. 2017
and Locatello et al. 2019)."""

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
#: The headline disentanglement scores: printed at the end of a run on data with known factors, and, as
#: their test values (callbacks.disentanglement), columns of the summary when a job has them.
HEADLINE_SCORES = ("mig", "dci_d", "factor_vae", "beta_vae", "sap")
DIS_COLUMNS = tuple(f"test/dis/{name}" for name in HEADLINE_SCORES)


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per job directory of a sweep: its number, overrides and final metrics (failed jobs included)."""
    rows = []
    jobs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra" / "overrides.yaml").is_file()]
    for job in sorted(jobs, key=lambda p: (len(p.name), p.name)):
        overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append({"job": job.name, "overrides": overrides, "status": "done" if metrics else "failed",
                     **_objective_of(job), **{k: metrics.get(k) for k in (*COLUMNS, *DIS_COLUMNS)}})
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


def _objective_of(job: Path) -> dict[str, Any]:
    """The job's objective (its class name) and beta, from the config the job ran with."""
    config_file = job / ".hydra" / "config.yaml"
    if not config_file.is_file():
        return {"objective": None, "beta": None}
    objective = OmegaConf.load(config_file).get("objective") or {}
    beta = objective.get("beta")
    return {"objective": str(objective.get("_target_", "")).rsplit(".", 1)[-1] or None,
            "beta": float(beta) if isinstance(beta, (int, float)) else None}


def fields_of(rows: list[dict[str, Any]]) -> list[str]:
    """The summary's columns: the bound's terms, and the disentanglement metrics where a job has them."""
    dis = [k for k in DIS_COLUMNS if any(r.get(k) is not None for r in rows)]
    return ["job", "swept", "status", *COLUMNS, *dis]


def write_table(rows: list[dict[str, Any]], sweep_dir: Path) -> tuple[Path, Path]:
    """summary.csv and summary.md in the sweep directory."""
    fields = fields_of(rows)
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
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


def plot_disentanglement(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Each disentanglement metric of the test set against beta, one line per objective through the mean
    of its jobs (seeds) at each beta, every job a dot: what a beta sweep over disentangling objectives is
    judged by."""
    metrics = [k for k in DIS_COLUMNS if any(r.get(k) is not None and r.get("beta") is not None for r in rows)]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = sorted({r["objective"] or "?" for r in rows if r.get("beta") is not None})
    colours = dict(zip(objectives, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.6 * len(metrics), 6.5), 3.8), dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for objective in objectives:
            points = [(r["beta"], r[metric]) for r in rows
                      if (r["objective"] or "?") == objective and r.get("beta") is not None and r.get(metric) is not None]
            if not points:
                continue
            betas = sorted({b for b, _ in points})
            means = [sum(v for b, v in points if b == beta) / sum(1 for b, _ in points if b == beta) for beta in betas]
            ax.plot(betas, means, "-", color=colours[objective], label=objective, alpha=0.8)
            ax.plot(*zip(*points), "o", color=colours[objective], markersize=4, alpha=0.6)
        betas = sorted({r["beta"] for r in rows if r.get("beta") is not None})
        if betas[0] > 0:  # betas of a sweep grow by factors: a log axis, ticks at the values swept
            ax.set_xscale("log", base=2)
        ax.set_xticks(betas, [f"{b:g}" for b in betas])
        ax.minorticks_off()
        ax.set_xlabel("objective.beta")
        ax.set_title(metric.rsplit("/", 1)[-1])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score on the test sample")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Disentanglement against beta (dots: jobs; lines: their mean)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write summary.csv, summary.md, rate_distortion.png
    and (for data with known factors) disentanglement.png into the sweep directory, print the table, and send
    them to the jobs' trackers (wandb: a ``sweep_summary`` run in the sweep's group; TensorBoard:
    ``<sweep dir>/tensorboard``; MLflow: a parent run of the jobs)."""

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
        dis_plot = plot_disentanglement(rows, sweep_dir / "disentanglement.png")
        print(f"\nSweep summary ({sweep_dir}):\n{md.read_text()}")
        log.info(f"Sweep summary in {md}" + (f", rate-distortion plot in {plot}" if plot else "")
                 + (f", disentanglement against beta in {dis_plot}" if dis_plot else ""))
        self._send(config.get("logger"), rows, md, {"rate_distortion": plot, "disentanglement": dis_plot}, sweep_dir)

    @staticmethod
    def _send(logger_group: Any, rows: list[dict[str, Any]], md: Path, plots: dict[str, Path | None],
              sweep_dir: Path) -> None:
        """The summary into each tracker of the jobs (a summary run of their sweep): the table, the plots and the
        summary files. The files on disk are the summary; a tracker that fails is a warning."""
        from .trackers import log_artifact, log_images, log_table, sweep_summary_runs

        fields = fields_of(rows)
        with sweep_summary_runs(logger_group, sweep_dir) as runs:
            log_table(runs, "sweep/summary", fields, [[r.get(f) for f in fields] for r in rows])
            log_images(runs, plots, 0, section="sweep")
            for path in (sweep_dir / "summary.csv", md):
                log_artifact(runs, path, "sweep")
