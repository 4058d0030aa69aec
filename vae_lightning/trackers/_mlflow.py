"""MLflow: params from the config, metrics, the pictures and the best checkpoint as artifacts, in a local SQLite
store by default (or a tracking server); a sweep's summary is a parent run with the jobs as its children."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from ..errors import VAEUserError
from ._base import FollowsTraining, Target, log, multirun_job, reachable, require, swept, sweep_group, sweep_of

#: Tags that find a run again: its directory, and the sweep it is a job of (whose summary is its parent run).
RUN_DIR_TAG = "vae_lightning.run_dir"
SWEEP_TAG = "vae_lightning.sweep_dir"
SUMMARY_TAG = "vae_lightning.sweep_summary"
PARENT_TAG = "mlflow.parentRunId"
STORE = "mlflow.db"
ARTIFACTS = "mlartifacts"


def _sqlite_uri(path: Path) -> str:
    return "sqlite:///" + str(Path(path).resolve())


def resolve_tracking_uri(setting: str | None, local_dir: Path) -> str:
    """``setting`` (logger.mlflow.tracking_uri) when given, else ``$MLFLOW_TRACKING_URI``, else a SQLite store
    ``<local_dir>/mlflow.db``. A file store (``file:``, a folder) is refused where the installed MLflow refuses it
    (from 3.x unless MLFLOW_ALLOW_FILE_STORE=true), here as one line."""
    uri = setting or os.environ.get("MLFLOW_TRACKING_URI") or _sqlite_uri(local_dir / STORE)
    if uri.startswith("sqlite:"):
        for module in ("sqlalchemy", "alembic"):
            require(module, "logger=mlflow with a SQLite store", "sqlalchemy alembic", "SQLAlchemy and Alembic")
    elif "://" not in uri and uri not in ("databricks",) or uri.startswith("file:"):
        try:
            from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
        except ImportError:  # an MLflow that still takes file stores
            return uri
        if not MLFLOW_ALLOW_FILE_STORE.get():
            raise VAEUserError(f"logger.mlflow.tracking_uri={uri}: MLflow's file store is refused by this MLflow "
                               f"(maintenance mode): use sqlite:///<path>/mlflow.db, a server (http://host:5000), "
                               f"or null for {local_dir / STORE}.")
    return uri


def artifact_root(uri: str) -> str | None:
    """For a local SQLite store: ``mlartifacts/`` beside the database (MLflow's default would be ./mlruns in the
    working directory); for a server: its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS).resolve().as_uri()
    return None


def _experiment_id(client: Any, name: str, uri: str, location: str | None = None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage != "deleted":
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location or artifact_root(uri))
    except Exception:  # noqa: BLE001 - another job of the sweep made it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class MLFlowLogger(FollowsTraining, _LightningMLFlowLogger):
    """Lightning's MLFlowLogger, with: the store opened by rank 0 only, when first used (Lightning opens it in
    its constructor, on every process: processes of a multi-GPU job started together would all create a new
    SQLite store at once); no change to MLflow's process-wide tracking URI (Lightning sets it, and
    ``MLFLOW_TRACKING_URI`` with it, which the next job of a multirun would inherit); parameter values up to
    MLflow's own limit (not 250 characters), and the whole config as ``resolved_config.yaml``; at the end, the
    best checkpoint under ``checkpoints/`` (``log_model: best``) and ``<monitor>_best`` as a metric."""

    def __init__(self, *args: Any, tracking_uri: str | None = None, log_model: bool | Literal["all", "best"] = "best",
                 **kwargs: Any):
        uri = resolve_tracking_uri(tracking_uri, Path(kwargs.get("save_dir") or "."))
        # A client of a server that is never asked anything: Lightning's, in place of one that opens the store.
        super().__init__(*args, tracking_uri="http://localhost", log_model=False if log_model == "best" else log_model,
                         **kwargs)
        self._tracking_uri = uri
        self._log_best = log_model == "best"
        self._sent: dict[str, Any] = {}

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._initialized:
            return self._mlflow_client
        from mlflow.tracking import MlflowClient

        client = self._mlflow_client = MlflowClient(self._tracking_uri)
        if self._run_id is not None:
            self._experiment_id = client.get_run(self._run_id).info.experiment_id
        else:
            if self._experiment_id is None:
                self._experiment_id = _experiment_id(client, self._experiment_name, self._tracking_uri,
                                                     self._artifact_location)
            from lightning.pytorch.loggers.mlflow import _get_resolve_tags

            tags = dict(self.tags or {})
            if self._run_name:
                tags["mlflow.runName"] = self._run_name
            self._run_id = client.create_run(self._experiment_id, tags=_get_resolve_tags()(tags)).info.run_id
        self._initialized = True
        return client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
        from mlflow.entities import Param

        try:
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH as limit
        except ImportError:
            limit = 250
        params = _convert_params(params)
        if isinstance(params, dict):
            self.experiment.log_dict(self.run_id, params, "resolved_config.yaml")
        flat = [Param(key=k, value=str(v)[:limit]) for k, v in _flatten_dict(params).items()]
        for start in range(0, len(flat), 100):  # MLflow takes at most 100 params at a time
            self.experiment.log_batch(run_id=self.run_id, params=flat[start : start + 100], **self._log_batch_kwargs)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        callback = self._best_callback
        if self._initialized and status == "success" and callback is not None:
            best, score = getattr(callback, "best_model_path", ""), getattr(callback, "best_model_score", None)
            if score is not None and callback.monitor and self._sent.get("score") != float(score):
                super().log_metrics({f"{callback.monitor}_best": float(score)}, self._last_step)
                self._sent["score"] = float(score)
            if self._log_best and best and Path(best).is_file() and self._sent.get("best") != best:
                self.experiment.log_artifact(self.run_id, best, "checkpoints")
                self._sent["best"] = best
        super().finalize(status)


def mlflow_logger(save_dir: str, tracking_uri: str | None = None, experiment_name: str = "vae-lightning",
                  run_name: str | None = None, tags: list[str] | Mapping[str, Any] | None = None,
                  log_model: bool | str = "best", artifact_location: str | None = None, **kwargs: Any
                  ) -> MLFlowLogger:
    """An :class:`MLFlowLogger`. The store: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the
    run directory (a multirun's: in the sweep directory, which all its jobs and its summary share), artifacts
    in ``mlartifacts/`` beside it. In a multirun the run is named after the job's overrides and tagged with the
    sweep; ``tags``: a list (one tag ``tags``, comma-separated) or a mapping of MLflow tags."""
    require("mlflow", "logger=mlflow", "mlflow-skinny")
    sweep_dir, overrides = multirun_job()
    uri = resolve_tracking_uri(tracking_uri, sweep_dir or Path(save_dir))
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    elif uri.startswith(("http://", "https://")):  # MLflow would retry for minutes: the CSV log takes over now
        url = urlsplit(uri)
        if not reachable(url.hostname or "localhost", url.port or (443 if url.scheme == "https" else 80)):
            raise ConnectionError(f"the MLflow server {uri} does not answer")
    run_tags = dict(tags) if isinstance(tags, Mapping) else {"tags": ", ".join(map(str, tags))} if tags else {}
    run_tags[RUN_DIR_TAG] = str(Path(save_dir).resolve())
    if sweep_dir is not None:
        run_tags[SWEEP_TAG] = str(sweep_dir)
        run_tags["sweep"] = sweep_group(sweep_dir)
        run_tags["overrides"] = " ".join(overrides)
        run_name = run_name or " ".join(swept(sweep_dir, overrides))[:250] or None
    if log_model not in (True, False, "all", "best"):
        raise VAEUserError(f"logger.mlflow.log_model={log_model!r} must be best (the best checkpoint), true (the best "
                           f"and the last), all (every checkpoint as it is saved) or false.")
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri, tags=run_tags,
                        log_model=log_model, artifact_location=artifact_location, **kwargs)


class MLflowTarget(Target):
    """An MLflow run: pictures and files as artifacts (``images/<name>/epoch_NNN.png``), tables as JSON artifacts
    in MLflow's table layout (``{"columns": ..., "data": ...}``)."""

    name = "mlflow"

    def __init__(self, client: Any, run_id: str, owned: bool = False):
        self.client, self.run_id, self.owned = client, run_id, owned

    def images(self, images, step, caption, section):
        for name, path in images.items():
            folder = section if Path(path).stem == name else f"{section}/{name}"
            self.client.log_artifact(self.run_id, str(path), folder)

    def table(self, key, columns, rows):
        self.client.log_dict(self.run_id, {"columns": list(columns), "data": [list(r) for r in rows]}, f"{key}.json")

    def artifact(self, path, folder):
        self.client.log_artifact(self.run_id, str(path), folder)

    def close(self):
        if self.owned:
            self.client.set_terminated(self.run_id, "FINISHED")


def _client(uri: str) -> Any:
    require("mlflow", "logger=mlflow", "mlflow-skinny")
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs(client: Any, experiment_ids: list[str], tag: str, value: str) -> list[Any]:
    quoted = value.replace("'", "\\'")
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=f"tags.`{tag}` = '{quoted}'", max_results=1000,
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def open_summary(settings: Mapping[str, Any], sweep_dir: Path) -> MLflowTarget:
    """A parent run for the sweep, in the jobs' experiment, with every job of the sweep made its child."""
    uri = resolve_tracking_uri(settings.get("tracking_uri"), sweep_dir)
    client = _client(uri)
    experiment = _experiment_id(client, settings.get("experiment_name") or "vae-lightning", uri,
                                settings.get("artifact_location"))
    run = client.create_run(experiment, run_name=f"summary {sweep_group(sweep_dir)}",
                            tags={SUMMARY_TAG: str(sweep_dir.resolve()), "sweep": sweep_group(sweep_dir)})
    for child in _runs(client, [experiment], SWEEP_TAG, str(sweep_dir.resolve())):
        client.set_tag(child.info.run_id, PARENT_TAG, run.info.run_id)
    return MLflowTarget(client, run.info.run_id, owned=True)


def reopen(settings: Mapping[str, Any], directory: Path, sweep: bool, output_dir: Path | None = None
           ) -> MLflowTarget | None:
    """The MLflow run of a run directory (found by its tag), or a sweep's summary run; None when there is none."""
    local = directory if sweep else (sweep_of(directory) or directory)
    uri = resolve_tracking_uri(settings.get("tracking_uri"), local)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return None
    client = _client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    tag, value = (SUMMARY_TAG, directory) if sweep else (RUN_DIR_TAG, output_dir or directory)
    runs = _runs(client, experiments, tag, str(Path(value).resolve())) if experiments else []
    if not runs:
        log.warning(f"No MLflow run of {directory} in {uri}.")
        return None
    newest = max(runs, key=lambda r: r.info.start_time)
    return MLflowTarget(client, newest.info.run_id)

