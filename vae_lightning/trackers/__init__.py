"""The trackers a run logs to (``logger=wandb``, ``tensorboard``, ``mlflow``, several at once as
``logger=[wandb,tensorboard]`` or ``logger=all``), and the one place that sends them what is not a scalar.

Lightning's loggers take the scalars (the train, val and test terms) and the config (``log_hyperparams``). The
rest goes through the functions here, to every tracker the run uses, whichever they are:

    log_images(trainer.loggers, {"samples": png, ...}, step)        pictures (images.py, the disentanglement callback)
    log_table(runs, "sweep/summary", columns, rows)                  tables (the sweep summary)
    log_artifact(runs, path, "sweep")                                files kept with the run

``loggers`` is a trainer's loggers or the runs :func:`sweep_summary_runs` / :func:`report_runs` open after the fact
(a multirun's summary; ``report.py --to-trackers``). Nothing outside this package names a tracker.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ._base import Target, kind_of, log, plain
from ._mlflow import MLFlowLogger, MLflowTarget, mlflow_logger
from ._tensorboard import TensorBoardLogger, TensorBoardTarget, tensorboard_logger
from ._wandb import WANDB_MODES, WandbTarget, define_wandb_metrics, resolve_wandb_mode, wandb_logger

__all__ = ["WANDB_MODES", "MLFlowLogger", "TensorBoardLogger", "Target", "define_wandb_metrics", "log_artifact",
           "log_images", "log_table", "mlflow_logger", "prepare", "report_runs", "resolve_wandb_mode", "send_report",
           "sweep_summary_runs", "tensorboard_logger", "wandb_logger"]


def _target(logger: Any) -> Target | None:
    """The run behind one of Lightning's loggers, or None for one that takes scalars only (CSV)."""
    if isinstance(logger, Target):
        return logger
    from lightning.pytorch.loggers import MLFlowLogger as AnyMLFlowLogger
    from lightning.pytorch.loggers import TensorBoardLogger as AnyTensorBoardLogger
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # the others hold dummies
        return None
    if isinstance(logger, WandbLogger):
        return WandbTarget(logger.experiment, logger)
    if isinstance(logger, AnyTensorBoardLogger):
        return TensorBoardTarget(logger.experiment)
    if isinstance(logger, AnyMLFlowLogger):
        return MLflowTarget(logger.experiment, logger.run_id)
    return None


def _each(loggers: Iterable[Any], what: str, send: Callable[[Target], None]) -> None:
    """``send`` to every tracker; one that fails is a warning (the files on disk are the record, a tracker a copy)."""
    for logger in loggers or ():
        target = _target(logger)
        if target is None:
            continue
        try:
            send(target)
        except Exception as e:  # noqa: BLE001
            log.warning(f"Could not send {what} to {target.name} ({type(e).__name__}: {e}).")


def log_images(loggers: Iterable[Any], images: Mapping[str, str | Path], step: int, caption: str | None = None,
               section: str = "images") -> None:
    """PNG files as pictures, each as ``<section>/<name>`` at ``step``: wandb images in one history row,
    TensorBoard images, MLflow artifacts ``<section>/<name>/<file>``."""
    images = {name: Path(path) for name, path in images.items() if path is not None}
    if images:
        _each(loggers, f"{section}/ pictures", lambda t: t.images(images, step, caption, section))


def log_table(loggers: Iterable[Any], key: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table: a wandb Table, Markdown text in TensorBoard, a JSON artifact ``<key>.json`` in MLflow."""
    _each(loggers, key, lambda t: t.table(key, list(columns), [list(r) for r in rows]))


def log_artifact(loggers: Iterable[Any], path: str | Path, folder: str | None = None) -> None:
    """A file kept with the run: saved with the wandb run, an MLflow artifact under ``folder``; TensorBoard keeps
    none."""
    _each(loggers, Path(path).name, lambda t: t.artifact(Path(path), folder))


def prepare(logger: Any) -> None:
    """What a logger needs once it has started: wandb's summaries and chart axes."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        define_wandb_metrics(logger)


# -- runs opened after training: a sweep's summary, a report -------------------------------------------------------
_OPENERS = {"wandb": "_wandb", "tensorboard": "_tensorboard", "mlflow": "_mlflow"}


def _module(kind: str) -> Any:
    import importlib

    return importlib.import_module(f".{_OPENERS[kind]}", __name__)


def _trackers(logger_group: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(entry name, kind, settings) of each tracker in a config's logger group."""
    out = []
    for name, entry in (logger_group or {}).items():
        kind = kind_of(entry)
        if kind is not None:
            out.append((str(name), kind, plain(entry)))
    return out


@contextlib.contextmanager
def _opened(openers: list[tuple[str, Callable[[], Target | None]]]) -> Iterator[list[Target]]:
    runs: list[Target] = []
    try:
        for name, open_run in openers:
            try:
                run = open_run()
            except Exception as e:  # noqa: BLE001 - the other trackers still get theirs
                log.warning(f"Could not open a run in {name} ({type(e).__name__}: {e}).")
                continue
            if run is not None:
                runs.append(run)
        yield runs
    finally:
        for run in runs:
            try:
                run.close()
            except Exception as e:  # noqa: BLE001
                log.warning(f"Could not close the {run.name} run ({type(e).__name__}: {e}).")


def sweep_summary_runs(logger_group: Any, sweep_dir: str | Path) -> contextlib.AbstractContextManager[list[Target]]:
    """A summary run in each tracker of a multirun's logger group, closed on leaving: wandb, a run in the sweep's
    group (job type ``sweep_summary``); TensorBoard, ``<sweep dir>/tensorboard``; MLflow, a parent run with the
    sweep's jobs as its children (tag ``mlflow.parentRunId``)."""
    sweep_dir = Path(sweep_dir)
    return _opened([(name, lambda kind=kind, settings=settings: _module(kind).open_summary(settings, sweep_dir))
                    for name, kind, settings in _trackers(logger_group)])


def _run_config(directory: Path) -> tuple[dict[str, Any], bool]:
    """The config a run (or a sweep's first job) ran with, and whether ``directory`` is a sweep."""
    from omegaconf import OmegaConf

    sweep = (directory / "multirun.yaml").is_file()
    candidates = [directory / "resolved_config.yaml"] if not sweep else sorted(
        directory.glob("*/resolved_config.yaml"), key=lambda p: (len(p.parent.name), p.parent.name))
    for path in candidates:
        if path.is_file():
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False), sweep
    return {}, sweep


def report_runs(directory: str | Path) -> contextlib.AbstractContextManager[list[Target]]:
    """The runs of a run directory's trackers (a sweep directory's: its summary runs), reopened to add to."""
    directory = Path(directory)
    config, sweep = _run_config(directory)
    output_dir = (config.get("paths") or {}).get("output_dir")
    output_dir = Path(output_dir) if output_dir and not sweep else None
    return _opened([(name, lambda kind=kind, settings=settings: _module(kind).reopen(
        settings, directory, sweep, **({} if kind == "wandb" else {"output_dir": output_dir})))
        for name, kind, settings in _trackers(config.get("logger"))])


def send_report(directory: str | Path, page: str | Path, sheet: str | Path) -> list[str]:
    """The report of a run or sweep directory into the trackers it ran with: the sheet as the picture ``report/report``
    (at the run's last step), the page as a file. Returns the trackers reached."""
    from ..errors import VAEUserError

    directory = Path(directory)
    metrics = directory / "metrics.json"
    step = json.loads(metrics.read_text()).get("steps", 0) if metrics.is_file() else 0
    with report_runs(directory) as runs:
        if not runs:
            raise VAEUserError(f"{directory} has no tracker run to send the report to (it ran with logger=csv or none, "
                               f"or its runs are gone): the report is in {Path(page).parent}.")
        log_images(runs, {"report": sheet}, int(step or 0), section="report")
        log_artifact(runs, page, "report")
        return [run.name for run in runs]
