"""The debug presets (conf/debug/, `python train.py +experiment=NAME debug=PRESET`): each composes with every
experiment and wins over it, and fast_dev_run and the profiler run end to end."""

import json
import math
import subprocess

import lightning as L
import pytest

from conftest import PYTHON, ROOT
from vae_lightning.precheck import check_train_config, debug_last

PRESETS = ("default", "fdr", "limit", "overfit", "profiler")
EXPERIMENTS = ("mnist", "dsprites", "celeba64")  # MNIST, data with known factors (validation by steps), CelebA

#: What each preset sets on top of default's (trainer keys).
OWN = {
    "default": {"max_epochs": 1},
    "fdr": {"fast_dev_run": True},
    "limit": {"max_epochs": 3, "limit_train_batches": 5, "limit_val_batches": 2, "limit_test_batches": 2},
    "overfit": {"max_epochs": 20, "overfit_batches": 3},
    "profiler": {"max_epochs": 1, "profiler": "simple"},
}


@pytest.fixture(scope="module")
def compose():
    """compose(*overrides) as train.py composes them (the preset after the experiment), Hydra's node included;
    one Hydra initialisation for the module's compositions."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield lambda *overrides, hydra=True: hydra_compose("train", overrides=debug_last(overrides),
                                                           return_hydra_config=hydra)


@pytest.fixture(scope="module")
def experiments(compose):
    return {name: compose(f"+experiment={name}") for name in EXPERIMENTS}


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_composes_with_every_experiment_and_wins(preset, compose, experiments):
    for experiment, plain in experiments.items():
        # On the command line the preset may come first: train.py applies it after the experiment.
        cfg = compose(f"debug={preset}", f"+experiment={experiment}", "paths.data_dir=/data")
        trainer = cfg.trainer
        where = f"{experiment} debug={preset}"
        assert {k: trainer.get(k) for k in OWN[preset]} == OWN[preset], where
        if preset != "fdr":
            assert trainer.get("fast_dev_run") is None, where
        # default's: one device, anomaly detection, validation every epoch, no step limit from the experiment.
        assert (trainer.devices, trainer.num_nodes, trainer.strategy, trainer.detect_anomaly) == (1, 1, "auto", True)
        assert (trainer.max_steps, trainer.val_check_interval, trainer.check_val_every_n_epoch) == (-1, 1.0, 1), where
        assert (cfg.data.num_workers, cfg.data.pin_memory) == (0, False)
        assert list(cfg.logger or {}) == ([] if preset == "fdr" else ["csv"]), where  # the experiments' is wandb
        assert cfg.ckpt_path is None, where  # ckpt_path=auto would resume a run directory's last.ckpt
        assert cfg.hydra.run.dir.startswith("outputs/debug/") and cfg.hydra.sweep.dir.startswith("multirun/debug/")
        assert list(cfg.hydra.verbose) == ["vae_lightning"]
        # The experiment is otherwise the experiment.
        assert cfg.data._target_ == plain.data._target_
        assert cfg.model == plain.model and cfg.objective == plain.objective
        check_train_config(cfg)  # and it passes the checks


def test_the_command_line_wins_over_a_preset(compose):
    cfg = compose("+experiment=mnist", "debug=limit", "trainer.max_epochs=5", "trainer.limit_val_batches=1")
    assert (cfg.trainer.max_epochs, cfg.trainer.limit_val_batches, cfg.trainer.limit_train_batches) == (5, 1, 5)
    cfg = compose("debug=profiler", "trainer.profiler=advanced", "ckpt_path=auto", "logger=wandb")
    assert cfg.trainer.profiler == "advanced" and cfg.ckpt_path == "auto" and "wandb" in cfg.logger
    assert compose("debug=null", "+experiment=mnist").trainer.max_epochs == 50  # no preset


def test_debug_last_moves_the_preset_after_everything_else():
    assert debug_last(["debug=fdr", "+experiment=mnist", "-m", "objective.beta=1,2"]) == [
        "+experiment=mnist", "-m", "objective.beta=1,2", "+debug=fdr"]
    assert debug_last(["+debug=limit", "model=conv"]) == ["model=conv", "+debug=limit"]
    assert debug_last(["debug=null", "model=conv"]) == ["model=conv"]
    assert debug_last(["debug.x=1"]) == ["debug.x=1"]  # a key under debug, not the preset
    assert debug_last(["debug=limit", "model=conv", "--cfg", "job"]) == ["model=conv", "+debug=limit", "--cfg", "job"]


def test_train_py_applies_the_preset_after_the_experiment(train_env, tmp_path):
    """train.py itself reorders the command line (`--cfg job` prints the config it would run)."""
    result = subprocess.run([PYTHON, str(ROOT / "train.py"), "debug=limit", "+experiment=dsprites", "--cfg", "job"],
                            cwd=tmp_path, env=train_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_epochs: 3\n" in result.stdout and "limit_train_batches: 5\n" in result.stdout
    assert "val_check_interval: 1.0\n" in result.stdout and "max_steps: -1\n" in result.stdout  # not dsprites'


def _run(compose, tmp_path, fake_mnist, *overrides):
    from vae_lightning.run import train

    cfg = compose("+experiment=mnist", *overrides, f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
                  "data.val_size=100", "callbacks.image_logger.every_n_epochs=0", hydra=False)
    return train(cfg)


def test_fast_dev_run_runs_one_batch_of_each_split_and_saves_nothing(compose, fake_mnist, tmp_path):
    metrics = _run(compose, tmp_path, fake_mnist, "debug=fdr", "logger=csv")  # a logger asked for: none starts
    assert metrics["steps"] == 1 and math.isfinite(metrics["test/elbo"])
    assert "val/elbo_best" not in metrics  # no checkpoint, so no best one: a sweeper gets None (train.py warns)
    assert json.loads((tmp_path / "metrics.json").read_text())["best_checkpoint"] == ""
    # No checkpoint (Lightning 2.6 would still write last.ckpt), no tracker run.
    assert not list(tmp_path.rglob("*.ckpt"))
    assert not (tmp_path / "csv").exists() and not (tmp_path / "wandb").exists()


def test_the_profiler_preset_writes_its_report_into_the_run_directory(compose, fake_mnist, tmp_path):
    _run(compose, tmp_path, fake_mnist, "debug=profiler", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    fit, test = (tmp_path / "fit-profile.txt").read_text(), (tmp_path / "test-profile.txt").read_text()
    assert "FIT Profiler Report" in fit and "run_training_batch" in fit and "validation_step" in fit
    assert "TEST Profiler Report" in test and "test_step" in test


# -- slow: the other presets run, the advanced profiler, a multirun ----------------------------------------

class BatchProbe(L.Callback):
    """Keeps a fingerprint of each training batch per epoch (built from the config:
    +callbacks.probe._target_=test_debug.BatchProbe)."""

    seen: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        BatchProbe.seen.setdefault(trainer.current_epoch, []).append(float(images.float().sum()))


@pytest.mark.slow
def test_overfit_sees_the_same_batches_every_epoch(compose, fake_mnist, tmp_path):
    BatchProbe.seen.clear()
    metrics = _run(compose, tmp_path, fake_mnist, "debug=overfit", "trainer.max_epochs=3", "data.binarize=static",
                   "+callbacks.probe._target_=test_debug.BatchProbe")
    assert metrics["epochs"] == 3 and metrics["steps"] == 9
    assert len(BatchProbe.seen[0]) == 3 and BatchProbe.seen[0] == BatchProbe.seen[1] == BatchProbe.seen[2]


@pytest.mark.slow
@pytest.mark.parametrize("preset, epochs, steps", [("default", 1, 10), ("limit", 3, 15)])
def test_default_and_limit_run(preset, epochs, steps, compose, fake_mnist, tmp_path):
    metrics = _run(compose, tmp_path, fake_mnist, f"debug={preset}", "data.batch_size=50")  # 10 batches an epoch
    assert (metrics["epochs"], metrics["steps"]) == (epochs, steps)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and list((tmp_path / "csv").glob("version_0"))


@pytest.mark.slow
def test_the_advanced_profiler_writes_cprofile_output(compose, fake_mnist, tmp_path):
    _run(compose, tmp_path, fake_mnist, "debug=profiler", "trainer.profiler=advanced", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    assert "function calls" in (tmp_path / "fit-profile.txt").read_text()  # cProfile's statistics


@pytest.mark.slow
def test_a_fast_dev_run_multirun_from_the_command_line_with_its_summary(fake_mnist, train_env, tmp_path):
    """`python train.py -m +experiment=mnist debug=fdr objective.beta=1,2`: each job one batch, no tracker, and the
    sweep summary of jobs that have test metrics but no best checkpoint."""
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [PYTHON, str(ROOT / "train.py"), "-m", "debug=fdr", "+experiment=mnist", "objective.beta=1,2",
         f"data.data_dir={fake_mnist}", "data.val_size=100", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=train_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["steps"] == 1 and metrics["best_checkpoint"] == ""
        assert not (sweep / job / "wandb").exists() and not (sweep / job / "csv").exists()
    assert (sweep / "summary.csv").is_file()
    assert "optimized_metric=val/elbo_best was not measured in this run (trainer.fast_dev_run" in result.stdout
