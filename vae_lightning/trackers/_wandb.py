"""Weights & Biases: a logger that goes offline by itself when it cannot go online, and its runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import WandbLogger

from ..wandb_mode import WANDB_MODES, resolve_wandb_mode
from ._base import Target, log, multirun_job, sweep_group

def wandb_logger(save_dir: str, mode: str = "auto", **kwargs: Any) -> WandbLogger:
    """A WandbLogger that never prompts and never hangs.

    mode: ``auto`` (online when an API key is set and the server answers, else
    offline), ``online``, ``offline`` or ``disabled``. An offline run is kept
    under ``save_dir/wandb``; ``wandb sync <that dir>`` uploads it later.
    Other arguments go to ``WandbLogger`` (project, entity, group, tags, name, ...).
    """
    resolved, reason = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if resolved == "offline":
        log.info(f"wandb runs offline ({reason}); the run is saved under {save_dir}/wandb; "
                 f"upload it later with: wandb sync {save_dir}/wandb/offline-run-*")
    sweep_dir, overrides = multirun_job()
    if sweep_dir is not None and not kwargs.get("group"):
        kwargs["group"] = sweep_group(sweep_dir)  # the runs of one multirun side by side in the dashboard
        kwargs["tags"] = [*(kwargs.get("tags") or []), *(item[:64] for item in overrides)]
    # wandb would otherwise copy the console (progress bars included) into the run.
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if resolved == "disabled":
        kwargs["mode"] = "disabled"
    offline = resolved == "offline"
    log_model = kwargs.pop("log_model", False)
    # Lightning refuses log_model offline, but wandb keeps the artifact in the offline run and
    # `wandb sync` uploads it with the rest: ask for it after construction.
    logger = WandbLogger(save_dir=save_dir, offline=offline, log_model=False if offline else log_model, **kwargs)
    logger._log_model = log_model
    return logger


def define_wandb_metrics(logger: WandbLogger) -> None:
    """Summaries the runs table shows: the best validation bound (max), the lowest validation
    recon and KL; the rest keep their last value. Charts group by prefix into the sections
    ``train/``, ``val/``, ``test/`` and ``images/``, all against ``trainer/global_step``."""
    run = logger.experiment
    if not hasattr(run, "define_metric"):  # rank > 0: a dummy
        return
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    for key in ("val/elbo", "val/iwae"):
        run.define_metric(key, step_metric="trainer/global_step", summary="max,last")
    for key in ("val/recon", "val/kl"):
        run.define_metric(key, step_metric="trainer/global_step", summary="min,last")


class WandbTarget(Target):
    """A wandb run: pictures as ``wandb.Image`` (one history row per call), tables as ``wandb.Table``,
    files saved with the run."""

    name = "wandb"

    def __init__(self, run: Any, logger: WandbLogger | None = None, owned: bool = False):
        self.run, self.logger, self.owned = run, logger, owned

    def images(self, images, step, caption, section):
        import wandb

        row = {f"{section}/{name}": wandb.Image(str(path), caption=caption) for name, path in images.items()}
        if self.logger is not None:  # beside trainer/global_step, the x axis of every chart
            self.logger.log_metrics(row, step=step)
        else:
            self.run.log(row)

    def table(self, key, columns, rows):
        import wandb

        self.run.log({key: wandb.Table(columns=[c.replace("/", "_") for c in columns], data=rows)})

    def artifact(self, path, folder):
        self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def close(self):
        if self.owned:
            self.run.finish()


def _init(settings: Mapping[str, Any], directory: Path, **kwargs: Any) -> WandbTarget:
    import wandb

    mode, _ = resolve_wandb_mode(settings.get("mode") or "auto")
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_CONSOLE", "off")
    run = wandb.init(project=settings.get("project"), entity=settings.get("entity"), mode=mode, dir=str(directory),
                     reinit="finish_previous", **kwargs)
    return WandbTarget(run, owned=True)


def open_summary(settings: Mapping[str, Any], sweep_dir: Path) -> WandbTarget:
    """One extra run in the sweep's group, job type ``sweep_summary``."""
    return _init(settings, sweep_dir, group=sweep_group(sweep_dir), job_type="sweep_summary",
                 name=f"summary {sweep_dir.name}")


def reopen(settings: Mapping[str, Any], directory: Path, sweep: bool) -> WandbTarget | None:
    """The run of ``directory`` (a sweep's: its summary run) resumed, to add to it; None when it has none.
    Offline, the addition is a run of its own with the same id under ``wandb/report/`` (``wandb sync`` it
    too), so the training run's file stays the newest of ``wandb/``."""
    runs = sorted((p for p in (directory / "wandb").glob("*run-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not runs:
        return None
    run_id = runs[-1].name.rsplit("-", 1)[-1]
    return _init(settings, directory / "wandb" / "report", id=run_id, resume="allow")
