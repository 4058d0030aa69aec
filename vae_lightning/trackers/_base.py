"""What every tracker shares: the run handle the sending functions talk to, and the run's place in a sweep."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Mapping

from ..errors import VAEUserError
from ..wandb_mode import reachable  # noqa: F401  (one TCP check for every tracker's server)

log = logging.getLogger("vae_lightning")

#: ``pip install`` line for the optional trackers.
EXTRA = "'vae-lightning[trackers]'"


class Target:
    """One tracker's run as the sending functions see it. A tracker without some kind of record leaves
    that method alone (TensorBoard keeps no files, so ``artifact`` does nothing there)."""

    name = "tracker"

    def images(self, images: Mapping[str, Path], step: int, caption: str | None, section: str) -> None:
        """PNG files, each under ``<section>/<name>``, at ``step``."""

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table of plain values."""

    def artifact(self, path: Path, folder: str | None) -> None:
        """A file kept with the run (under ``folder``)."""

    def close(self) -> None:
        """End a run this module opened (a sweep summary, a report); a training run's logger is Lightning's."""


def require(module: str, option: str, package: str | None = None, what: str | None = None) -> None:
    """A VAEUserError that names what to install when ``module`` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        package = package or module
        raise VAEUserError(f"{option} needs {what or f'the {package} package'}: pip install {package} "
                           f"(or pip install {EXTRA}).") from None


def kind_of(entry: Mapping[str, Any] | None) -> str | None:
    """Which tracker a logger entry of the config builds: ``wandb``, ``tensorboard``, ``mlflow`` or None."""
    target = str((entry or {}).get("_target_", "")).lower()
    for kind in ("wandb", "tensorboard", "mlflow"):
        if kind in target:
            return kind
    return None


def plain(entry: Any) -> dict[str, Any]:
    """A logger entry as plain values; a key whose interpolation cannot resolve here (``${paths.output_dir}``
    after the jobs of a multirun) is left out."""
    from omegaconf import Container, DictConfig, OmegaConf

    if not isinstance(entry, DictConfig):
        return dict(entry or {})
    out = {}
    for key in entry:
        try:
            value = OmegaConf.select(entry, str(key), throw_on_resolution_failure=True)
            out[str(key)] = OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
        except Exception:  # noqa: BLE001 - a Hydra interpolation outside a job
            continue
    return out


def multirun_job() -> tuple[Path | None, list[str]]:
    """Inside a job of a Hydra multirun: the sweep directory and the job's overrides; else (None, [])."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not inside a Hydra app
        return None, []
    if hc.mode != RunMode.MULTIRUN:
        return None, []
    return Path(hc.sweep.dir).resolve(), list(hc.overrides.task)


def swept(sweep_dir: Path, overrides: list[str]) -> list[str]:
    """The job's overrides that its sweep varies: those not on the multirun's command line as they are
    (``objective.beta=4`` of ``objective.beta=1,4``; every parameter an Optuna search chooses)."""
    from omegaconf import OmegaConf

    try:
        common = set(OmegaConf.select(OmegaConf.load(sweep_dir / "multirun.yaml"), "hydra.overrides.task") or [])
    except (OSError, ValueError, TypeError):
        common = set()
    return [item for item in overrides if item not in common]


def sweep_group(sweep_dir: Path) -> str:
    """The name the runs of one sweep share: ``sweep-<date>_<time>``."""
    return "sweep-" + "_".join(Path(sweep_dir).parts[-2:])


def sweep_of(run_dir: Path) -> Path | None:
    """The sweep directory a run directory is a job of (Hydra writes multirun.yaml there), or None."""
    for parent in list(Path(run_dir).resolve().parents)[:3]:
        if (parent / "multirun.yaml").is_file():
            return parent
    return None


class FollowsTraining:
    """For a logger that writes the best checkpoint's score when the run ends: the newest step logged and the
    checkpoint callback (``_best_callback``: a name Lightning's loggers do not use). Before Lightning's class in
    the bases."""

    _last_step = 0
    _best_callback: Any = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is not None:
            self._last_step = max(self._last_step, int(step))
        super().log_metrics(metrics, step)  # type: ignore[misc]

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._best_callback = checkpoint_callback
        super().after_save_checkpoint(checkpoint_callback)  # type: ignore[misc]
