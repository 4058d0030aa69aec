"""The trackers (logger=tensorboard, mlflow, several at once), read back through each tool's own reader
(TensorBoard's EventAccumulator, MLflow's client, the wandb run file): a short two-job sweep with
logger=[tensorboard,mlflow], its summary and a report sent after it; a report sent to a wandb run; the errors."""

import csv
import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, compose_run, make_fake_mnist
from test_train import run_train
from vae_lightning.errors import VAEUserError
from vae_lightning.images import png_size
from vae_lightning.run import _instantiate_loggers

KINDS = ("reconstructions", "samples", "traversals")  # a latent space of more than 2 dimensions
TERMS = ("recon", "kl", "elbo")

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two jobs (objective.beta=1,4) of a small model with logger=[tensorboard,mlflow] (and the CSV log), one
    epoch of 4 batches each, pictures at its end; then a report sent to job 0's runs and to the sweep's summary
    runs. The sweep directory."""
    for module in ("tensorboard", "mlflow", "sqlalchemy", "alembic"):
        pytest.importorskip(module, reason="the trackers extra: pip install -e '.[trackers]'")
    from vae_lightning.trackers import send_report

    tmp = tmp_path_factory.mktemp("trackers")
    data = make_fake_mnist(tmp / "data", num_train=300, num_test=100)
    sweep_dir = tmp / "multirun" / "2026-01-02" / "03-04-05"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_")) and k != "VAE_DATA_DIR"}
    env.update(PYTHONPATH=str(ROOT))
    result = run_train(["-m", "logger=[tensorboard,mlflow]", f"data.data_dir={data}", "data.val_size=100",
                        "data.batch_size=50", "data.eval_batch_size=100", "trainer.max_epochs=1",
                        "trainer.log_every_n_steps=2", "model.encoder.hidden_dims=[32]", "model.latent_dim=4",
                        "objective.beta=1,4", "callbacks.image_logger.every_n_epochs=1",
                        f"hydra.sweep.dir={sweep_dir}"], env, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    # What report.py --to-trackers sends (a picture and a page; building them is test_dashboards' and test_report's).
    page, sheet = tmp / "report" / "report.html", tmp / "report" / "report.png"
    page.parent.mkdir()
    page.write_text("<!doctype html><title>report</title>")
    shutil.copy(sweep_dir / "0" / "images" / "samples" / "epoch_000.png", sheet)
    for directory in (sweep_dir / "0", sweep_dir):  # the job's runs; the sweep's summary runs
        assert send_report(directory, page, sheet) == ["tensorboard", "mlflow"]
    return sweep_dir


def _csv_series(run_dir, key):
    """[(step, value)] of one metric in a run's CSV log."""
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        return [(int(row["step"]), float(row[key])) for row in csv.DictReader(f) if row.get(key)]


def _same_series(series, expected):
    assert len(expected) >= 2 and [step for step, _ in series] == [step for step, _ in expected]
    assert [value for _, value in series] == pytest.approx([value for _, value in expected], rel=1e-6)


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _client(sweep_dir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")


def _artifacts(client, run_id, path=None):
    """Every artifact path of a run, recursively."""
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def _mlflow_runs(sweep_dir):
    """{job number or "summary": run}."""
    client = _client(sweep_dir)
    experiment = client.get_experiment_by_name("vae-lightning")
    runs = {}
    for run in client.search_runs([experiment.experiment_id]):
        tags = run.data.tags
        runs["summary" if "vae_lightning.sweep_summary" in tags else tags["vae_lightning.run_dir"][-1]] = run
    return client, runs


def test_tensorboard_holds_the_terms_the_pictures_and_the_config_with_the_best_bound(sweep):
    from tensorboard.plugins.hparams import metadata

    betas = {}
    for job in ("0", "1"):
        events = _events(sweep / job / "tensorboard")
        scalars = events.Tags()["scalars"]
        for split in ("train", "val", "test"):
            for term in TERMS:
                assert f"{split}/{term}" in scalars, f"{split}/{term}"
        _same_series([(e.step, e.value) for e in events.Scalars("train/elbo")], _csv_series(sweep / job, "train/elbo"))
        best = json.loads((sweep / job / "metrics.json").read_text())["val/elbo_best"]
        assert [e.value for e in events.Scalars("val/elbo_best")] == [pytest.approx(best)]
        for kind in KINDS:  # once (one epoch), the PNG itself
            (image,) = events.Images(f"images/{kind}")
            assert (image.width, image.height) == png_size(kind)
            assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
        plugin = events.PluginTagToContent(metadata.PLUGIN_NAME)
        experiment = metadata.parse_experiment_plugin_data(plugin[metadata.EXPERIMENT_TAG])
        assert [m.name.tag for m in experiment.metric_infos][0] == "val/elbo_best"
        session = metadata.parse_session_start_info_plugin_data(plugin[metadata.SESSION_START_INFO_TAG])
        betas[job] = session.hparams["objective/beta"].number_value
        assert session.hparams["model/latent_dim"].number_value == 4
        # The report sent afterwards: its sheet as an image at the run's last step.
        (report,) = events.Images("report/report") if job == "0" else [None]
        if report is not None:
            assert report.step == json.loads((sweep / job / "metrics.json").read_text())["steps"]
            assert (report.width, report.height) == png_size("samples")
    assert betas == {"0": 1.0, "1": 4.0}  # the HParams tab tells the jobs apart
    # The sweep's summary run: the table as text, the rate-distortion plot, the sweep's report.
    summary = _events(sweep / "tensorboard")
    assert summary.Tags()["images"] == ["sweep/rate_distortion", "report/report"]
    (text,) = summary.Tensors("sweep/summary/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    assert "| objective.beta=1 | done |" in table and "| objective.beta=4 | done |" in table


def test_mlflow_runs_hold_params_metrics_pictures_and_the_best_checkpoint(sweep):
    client, runs = _mlflow_runs(sweep)
    assert sorted(runs) == ["0", "1", "summary"]
    for job, beta in (("0", "1"), ("1", "4")):
        run = runs[job]
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert run.info.status == "FINISHED" and run.info.run_name == f"objective.beta={beta}"
        assert run.data.params["objective/beta"] == beta and run.data.params["model/latent_dim"] == "4"
        for split in ("train", "val", "test"):
            for term in TERMS:
                assert f"{split}/{term}" in run.data.metrics
        assert run.data.metrics["val/elbo_best"] == pytest.approx(metrics["val/elbo_best"])
        assert run.data.metrics["test/elbo"] == pytest.approx(metrics["test/elbo"])
        # The whole series, as the CSV log has it (Lightning hands every logger the same rows).
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/elbo"))
        _same_series(history, _csv_series(sweep / job, "train/elbo"))
        artifacts = _artifacts(client, run.info.run_id)
        for kind in KINDS:
            assert f"images/{kind}/epoch_000.png" in artifacts
        assert f"checkpoints/{os.path.basename(metrics['best_checkpoint'])}" in artifacts  # the best only
        assert not [a for a in artifacts if a.endswith("last.ckpt")]
        assert "resolved_config.yaml" in artifacts
    assert {"report/report.png", "report/report.html"} <= set(_artifacts(client, runs["0"].info.run_id))


def test_a_sweep_summary_is_the_parent_run_of_its_jobs_in_mlflow(sweep):
    client, runs = _mlflow_runs(sweep)
    parent = runs["summary"].info.run_id
    assert [runs[job].data.tags.get("mlflow.parentRunId") for job in ("0", "1")] == [parent, parent]
    assert "mlflow.parentRunId" not in runs["summary"].data.tags
    artifacts = _artifacts(client, parent)
    assert {"sweep/summary.json", "sweep/summary.csv", "sweep/summary.md", "sweep/rate_distortion.png",
            "report/report.png", "report/report.html"} <= set(artifacts)
    table = json.loads(open(client.download_artifacts(parent, "sweep/summary.json")).read())
    swept = table["columns"].index("swept")
    assert [row[swept] for row in table["data"]] == ["objective.beta=1", "objective.beta=4"]


def test_the_report_reaches_a_wandb_run_as_a_resumed_run_beside_it(tmp_path, monkeypatch):
    import matplotlib.image
    import wandb
    from omegaconf import OmegaConf

    from vae_lightning.trackers import send_report
    from vae_lightning.wandb_files import find_run_file, history

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="vae-lightning", dir=str(tmp_path))  # a run directory's wandb run
    run.log({"val/elbo": -90.0})
    run.finish()
    logger = OmegaConf.to_container(compose_run("logger=wandb", f"paths.output_dir={tmp_path}").logger)
    OmegaConf.save({"paths": {"output_dir": str(tmp_path)}, "logger": logger}, tmp_path / "resolved_config.yaml")
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 7}))
    sheet = tmp_path / "report.png"
    matplotlib.image.imsave(sheet, [[0.0, 1.0], [1.0, 0.0]])
    (tmp_path / "report.html").write_text("<html></html>")
    assert send_report(tmp_path, tmp_path / "report.html", sheet) == ["wandb"]
    wandb.teardown()  # finish() returns before wandb's service has written the run file; at exit it has
    # The run's own file stays the newest of wandb/ (what report.py reads without a CSV log); the report is a
    # resumed run of the same id under wandb/report/.
    original = find_run_file(tmp_path)
    assert [r["val/elbo"] for r in history(original) if "val/elbo" in r] == [-90.0]
    (resumed,) = (tmp_path / "wandb" / "report").glob("wandb/offline-run-*/run-*.wandb")
    assert resumed.parent.name.rsplit("-", 1)[-1] == run.id
    (image,) = [r["report/report"] for r in history(resumed) if "report/report" in r]
    assert image["_type"] == "image-file" and (image["width"], image["height"]) == (2, 2)
    assert (resumed.parent / "files" / "report.html").exists()


def test_several_loggers_at_once_compose():
    assert sorted(compose_run("logger=[wandb,tensorboard]").logger) == ["csv", "tensorboard", "wandb"]
    assert sorted(compose_run("logger=all").logger) == ["csv", "mlflow", "tensorboard", "wandb"]
    assert compose_run("logger=mlflow").logger.mlflow.log_model == "best"


@pytest.mark.parametrize("logger, module, needs", [
    ("tensorboard", "tensorboard", "needs the tensorboard package: pip install tensorboard"),
    ("mlflow", "mlflow", "needs the mlflow-skinny package: pip install mlflow-skinny"),
    ("mlflow", "alembic", "with a SQLite store needs SQLAlchemy and Alembic: pip install sqlalchemy alembic")],
    ids=["tensorboard", "mlflow", "sqlite-store"])
def test_a_missing_tracker_package_is_one_line_naming_it(logger, module, needs, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_run(f"logger={logger}", f"paths.output_dir={tmp_path}")
    with pytest.raises(VAEUserError) as error:
        _instantiate_loggers(cfg.logger, tmp_path)
    message = str(error.value)
    assert message.startswith(f"logger={logger}") and needs in message and "\n" not in message


def test_mlflow_refuses_a_file_store_in_one_line_and_a_silent_server_falls_back_to_csv(tmp_path, monkeypatch,
                                                                                        caplog):
    pytest.importorskip("mlflow")
    import socket

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cfg = compose_run("logger=mlflow", f"paths.output_dir={tmp_path}", f"logger.mlflow.tracking_uri=file:{tmp_path}")
    with pytest.raises(VAEUserError, match="file store .* sqlite:///"):
        _instantiate_loggers(cfg.logger, tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = compose_run("logger=mlflow", f"paths.output_dir={tmp_path}",
                      f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}")
    loggers = _instantiate_loggers(cfg.logger, tmp_path)
    assert [type(logger).__name__ for logger in loggers] == ["CSVLogger"]
    assert any("logger mlflow failed to start" in r.message and "does not answer" in r.message for r in caplog.records)
