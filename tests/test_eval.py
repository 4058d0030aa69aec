"""eval.py's options do what they say: nll_samples is the number of importance samples, config_path and
data_dir choose the data, a damaged checkpoint is one clear error."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from conftest import PYTHON, ROOT, compose_run
from vae_lightning.data import write_idx
from vae_lightning.run import evaluate, train


@pytest.fixture(scope="module")
def run_dir(fake_mnist, tmp_path_factory) -> Path:
    """A short run (in this process) with its checkpoints and resolved_config.yaml."""
    out = tmp_path_factory.mktemp("eval_run")
    cfg = compose_run(
        "logger=none", f"paths.data_dir={fake_mnist}", f"paths.output_dir={out}", "trainer.max_epochs=3",
        "data.val_size=100", "data.batch_size=50", "model.latent_dim=4", "model.encoder.hidden_dims=[64]",
        "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "callbacks.image_logger.every_n_epochs=0",
        "+trainer.enable_progress_bar=false", "test=false")
    train(cfg)
    return out


@pytest.fixture(scope="module")
def blank_mnist(tmp_path_factory) -> Path:
    """MNIST-shaped files whose images are all black: nothing like the made data the run trained on."""
    root = tmp_path_factory.mktemp("blank")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 600), ("t10k", 200)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n, dtype=np.uint8))
    return root


def _evaluate(tmp_path, *overrides) -> dict:
    cfg = compose_run("trainer.accelerator=cpu", f"hydra.runtime.output_dir={tmp_path}", *overrides,
                      config_name="eval", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return evaluate(cfg)


def test_nll_samples_is_the_number_of_importance_samples(run_dir, tmp_path, monkeypatch):
    import vae_lightning.evaluation as evaluation

    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    drawn = []  # (samples, images) of every call that weighs samples of z

    def counting(x, z, *args):
        drawn.append(tuple(z.shape[:2]))
        return log_weights(x, z, *args)

    log_weights = evaluation.log_weights
    monkeypatch.setattr(evaluation, "log_weights", counting)
    nll = {}
    for s in (1, 7, 300):
        drawn.clear()
        nll[s] = _evaluate(tmp_path, ckpt, "num_samples=1", f"nll_samples={s}", "nll_chunk_size=3")["test/nll"]
        assert sum(k * b for k, b in drawn) == s * 200  # S samples for each of the 200 test images
        assert max(k for k, _ in drawn) == min(s, 3)  # taken nll_chunk_size at a time
    # More samples: a tighter estimate of -log p(x) (it falls towards -log p(x) from above).
    assert nll[300] < nll[7] < nll[1]


def test_config_path_and_data_dir_choose_the_data(run_dir, blank_mnist, tmp_path):
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    own = _evaluate(tmp_path, ckpt, "num_samples=5", "nll_samples=0")
    config = OmegaConf.load(run_dir / "resolved_config.yaml")
    config.data.data_dir = str(blank_mnist)  # a run config whose data is elsewhere
    other = tmp_path / "other_config.yaml"
    OmegaConf.save(config, other)
    by_config = _evaluate(tmp_path, ckpt, f"config_path={other}", "num_samples=5", "nll_samples=0")
    by_dir = _evaluate(tmp_path, ckpt, f"data_dir={blank_mnist}", "num_samples=5", "nll_samples=0")
    # All-black images are nothing like the run's own test images: their terms are far from those.
    assert abs(by_config["test/recon"] - own["test/recon"]) > 0.1 * own["test/recon"]
    assert by_dir["test/recon"] == pytest.approx(by_config["test/recon"], rel=1e-6)
    assert by_dir["test/kl"] == pytest.approx(by_config["test/kl"], rel=1e-6)


def test_a_damaged_checkpoint_is_one_clear_error(run_dir, train_env, tmp_path):
    damaged = tmp_path / "damaged.ckpt"
    data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    result = subprocess.run([PYTHON, str(ROOT / "eval.py"), f"ckpt_path={damaged}", f"hydra.run.dir={tmp_path}"],
                            cwd=tmp_path, env=train_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(damaged) in line and "damaged or not a checkpoint" in line


def test_evaluations_are_written_apart_from_training_runs():
    # The README's outputs/eval/<date>/<time>/eval_metrics.json, not a training run's outputs/<date>/<time>.
    cfg = compose_run(config_name="eval", return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("outputs/eval/")
