"""train.py end to end, with the real configs composed, on small MNIST-shaped files."""

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import PYTHON, ROOT

QUICK = ["trainer.max_epochs=2", "data.val_size=100", "data.batch_size=50", "data.eval_batch_size=100"]


def run_train(args, env, cwd, timeout=240):
    return subprocess.run(
        [PYTHON, str(ROOT / "train.py"), *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def test_experiment_config_composes_beta_and_samples_into_the_model():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=mnist", "objective.beta=4", "objective.num_samples=5"])
    assert cfg.model._target_ == "vae_lightning.VAE"
    assert cfg.model.beta == 4 and cfg.model.num_samples == 5
    assert cfg.data._target_ == "vae_lightning.data.MNISTDataModule" and cfg.data.binarize == "dynamic"
    assert cfg.logger.wandb.mode == "auto" and list(cfg.logger.wandb.tags) == ["mnist", "mlp", "elbo"]
    assert cfg.callbacks.model_checkpoint.monitor == "val/elbo"


def _metrics_csv(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


def test_train_mnist_experiment_end_to_end_with_csv(fake_mnist, train_env, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(["+experiment=mnist", "logger=csv", f"data.data_dir={fake_mnist}",
                        "trainer.log_every_n_steps=2", f"hydra.run.dir={run_dir}", *QUICK], train_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = _metrics_csv(run_dir)
    for split in ("train", "val", "test"):
        for term in ("kl", "recon", "elbo"):
            values = [float(r[f"{split}/{term}"]) for r in rows if r.get(f"{split}/{term}")]
            assert values and all(math.isfinite(v) for v in values), f"{split}/{term} missing"
    train_rows = [r for r in rows if r.get("train/loss")]
    assert train_rows and all(float(r["train/beta"]) == 1.0 for r in train_rows)
    for r in train_rows:  # elbo = -(recon + kl) and loss = recon + beta * kl, per logged step
        recon, kl = float(r["train/recon"]), float(r["train/kl"])
        assert float(r["train/elbo"]) == pytest.approx(-(recon + kl), rel=1e-5)
        assert float(r["train/loss"]) == pytest.approx(recon + kl, rel=1e-5)
    val_elbo = [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]
    assert len(val_elbo) == 2 and val_elbo[1] > val_elbo[0], "validation ELBO should rise on learnable data"

    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("epoch") for n in ckpts)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/elbo"] == pytest.approx(-(metrics["test/recon"] + metrics["test/kl"]), rel=1e-5)
    assert metrics["epochs"] == 2
    assert "test metrics: test/elbo=" in result.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_wandb_runs_offline_by_itself_without_a_key_and_never_prompts(fake_mnist, train_env, tmp_path):
    env = dict(train_env, HOME=str(tmp_path))  # no ~/.netrc, no stored key
    env.pop("WANDB_MODE")  # let the project decide
    run_dir = tmp_path / "run"
    result = run_train(["+experiment=mnist", f"data.data_dir={fake_mnist}", f"hydra.run.dir={run_dir}",
                        "trainer.max_epochs=1", "trainer.log_every_n_steps=2", *QUICK[1:]], env, tmp_path,
                       timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    for key in (b"train/kl", b"train/recon", b"val/kl", b"val/recon", b"test/kl", b"test/recon"):
        assert key in data, f"{key!r} not in the wandb run"
    assert b"num_samples" in data and b"binarize" in data  # the resolved config is the run config
    assert "wandb sync" in result.stdout + result.stderr


def test_missing_data_is_one_clear_line_and_a_nonzero_exit(train_env, tmp_path):
    result = run_train([f"data.data_dir={tmp_path / 'nothing'}", "data.download=false",
                        f"hydra.run.dir={tmp_path / 'run'}"], train_env, tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert str(tmp_path / "nothing" / "MNIST" / "raw") in error_lines[0]
    assert "train-images-idx3-ubyte.gz" in error_lines[0] and "VAE_DATA_DIR" in error_lines[0]
