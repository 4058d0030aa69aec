"""TensorBoard: scalars, pictures, and the config as hparams with the run's best validation bound as its metric,
so the HParams tab compares the runs of a sweep."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from ._base import FollowsTraining, Target, require

#: The metrics the HParams tab shows beside the config: what a sweep is judged by.
HPARAM_METRICS = ("val/elbo_best", "test/elbo", "test/recon", "test/kl")


class TensorBoardLogger(FollowsTraining, _LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, with the hyper-parameters written once with :data:`HPARAM_METRICS` as their
    metrics (not Lightning's ``hp_metric`` placeholder), and ``<monitor>_best`` (``val/elbo_best``: the best
    checkpoint's score) written when the run ends."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)
        self._best_written: tuple[str, float] | None = None

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
        from torch.utils.tensorboard.summary import hparams

        super().log_hyperparams(params, metrics, step)  # kept for hparams.yaml; writes nothing without metrics
        if metrics is not None:
            return
        flat = self._sanitize_params(_flatten_dict(_convert_params(params)))
        flat = {k: "null" if v is None else v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in flat.items()}
        writer = self.experiment._get_file_writer()
        for summary in hparams(flat, dict.fromkeys(HPARAM_METRICS, 0.0)):  # the metrics' names only
            writer.add_summary(summary)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        best = getattr(self._best_callback, "best_model_score", None)
        monitor = getattr(self._best_callback, "monitor", None)
        if status == "success" and best is not None and monitor:
            written = (f"{monitor}_best", float(best))
            if written != self._best_written:
                super().log_metrics({written[0]: written[1]}, self._last_step)
                self._best_written = written
        super().finalize(status)


def tensorboard_logger(save_dir: str, name: str = "tensorboard", version: str | int | None = "",
                       **kwargs: Any) -> TensorBoardLogger:
    """A :class:`TensorBoardLogger` writing into ``save_dir/name/version`` (version ``""``: ``save_dir/name``, so
    a resumed run goes on in the same TensorBoard run)."""
    require("tensorboard", "logger=tensorboard")
    return TensorBoardLogger(save_dir=save_dir, name=name, version=version, **kwargs)


def _pixels(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class TensorBoardTarget(Target):
    """A TensorBoard run (a SummaryWriter): pictures as images, tables as Markdown text; no files."""

    name = "tensorboard"

    def __init__(self, writer: Any, owned: bool = False):
        self.writer, self.owned = writer, owned

    def images(self, images, step, caption, section):
        for name, path in images.items():
            self.writer.add_image(f"{section}/{name}", _pixels(Path(path)), step, dataformats="HWC")
        self.writer.flush()

    def table(self, key, columns, rows):
        def cell(v: Any) -> str:
            return "" if v is None else f"{v:.4g}" if isinstance(v, float) else html.escape(str(v)).replace("|", "\\|")

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text(key, "\n".join(lines), 0)
        self.writer.flush()

    def close(self):
        if self.owned:
            self.writer.close()


def _writer(log_dir: Path) -> TensorBoardTarget:
    require("tensorboard", "logger=tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return TensorBoardTarget(SummaryWriter(log_dir=str(log_dir)), owned=True)


def open_summary(settings: Mapping[str, Any], sweep_dir: Path) -> TensorBoardTarget:
    """A run ``<sweep dir>/<name>`` (``tensorboard --logdir <sweep dir>`` shows it beside the jobs')."""
    return _writer(sweep_dir / (settings.get("name") or "tensorboard"))


def reopen(settings: Mapping[str, Any], directory: Path, sweep: bool, output_dir: Path | None = None
           ) -> TensorBoardTarget | None:
    """The TensorBoard run of ``directory`` (a sweep's: its summary run), written to in a new event file."""
    name = settings.get("name") or "tensorboard"
    if sweep:
        root = directory / name
    else:
        save_dir = Path(settings.get("save_dir") or directory)
        try:  # where the run was written, relative to its directory: the directory may have moved since
            save_dir = directory / save_dir.relative_to(output_dir) if output_dir else save_dir
        except ValueError:
            pass
        root = save_dir / name
        version = settings.get("version", "")
        if version is None:
            versions = sorted(root.glob("version_*"), key=lambda p: p.stat().st_mtime)
            root = versions[-1] if versions else root
        else:
            root = root / (version if isinstance(version, str) else f"version_{version}")
    if not root.is_dir():
        return None
    return _writer(root)
