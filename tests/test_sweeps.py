"""Hydra multirun sweeps: one directory per job, a summary table and a rate-distortion plot; trainer presets."""

import csv
import json
import struct
import subprocess

import pytest

from conftest import PYTHON, ROOT, compose_run, make_fake_mnist
from test_train import _compose, run_train


def test_beta_sweep_writes_a_summary_and_a_rate_distortion_plot(fake_mnist, train_env, tmp_path):
    sweep = tmp_path / "sweep" / "2026-01-02" / "03-04-05"
    result = run_train(["-m", "logger=wandb", f"data.data_dir={fake_mnist}", "data.val_size=100", "trainer.max_epochs=1",
                        "objective.beta=0.5,1,4", f"hydra.sweep.dir={sweep}"], train_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "wandb") == ["0", "1", "2"]
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["swept"] for r in rows] == ["objective.beta=0.5", "objective.beta=1", "objective.beta=4"]
    for r in rows:  # the final metrics of each job, consistent with each other
        assert r["status"] == "done"
        assert float(r["test/elbo"]) == pytest.approx(-(float(r["test/recon"]) + float(r["test/kl"])), rel=1e-5)
    # A stronger weight on the KL term buys a smaller KL.
    assert float(rows[2]["test/kl"]) < float(rows[0]["test/kl"])
    png = (sweep / "rate_distortion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (720, 540)
    assert "Sweep summary" in result.stdout and "| objective.beta=4 | done |" in result.stdout
    # wandb: the three runs share a group named after the sweep, with their overrides as tags,
    # and a sweep_summary run in that group holds the table and the plot.
    for job, beta in zip("012", ("0.5", "1", "4")):
        (run_file,) = (sweep / job).glob("wandb/offline-run-*/run-*.wandb")
        data = run_file.read_bytes()
        assert b"sweep-2026-01-02_03-04-05" in data and f"objective.beta={beta}".encode() in data
    (summary_run,) = sweep.glob("wandb/offline-run-*/run-*.wandb")
    data = summary_run.read_bytes()
    assert b"sweep_summary" in data and b"sweep-2026-01-02_03-04-05" in data
    assert list(sweep.glob("wandb/offline-run-*/files/media/images/sweep/rate_distortion_*.png"))
    # The local report of the sweep: each job's curves and final metrics, and the rate-distortion plot.
    from vae_lightning.report import build_report

    page, sheet = build_report(sweep)
    text = page.read_text()
    for beta in ("0.5", "1", "4"):
        assert f"<td>objective.beta={beta}</td>" in text
    assert "Rate and distortion" in text and sheet.is_file()


@pytest.mark.slow  # a multirun of subprocesses (about 12 s); the DDP and sweep paths have default tests
def test_ddp_jobs_in_a_multirun_each_get_their_own_directory(fake_mnist, train_env, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(["-m", "trainer=ddp_cpu", "logger=csv", f"data.data_dir={fake_mnist}", "data.val_size=100",
                        "trainer.max_epochs=1", "objective.beta=1,2", "callbacks.rich_progress_bar=null",
                        f"hydra.sweep.dir={sweep}"], train_env, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["steps"] == 2  # half the batches per rank
        assert (sweep / job / "train_ddp_process_1.log").is_file()
    assert result.stdout.count("Sweep summary (") == 1  # written by rank 0 only


@pytest.mark.parametrize("preset, expected", [
    ("cpu", {"accelerator": "cpu", "devices": 1, "strategy": "auto"}),
    ("gpu", {"accelerator": "gpu", "devices": 1}),
    ("ddp", {"accelerator": "gpu", "devices": -1, "strategy": "ddp"}),
    ("ddp_cpu", {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}),
    ("fsdp", {"strategy": "fsdp", "devices": -1}),
    ("multinode", {"strategy": "ddp", "num_nodes": 2}),
    ("bf16", {"accelerator": "gpu", "precision": "bf16-mixed"}),
])
def test_trainer_presets_are_one_word(preset, expected):
    trainer = _compose(f"trainer={preset}").trainer
    assert {k: trainer[k] for k in expected} == expected
    assert trainer._target_ == "lightning.pytorch.Trainer" and trainer.plugins  # the defaults are inherited


@pytest.fixture(scope="module")
def uneven_mnist(tmp_path_factory):
    """Splits that 2 processes cannot share evenly: 101 validation and 201 test images."""
    return make_fake_mnist(tmp_path_factory.mktemp("uneven"), num_train=601, num_test=201, seed=1)


def test_ddp_on_two_cpu_processes_matches_one_process(uneven_mnist, train_env, tmp_path):
    """Train with 2 gloo processes on splits that do not divide by 2, then evaluate its checkpoint with
    1 process, with 2, and with 2 through the DataLoader path: the same test set, each image once."""
    import csv

    import lightning as L

    from vae_lightning import load_model
    from vae_lightning.data import MNISTDataModule

    run_dir = tmp_path / "ddp"
    result = run_train(["trainer=ddp_cpu", "logger=csv", f"data.data_dir={uneven_mnist}", "data.val_size=101",
                        "data.eval_batch_size=50", "trainer.max_epochs=2", "callbacks.rich_progress_bar=null",
                        f"hydra.run.dir={run_dir}"], train_env, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 500 training images, batch 128 per rank, 2 ranks: 2 steps an epoch (each rank its own shard).
    assert metrics["steps"] == 4 and metrics["epochs"] == 2
    # Rank 1 wrote its log into the same run directory, with its own seed (and SeedEveryStep mixes the
    # rank into every batch's seed: each rank draws its own noise).
    assert "rank 0: noise seed 42" in (run_dir / "train.log").read_text()
    assert "rank 1: noise seed 43" in (run_dir / "train_ddp_process_1.log").read_text()
    (version,) = (run_dir / "csv").iterdir()  # only rank 0 logs
    assert version.name == "version_0"

    # The validation diagnostics reduced across the 2 ranks (51 + 50 images) are one process's.
    with open(version / "metrics.csv") as f:
        last_val = [r for r in csv.DictReader(f) if r.get("val/active_units")][-1]
    model = load_model(run_dir / "checkpoints" / "last.ckpt")  # the weights that last validation saw
    dm = MNISTDataModule(data_dir=uneven_mnist, val_size=101, eval_batch_size=50, download=False)
    one_process = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False).validate(model, dm, verbose=False)[0]
    assert len(dm.val_set) == 101
    kl_dims = [k for k in last_val if k.startswith("val/kl_dim/")]
    assert len(kl_dims) == 32 and float(last_val["val/active_units"]) == one_process["val/active_units"]
    for key in kl_dims + ["val/kl"]:
        assert float(last_val[key]) == pytest.approx(one_process[key], rel=1e-5, abs=1e-7), key

    reports = {}
    for name, devices, strategy, extra in (
            ("one", 1, "auto", ["num_samples=200", "nll_samples=400"]),
            ("two", 2, "ddp", ["num_samples=200", "nll_samples=400"]),
            ("two_dataloader", 2, "ddp", ["data.loader=dataloader", "num_samples=1", "nll_samples=0"]),
            ("one_streamed", 1, "auto", ["data.in_memory=false", "num_samples=1", "nll_samples=0"]),
            ("two_streamed", 2, "ddp", ["data.in_memory=false", "num_samples=1", "nll_samples=0"])):
        out = tmp_path / f"eval_{name}"
        result = subprocess.run(
            [PYTHON, str(ROOT / "eval.py"), f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
             "trainer.accelerator=cpu", f"trainer.devices={devices}", f"trainer.strategy={strategy}", *extra,
             f"hydra.run.dir={out}"],
            cwd=tmp_path, env=train_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[name] = json.loads((out / "eval_metrics.json").read_text())
    one = reports["one"]
    for name, reference in (("two", one), ("two_dataloader", one), ("two_streamed", reports["one_streamed"])):
        # The analytic KL over the same 201 test images (101 + 100) is one process's, up to round-off:
        # a repeated image (DistributedSampler's padding) would move it. (Streamed, each test image is
        # binarised by its own generator: other fixed draws than in memory, the same on any process.)
        assert reports[name]["test/kl"] == pytest.approx(reference["test/kl"], rel=1e-6), name
    # Monte-Carlo terms (different noise per rank) agree within their sampling error.
    for key in ("test/recon", "test/elbo", "test/iwae", "test/nll"):
        assert reports["two"][key] == pytest.approx(one[key], rel=2e-3), key
    # train.py's own test (2 processes, K = 1) of its best checkpoint saw the same images too.
    best = load_model(metrics["best_checkpoint"])
    dm.setup()
    x = dm.test_set.images.float() / 255
    assert metrics["test/kl"] == pytest.approx(best(x).kl.mean().item(), rel=1e-5)


def test_optuna_search_maximises_the_validation_elbo_train_returns(fake_mnist, train_env, tmp_path):
    sweep = tmp_path / "optuna"
    result = run_train(["hparams_search=mnist_optuna", "hydra.sweeper.n_trials=2", "logger=none",
                        f"data.data_dir={fake_mnist}", "data.val_size=100", "trainer.max_epochs=1",
                        f"hydra.sweep.dir={sweep}"], train_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import yaml
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [json.loads((sweep / job / "metrics.json").read_text())["val/elbo_best"] for job in ("0", "1")]
    assert results["best_value"] == pytest.approx(max(values))
    assert set(results["best_params"]) == {"objective.beta", "model.optimizer.lr", "model.latent_dim"}


@pytest.mark.slow  # a multirun of subprocesses (about 12 s); the DDP and sweep paths have default tests
def test_joblib_launcher_runs_the_jobs_in_parallel_processes(fake_mnist, train_env, tmp_path):
    sweep = tmp_path / "joblib"
    result = run_train(["-m", "launcher=joblib", "logger=none", f"data.data_dir={fake_mnist}", "data.val_size=100",
                        "trainer.max_epochs=1", "objective.beta=1,2", f"hydra.sweep.dir={sweep}"], train_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert all((sweep / job / "metrics.json").is_file() for job in ("0", "1"))


def test_slurm_launcher_preset_composes():
    cfg = compose_run("launcher=slurm", "hydra.launcher.partition=gpu", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240


def test_a_sweep_over_disentangling_objectives_shows_each_metric_against_beta(tmp_path):
    from vae_lightning.sweep import collect, plot_disentanglement, write_table

    jobs = [("ELBO", 1, 0.05), ("ELBO", 4, 0.20), ("BetaTCVAE", 1, 0.10), ("BetaTCVAE", 4, 0.30), ("ELBO", 16, None)]
    for i, (objective, beta, mig) in enumerate(jobs):
        hydra_dir = tmp_path / str(i) / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "overrides.yaml").write_text(f"- objective.beta={beta}\n- objective={objective.lower()}\n")
        (hydra_dir / "config.yaml").write_text(f"objective:\n  _target_: vae_lightning.objectives.{objective}\n"
                                               f"  beta: {beta}\n")
        if mig is not None:  # the last job failed
            (tmp_path / str(i) / "metrics.json").write_text(json.dumps({"test/elbo": -90.0, "test/dis/mig": mig,
                                                                        "test/dis/dci_d": 2 * mig}))
    rows = collect(tmp_path)
    assert [(r["objective"], r["beta"], r["test/dis/mig"]) for r in rows] == [j for j in jobs]
    _, md = write_table(rows, tmp_path)
    header = md.read_text().splitlines()[0]
    assert "test/dis/mig" in header and "test/dis/dci_d" in header
    assert "test/dis/sap" not in header  # no job has it: no empty column
    png = plot_disentanglement(rows, tmp_path / "disentanglement.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without the metrics (an MNIST sweep) there is no such picture, and no such column.
    for i in range(len(jobs)):
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps({"test/elbo": -90.0}))
    rows = collect(tmp_path)
    assert plot_disentanglement(rows, tmp_path / "none.png") is None
    assert "test/dis" not in write_table(rows, tmp_path)[1].read_text()
