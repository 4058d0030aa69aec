"""A local report of a run or a sweep: one self-contained HTML page and one PNG sheet.

    python report.py outputs/2026-11-25/12-00-00          # a run directory
    python report.py multirun/2026-11-25/12-00-00         # a sweep directory: its jobs side by side

The curves (``recon``, ``kl``, ``elbo`` per split, then every other term logged per split: L_K, an
objective's extras) come from the run's CSV log
(``csv/version_*/metrics.csv``) or, without one, from its offline wandb file; the pictures are
the newest of ``images/<name>/epoch_NNN.png``. Writes ``report.html`` and ``report.png`` into
the directory (or where ``--out`` says) and prints their paths.
``--to-trackers`` also sends them to the run's trackers (a sweep's: its summary runs).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

from .errors import VAEUserError

TERMS = ("recon", "kl", "elbo")
SPLITS = ("train", "val", "test")
#: Logged under a split but not terms of the bound: no curve of their own.
NOT_TERMS = ("loss", "beta", "active_units", "nll", "bpd")
TITLES = {"recon": "recon  -E_q[log p(x|z)] (nats)", "kl": "KL(q(z|x) || p(z)) (nats)", "elbo": "ELBO (nats)",
          "iwae": "IWAE bound L_K (nats)"}
MAX_CURVE_COLUMNS = 4
IMAGE_ORDER = ("reconstructions", "samples", "traversals", "manifold", "latent_scatter")
SHEET_DPI = 100


# -- reading runs ------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    return any(path.glob("csv/version_*/metrics.csv")) or any(path.glob("wandb/*run-*/run-*.wandb")) \
        or (path / "metrics.json").is_file() or (path / "images").is_dir()


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """All logged rows of a run: from the newest CSV log, else from the offline wandb file."""
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if logs:
        with open(logs[-1], newline="") as f:
            return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    from .wandb_files import find_run_file, history

    run_file = find_run_file(run_dir)
    if run_file is None:
        return []
    rows = []
    for row in history(run_file):
        values = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "trainer/global_step" in values:
            values["step"] = values["trainer/global_step"]
        rows.append(values)
    return rows


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric."""
    points = [(row.get("step", i), row[key]) for i, row in enumerate(rows) if key in row and math.isfinite(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def latest_images(run_dir: Path) -> dict[str, Path]:
    """The newest PNG of each picture kind under ``images/``."""
    found = {}
    for folder in sorted((run_dir / "images").glob("*")):
        frames = sorted(folder.glob("epoch_*.png"))
        if frames:
            found[folder.name] = frames[-1]
    return dict(sorted(found.items(), key=lambda kv: IMAGE_ORDER.index(kv[0]) if kv[0] in IMAGE_ORDER else 99))


def job_overrides(run_dir: Path) -> list[str]:
    """A job's command-line overrides, from Hydra's ``.hydra/overrides.yaml``."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [line.strip()[2:] for line in path.read_text().splitlines() if line.strip().startswith("- ")]


def job_labels(jobs: list[Path]) -> dict[str, Path]:
    """Each job labelled by the overrides that differ between the jobs (``objective.beta=4``)."""
    overrides = {job: job_overrides(job) for job in jobs}
    common = set.intersection(*(set(o) for o in overrides.values())) if len(jobs) > 1 else set()
    labels = {}
    for job, items in overrides.items():
        label = " ".join(i for i in items if i not in common) or job.name
        labels[label if label not in labels else f"{label} ({job.name})"] = job
    return labels


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and is_run_dir(p)]
    return sorted(jobs, key=lambda p: (len(p.name), p.name))


# -- drawing -----------------------------------------------------------------------------------
def term_names(runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """The terms to draw, one panel each: recon, kl, elbo, then every other name logged per split as
    ``train/<name>``, ``val/<name>`` or ``test/<name>`` (L_K, an objective's extras), as first seen."""
    names = dict.fromkeys(TERMS)
    for rows in runs.values():
        for row in rows:
            for key in row:
                split, _, name = key.partition("/")
                if split in SPLITS and name and "/" not in name and name not in NOT_TERMS:
                    names.setdefault(name)
    return list(names)


def curves_figure(runs: dict[str, list[dict[str, float]]], title: str):
    """One panel per term (at most four to a row); one run: train, val and test of that run; several: val of each.
    A series of one point is drawn as a marker (a line through one point shows nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = term_names(runs)
    nrow = math.ceil(len(names) / MAX_CURVE_COLUMNS)
    ncol = math.ceil(len(names) / nrow)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 4.5 * nrow), squeeze=False)
    single = len(runs) == 1
    for ax, term in zip(axes.flat, names):
        for label, rows in runs.items():
            for split in SPLITS if single else ("val",):
                steps, values = series(rows, f"{split}/{term}")
                if not steps:
                    continue
                name = split if single else label
                if split == "test":
                    ax.scatter(steps, values, marker="*", s=120, zorder=3, label=f"{name} (best checkpoint)")
                else:
                    marked = len(steps) == 1 or (split == "val" and len(steps) < 40)
                    ax.plot(steps, values, marker="o" if marked else None, markersize=5 if len(steps) == 1 else 3,
                            alpha=0.45 if split == "train" else 1.0, label=name)
        ax.set_title(TITLES.get(term, term))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7 if not single else 8)
    for ax in axes.flat[len(names):]:
        ax.remove()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(runs: dict[str, list[dict[str, float]]], path: Path, title: str) -> Path:
    """:func:`curves_figure`, written to ``path``."""
    import matplotlib.pyplot as plt

    fig = curves_figure(runs, title)
    fig.savefig(path, dpi=SHEET_DPI)
    plt.close(fig)
    return path


def sheet_figure(curves: Path, images: dict[str, dict[str, Path]]):
    """The curves above the latest pictures (one row per run): the report as one figure. Each panel's
    title is wrapped to the panel's width, so none runs off the sheet or into its neighbour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    rows = [(label, imgs) for label, imgs in images.items() if imgs]
    ncol = max([len(imgs) for _, imgs in rows] or [1])
    width = max(15, 4 * ncol)
    curve_image = mpimg.imread(curves)
    curves_height = width * curve_image.shape[0] / curve_image.shape[1]  # the curves at the sheet's width
    fig = plt.figure(figsize=(width, curves_height + 4 * len(rows)))
    grid = fig.add_gridspec(1 + len(rows), ncol, height_ratios=[curves_height] + [4] * len(rows))
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(curve_image)
    ax.set_axis_off()
    chars = max(20, int(width / ncol * 72 / 9 * 1.6))  # characters of 9-point text across a panel
    for r, (label, imgs) in enumerate(rows, start=1):
        for c, (name, png) in enumerate(imgs.items()):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(mpimg.imread(png))
            ax.set_axis_off()
            title = f"{label}: {name} ({png.name})" if len(rows) > 1 else f"{name} ({png.name})"
            ax.set_title(textwrap.fill(title, chars), fontsize=9)
    fig.tight_layout()
    return fig


def plot_sheet(curves: Path, images: dict[str, dict[str, Path]], path: Path) -> Path:
    """:func:`sheet_figure`, written to ``path``."""
    import matplotlib.pyplot as plt

    fig = sheet_figure(curves, images)
    fig.savefig(path, dpi=SHEET_DPI)
    plt.close(fig)
    return path


# -- HTML --------------------------------------------------------------------------------------
def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>' \
           f'{html.escape(alt)}</figcaption></figure>'


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(k, ''))}</td>" for k in keys) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, sections: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:1500px;margin:2em auto;color:#222}"
             "img{max-width:100%;border:1px solid #ddd}figure{display:inline-block;margin:.5em;vertical-align:top;"
             "max-width:48%}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")


def _metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# -- the command -------------------------------------------------------------------------------
def build_report(directory: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.png`` for a run or sweep directory; return their paths."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VAEUserError(f"{directory} is not a directory: give a run directory (outputs/<date>/<time>) or a "
                           f"sweep directory (multirun/<date>/<time>).")
    out = Path(out) if out else directory
    out.mkdir(parents=True, exist_ok=True)
    if is_run_dir(directory) and not (directory / "multirun.yaml").is_file():
        runs = {directory.name: directory}
        kind = "run"
    else:  # Hydra writes multirun.yaml into a sweep directory
        runs = job_labels(sweep_jobs(directory))
        kind = "sweep"
    histories = {label: read_history(run) for label, run in runs.items()}
    if not any(histories.values()):
        raise VAEUserError(f"No metrics found under {directory}: a run directory has csv/version_*/metrics.csv or "
                           f"wandb/offline-run-*/run-*.wandb (logger=csv or logger=wandb; logger=none keeps none).")
    title = f"vae-lightning {kind}: {directory}"
    curves = plot_curves(histories, out / "report_curves.png", title)
    images = {label: latest_images(run) for label, run in runs.items()}
    sheet = plot_sheet(curves, images, out / "report.png")

    terms = term_names(histories)
    sections = ["<h2>Curves</h2>", _img(curves, f"{', '.join(terms)} per split against the training step")]
    table = [{"run": label, **{k: v for k, v in _metrics(run).items() if not isinstance(v, (dict, list))}}
             for label, run in runs.items()]
    if any(len(row) > 1 for row in table):
        sections += ["<h2>Final metrics</h2>", _table(table)]
    if kind == "sweep" and (directory / "rate_distortion.png").is_file():
        sections += ["<h2>Rate and distortion</h2>", _img(directory / "rate_distortion.png", "rate-distortion")]
    for label, imgs in images.items():
        if imgs:
            sections.append(f"<h2>Pictures{'' if kind == 'run' else ': ' + html.escape(label)}</h2>")
            sections += [_img(png, f"{name}, {png.name}") for name, png in imgs.items()]
    page = out / "report.html"
    page.write_text(_page(title, sections))
    curves.unlink()  # it is inside both the page and the sheet
    return page, sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="a run directory or a sweep directory")
    parser.add_argument("--out", help="where to write report.html and report.png (default: the directory)")
    parser.add_argument("--to-trackers", action="store_true",
                        help="also send the sheet and the page to the trackers the run (or sweep) logged to: wandb, "
                             "TensorBoard, MLflow")
    args = parser.parse_args(argv)
    try:
        page, sheet = build_report(args.directory, args.out)
        print(f"report: {page}\nsheet:  {sheet}")
        if args.to_trackers:
            from .trackers import send_report

            print(f"sent to: {', '.join(send_report(args.directory, page, sheet))}")
    except VAEUserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
