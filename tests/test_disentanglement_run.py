"""The disentanglement loop end to end, as the README runs it: a sweep of +experiment=dsprites over
disentangling objectives trains on the generated grid, logs val/dis/* and test/dis/* (CSV), draws the
heatmap and the labelled traversals, and ends with a summary table and each metric against beta;
eval.py disentanglement=true gives a checkpoint's metrics, the same on one process and on two."""

import csv
import json
import subprocess

import pytest

from conftest import PYTHON, ROOT
from test_train import _compose, run_train

#: Sample sizes small enough for a test (the metrics' own sizes are tested in test_disentanglement_metrics.py).
TINY = ("{num_points: 300, num_test: 200, num_bins: 20, dci_train: 300, dci_test: 200, dci_n_estimators: 2, "
        "vote_group_size: 8, vote_num_train: 20, vote_num_eval: 10, variance_points: 300, prune_threshold: 0.05, "
        "batch_size: 500}")
#: A few steps of a small MLP on the generated grid, streamed (no need to draw all 737,280 images).
FAST = ["data.source=generate", "data.in_memory=false", "model=mlp", "model.encoder.hidden_dims=[32]",
        "model.latent_dim=4", "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "data.eval_batch_size=64", "logger=csv", "callbacks.rich_progress_bar=null",
        f"callbacks.disentanglement.settings={TINY}", f"callbacks.disentanglement.test_settings={TINY}"]
METRICS = ("mig", "sap", "dci_d", "dci_c", "dci_i", "beta_vae", "factor_vae", "modularity", "explicitness",
           "gaussian_tc", "mutual_info")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, fake_mnist):
    tmp = tmp_path_factory.mktemp("dsprites")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(ROOT))
    sweep_dir = tmp / "sweep"
    result = run_train(["-m", "+experiment=dsprites", "objective=beta_tcvae,factor_vae", "objective.beta=4",
                        *FAST, f"paths.data_dir={tmp / 'data'}", f"hydra.sweep.dir={sweep_dir}"], env, tmp, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, env, result.stdout


def test_a_dsprites_sweep_logs_the_metrics_draws_them_and_summarises_them(sweep):
    sweep_dir, _, stdout = sweep
    # Each job ends with its headline scores on a line of their own, apart from the terms in nats.
    assert stdout.count("disentanglement: mig=") == 2 and "dci_d=" in stdout
    assert all("test/dis/" not in line for line in stdout.splitlines() if line.startswith("test metrics:"))
    for job, objective in (("0", "BetaTCVAE"), ("1", "FactorVAE")):
        run_dir = sweep_dir / job
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for name in METRICS:
            assert isinstance(metrics[f"test/dis/{name}"], float), name
        for name in ("mig", "sap", "dci_d", "dci_c", "beta_vae", "factor_vae", "modularity"):
            assert 0.0 <= metrics[f"test/dis/{name}"] <= 1.0, name
        assert metrics["steps"] == 4  # training batches, also for FactorVAE's two optimiser steps a batch
        (version,) = (run_dir / "csv").iterdir()
        with open(version / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        logged = [r for r in rows if r.get("val/dis/mig")]
        assert len(logged) == 2  # every validation (every 2 of the 4 steps)
        assert all(0.0 <= float(r["val/dis/dci_d"]) <= 1.0 for r in logged)
        config = (run_dir / ".hydra" / "config.yaml").read_text()
        assert f"vae_lightning.objectives.{objective}" in config
        for picture in ("mi_heatmap", "factor_traversals"):
            # One per evaluation, named by the training batches seen (two validations within the one epoch).
            names = sorted(p.name for p in (run_dir / "images" / picture).iterdir())
            assert names == ["step_0000002.png", "step_0000004.png", "test.png"], (picture, names)
            for name in names:
                assert (run_dir / "images" / picture / name).read_bytes()[:4] == b"\x89PNG", (picture, name)
    log = (sweep_dir / "0" / "train.log").read_text()
    assert "disentanglement (test): mig=" in log
    assert f"run directory {sweep_dir / '0'} (checkpoints" in log  # where the run is written, said at its start
    header = (sweep_dir / "summary.md").read_text().splitlines()[0]
    assert "test/dis/mig" in header and "test/dis/factor_vae" in header
    assert (sweep_dir / "disentanglement.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # three eval.py subprocesses, one DDP (about 18 s); the run's own test/dis/* stay in the default run
def test_eval_gives_a_checkpoints_metrics_the_same_on_one_process_and_on_two(sweep, tmp_path):
    sweep_dir, env, _ = sweep
    test = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    ckpt = test["best_checkpoint"]  # the weights the run's own test measured
    reports = {}
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        out = tmp_path / f"eval_{devices}"
        result = subprocess.run(
            [PYTHON, str(ROOT / "eval.py"), f"ckpt_path={ckpt}", "disentanglement=true",
             f"disentanglement_settings={TINY}", "num_samples=1", "nll_samples=0", "trainer.limit_test_batches=1",
             "trainer.accelerator=cpu", f"trainer.devices={devices}", f"trainer.strategy={strategy}",
             f"hydra.run.dir={out}"],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[devices] = json.loads((out / "eval_metrics.json").read_text())
    for name in METRICS:
        assert reports[2][f"dis/{name}"] == reports[1][f"dis/{name}"], name
        # The same weights, seed and sample sizes as the run's own test: the numbers of its metrics.json.
        assert reports[1][f"dis/{name}"] == pytest.approx(test[f"test/dis/{name}"], rel=1e-5, abs=1e-6), name


def test_the_metrics_callback_on_data_without_factors_is_one_clear_error(fake_mnist, tmp_path):
    from vae_lightning.errors import VAEUserError
    from vae_lightning.run import train

    cfg = _compose("logger=none", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
                   "data.val_size=100", "+callbacks.disentanglement._target_="
                                        "vae_lightning.disentanglement.DisentanglementMetrics")
    with pytest.raises(VAEUserError, match=r"callbacks.disentanglement needs data with known factors \(data=dsprites"):
        train(cfg)


def test_bad_metric_settings_name_their_key():
    from vae_lightning.disentanglement import DisentanglementMetrics
    from vae_lightning.errors import VAEUserError

    with pytest.raises(VAEUserError, match=r"callbacks.disentanglement.settings: unknown disentanglement setting"):
        DisentanglementMetrics(settings={"num_point": 10})
    with pytest.raises(VAEUserError, match=r"callbacks.disentanglement.test_settings: .*num_bins=0"):
        DisentanglementMetrics(test_settings={"num_bins": 0})


def test_eval_offers_every_setting_at_the_reference_size():
    from conftest import compose_run
    from omegaconf import OmegaConf

    from vae_lightning.disentanglement import DEFAULT_SETTINGS

    cfg = compose_run(config_name="eval")
    assert OmegaConf.to_container(cfg.disentanglement_settings) == DEFAULT_SETTINGS
    preset = compose_run("+experiment=dsprites").callbacks.disentanglement
    assert set(preset.settings) == set(preset.test_settings) == set(DEFAULT_SETTINGS)


def test_the_check_for_known_factors_reads_no_data(tmp_path):
    # eval.py checks before the test downloads anything: a 3D Shapes run whose file is not there yet passes.
    from vae_lightning.data import MNISTDataModule, Shapes3DDataModule
    from vae_lightning.disentanglement.callback import require_known_factors
    from vae_lightning.errors import VAEUserError

    require_known_factors(Shapes3DDataModule(data_dir=tmp_path, download=True), "disentanglement=true")
    assert not any(tmp_path.iterdir())
    with pytest.raises(VAEUserError, match="disentanglement=true needs data with known factors"):
        require_known_factors(MNISTDataModule(data_dir=tmp_path), "disentanglement=true")


def test_an_error_on_rank_zero_reaches_every_process():
    from types import SimpleNamespace

    from vae_lightning.disentanglement.callback import run_on_rank_zero

    def fail():
        raise ValueError("no codes")

    sent = []
    strategy = SimpleNamespace(broadcast=lambda obj, src: sent.append(obj) or obj)
    with pytest.raises(ValueError, match="no codes"):
        run_on_rank_zero(SimpleNamespace(is_global_zero=True, strategy=strategy), fail)
    assert isinstance(sent[0], ValueError)  # broadcast, so the other processes raise it too
    assert run_on_rank_zero(SimpleNamespace(is_global_zero=False, strategy=SimpleNamespace(
        broadcast=lambda obj, src: {"mig": 0.5})), fail) == {"mig": 0.5}  # a rank > 0 computes nothing
