"""train.py end to end, with the real configs composed, on small MNIST-shaped files."""

import csv
import json
import os
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import PYTHON, ROOT, compose_run, make_vae
from vae_lightning.build import load_model

QUICK = ["trainer.max_epochs=2", "data.val_size=100", "data.batch_size=50", "data.eval_batch_size=100"]


def run_train(args, env, cwd, timeout=240):
    """train.py in a subprocess; the image logger off unless a test asks for it (it costs seconds)."""
    if not any("image_logger" in a for a in args):
        args = [*args, "++callbacks.image_logger.every_n_epochs=0"]
    return subprocess.run(
        [PYTHON, str(ROOT / "train.py"), *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


_compose = compose_run


def test_experiment_config_composes_beta_and_samples_into_the_model():
    cfg = _compose("+experiment=mnist", "objective.beta=4", "objective.num_samples=5")
    assert cfg.model._target_ == "vae_lightning.VAE"
    model = make_vae("+experiment=mnist", "objective.beta=4", "objective.num_samples=5")
    assert model.objective.beta == 4 and model.objective.num_samples == 5 and type(model.objective).__name__ == "ELBO"
    assert model.make_lr_scheduler.func.__name__ == "cosine_annealing"
    assert cfg.data._target_ == "vae_lightning.data.MNISTDataModule" and cfg.data.binarize == "dynamic"
    assert cfg.logger.wandb.mode == "auto" and list(cfg.logger.wandb.tags) == ["mnist", "vae"]
    assert cfg.callbacks.model_checkpoint.monitor == "val/elbo"


def _metrics_csv(run_dir: Path) -> list[dict[str, str]]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def csv_run(fake_mnist, tmp_path_factory):
    """One short run of the MNIST experiment with the CSV logger and a test NLL: (run dir, result)."""
    tmp_path = tmp_path_factory.mktemp("csv_run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "VAE_DATA_DIR"}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(ROOT))
    run_dir = tmp_path / "run"
    result = run_train(["+experiment=mnist", "logger=csv", f"data.data_dir={fake_mnist}", "eval.nll_samples=20",
                        "objective.beta=2",
                        "trainer.log_every_n_steps=2", f"hydra.run.dir={run_dir}", *QUICK], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_train_mnist_experiment_end_to_end_with_csv(csv_run):
    run_dir, result = csv_run

    rows = _metrics_csv(run_dir)
    for split in ("train", "val", "test"):
        for term in ("kl", "recon", "elbo"):
            values = [float(r[f"{split}/{term}"]) for r in rows if r.get(f"{split}/{term}")]
            assert values and all(math.isfinite(v) for v in values), f"{split}/{term} missing"
    train_rows = [r for r in rows if r.get("train/loss")]
    assert train_rows and all(float(r["train/beta"]) == 2.0 for r in train_rows)  # objective.beta=2 arrived
    for r in train_rows:  # loss = recon + beta * kl, while elbo stays -(recon + kl)
        recon, kl = float(r["train/recon"]), float(r["train/kl"])
        assert float(r["train/elbo"]) == pytest.approx(-(recon + kl), rel=1e-5)
        assert float(r["train/loss"]) == pytest.approx(recon + 2.0 * kl, rel=1e-5)
    val_elbo = [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]
    assert len(val_elbo) == 2 and val_elbo[1] > val_elbo[0], "validation ELBO should rise on learnable data"

    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("epoch") for n in ckpts)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The checkpoint tested is the best by validation ELBO.
    best_epoch = max(range(len(val_elbo)), key=val_elbo.__getitem__)
    assert Path(metrics["best_checkpoint"]).name.startswith(f"epoch{best_epoch:03d}-")
    assert metrics["val/elbo_best"] == pytest.approx(max(val_elbo), rel=1e-6)
    assert metrics["test/elbo"] == pytest.approx(-(metrics["test/recon"] + metrics["test/kl"]), rel=1e-5)
    assert metrics["epochs"] == 2
    assert "test metrics: " in result.stdout and "test/elbo=" in result.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    # The test log-likelihood (S = 20 here) sits between the ELBO and 0, and bpd is nll / (784 ln 2).
    assert -metrics["test/elbo"] > metrics["test/nll"] > 0
    assert metrics["test/bpd"] == pytest.approx(metrics["test/nll"] / (784 * math.log(2)), rel=1e-5)
    active = [float(r["val/active_units"]) for r in rows if r.get("val/active_units")]
    kl_dims = [k for k in rows[0] if k.startswith("val/kl_dim/")]
    assert len(active) == 2 and 0 <= active[-1] <= 32 and len(kl_dims) == 32


def test_resume_from_last_checkpoint_continues_the_run(csv_run, train_env, fake_mnist, tmp_path):
    run_dir, _ = csv_run
    first = json.loads((run_dir / "metrics.json").read_text())
    result = run_train(["+experiment=mnist", "logger=csv", f"data.data_dir={fake_mnist}", "objective.beta=2",
                        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'resumed'}",
                        *QUICK[1:], "trainer.max_epochs=3", "trainer.log_every_n_steps=2"], train_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["epochs"] == 3 and resumed["steps"] == first["steps"] // 2 * 3
    # One more epoch, not three: what it logged starts after the checkpoint's step (a fresh start would
    # reach the same step count, but log from step 1). tests/test_resume.py checks the rest of a resume.
    train_steps = [int(r["step"]) for r in _metrics_csv(tmp_path / "resumed") if r.get("train/loss")]
    assert min(train_steps) >= first["steps"] and max(train_steps) < resumed["steps"]
    assert load_model(tmp_path / "resumed" / "checkpoints" / "last.ckpt").objective.beta == 2.0


def test_one_bad_job_does_not_stop_a_multirun(fake_mnist, train_env, tmp_path):
    result = run_train(["-m", "logger=none", f"data.data_dir={fake_mnist}", "data.val_size=70000,100",
                        "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"], train_env, tmp_path)
    assert "error: data.val_size=70000 leaves no training images: MNIST has 600" in result.stderr
    assert not (tmp_path / "sweep" / "0" / "metrics.json").exists()
    assert json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("override, message", [
    ("objective.beta=-1", "objective.beta=-1"),
    ("objective.num_samples=0", "objective.num_samples=0"),
    ("objective.num_samples=2.5", "objective.num_samples=2.5 must be an integer"),
    ("objective.kl_schedule=sigmoid", "objective.kl_schedule='sigmoid'"),
    ("objective.kl_schedule=linear", "objective.warmup_steps=0 must be >= 1"),
    ("model.latent_dim=0", "model.latent_dim=0"),
    ("model.latent_dim=abc", "model.latent_dim='abc' must be an integer"),
    ("model.optimizer.lr=-1", "model.optimizer (torch.optim.adam.Adam) cannot be built: ValueError: Invalid learning rate"),
    ("model.encoder.hidden_dims=64", "model.encoder.hidden_dims=64 must be a non-empty list of positive integers"),
    ("model.encoder.activation=swishy", "model.encoder.activation='swishy' must be one of"),
    ("model/likelihood=gaussian model.likelihood.sigma=-1", "model.likelihood.sigma=-1 must be > 0"),
    ("model.encoder._target_=vae_lightning.nets.RNNEncoder", "model.encoder (vae_lightning.nets.RNNEncoder) cannot be built"),
    ("data.batch_size=0", "data.batch_size=0 must be an integer >= 1"),
    ("data.num_workers=-1", "data.num_workers=-1"),
    ("data.binarize=otsu", "data.binarize='otsu'"),
    ("logger.wandb.mode=online", "logger.wandb.mode=online but no wandb API key"),
    ("trainer.devices=64", "trainer.devices=64 but this machine has"),
    ("trainer.strategy=ddp", "trainer.strategy='ddp' needs several devices"),
    ("trainer.precision=8-bit", "trainer: Precision '8-bit' is invalid. Allowed precision values"),
    ("trainer.max_epochs=-5", "trainer: `max_epochs` must be a non-negative integer or -1"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 must be a number >= 0"),
    ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt does not exist"),
    ("objective=iwae +objective.free_bits=0.5", "objective.free_bits=0.5 applies to the ELBO only"),
    ("objective.free_bits_group_size=5", "objective.free_bits_group_size=5 must divide model.latent_dim=32"),
    ("eval.nll_chunk_size=-5", "eval.nll_chunk_size=-5 must be an integer >= 1"),
    ("model=conv model.encoder.activation=swishy", "model.encoder.activation='swishy' must be one of"),
    ("model=conv +model.decoder.depth=3", "model.decoder (vae_lightning.nets.ConvDecoder) cannot be built: "
                                         "TypeError"),
    ("model/prior=mixture_of_gaussians objective.kl_estimator=analytic",
     "objective.kl_estimator='analytic' but DiagonalGaussian against MixtureOfGaussians has no closed-form KL"),
    ("model/prior=mixture_of_gaussians objective.free_bits=0.5", "objective.free_bits_group_size=1 needs a KL per "
                                                                 "latent dimension"),
    ("model/decoder=mlp model=conv", "model.decoder.hidden_dims=[] must be a non-empty list"),
])
def test_bad_overrides_raise_one_clear_error_naming_the_key(override, message, fake_mnist, tmp_path, monkeypatch):
    from vae_lightning.errors import VAEUserError
    from vae_lightning.run import train
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    logger = "logger=wandb" if override.startswith("logger.wandb") else "logger=none"
    accelerator = ["trainer.accelerator=gpu"] if override.startswith("trainer.devices") else []
    cfg = _compose(logger, *override.split(), *accelerator, f"paths.data_dir={fake_mnist}",
                   f"paths.output_dir={tmp_path}")
    with pytest.raises(VAEUserError) as err:
        train(cfg)
    if override.startswith("trainer.devices") and "no such device" in str(err.value):
        message = "trainer.accelerator='gpu' but this machine has no such device"  # a machine without a GPU
    assert message in str(err.value)


@pytest.mark.parametrize("override, new", [
    ("model.lr=0.01", "model.optimizer.lr=0.01"),
    ("model.hidden_dims=[64]", "model.encoder.hidden_dims=[64]"),
    ("model.channels=[8,16]", "model.encoder.channels=[8,16]"),
    ("model.activation=tanh", "model.encoder.activation=tanh"),
    ("model.likelihood=gaussian", "model/likelihood=gaussian"),
    ("model.sigma=0.1", "model.likelihood.sigma=0.1"),
    ("model.min_sigma=0.1", "model.likelihood.min_sigma=0.1"),
    ("model.weight_decay=0.1", "model.optimizer.weight_decay=0.1"),
    ("model.adam_eps=1e-4", "model.optimizer.eps=1e-4"),
    ("model.fused_optimizer=false", "model.optimizer.fused=false"),
    ("model.lr_schedule=cosine", "model/lr_scheduler=cosine"),
    ("model.architecture=conv", "model=conv"),
    ("objective.name=iwae", "objective=iwae"),
    ("+model.lr=0.01", "model.optimizer.lr=0.01"),
])
def test_a_key_that_moved_names_the_new_one(override, new):
    from vae_lightning.checks import check_overrides
    from vae_lightning.errors import VAEUserError
    with pytest.raises(VAEUserError, match=re.escape(f"has moved: write {new}")):
        check_overrides(["+experiment=mnist", override])


def test_an_experiment_file_with_a_key_that_moved_names_the_new_one(fake_mnist, tmp_path):
    from vae_lightning.errors import VAEUserError
    from vae_lightning.run import train
    cfg = _compose("logger=none", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}", "+model.lr=0.01")
    with pytest.raises(VAEUserError, match=re.escape("model.lr has moved: write model.optimizer.lr=0.01")):
        train(cfg)


@pytest.mark.parametrize("override, message", [
    ("objective.beta=-1", "error: objective.beta=-1 must be >= 0."),
    ("trainer.strategy=ddp", "error: trainer.strategy='ddp' needs several devices"),
    ("data=cifar", "Could not find 'data/cifar'"),  # Hydra's own message lists the options
    ("model/prior=vampire", "Could not find 'model/prior/vampire'"),
    ("data=image_folder", "error: data.path must be set (the config leaves it to you): add data.path=/data/my_images"),
    ("model.likelihood=gaussian", "error: model.likelihood has moved: write model/likelihood=gaussian"),
])
def test_bad_overrides_exit_non_zero_without_a_traceback(override, message, train_env, tmp_path):
    result = run_train([override, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], train_env, tmp_path)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_reports_elbo_iwae_and_nll_of_a_checkpoint(csv_run, train_env, tmp_path):
    run_dir, _ = csv_run
    result = subprocess.run(
        [PYTHON, str(ROOT / "eval.py"), f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "num_samples=10",
         "nll_samples=200", "nll_chunk_size=30", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=tmp_path, env=train_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert report["nll_samples"] == 200 and report["num_samples"] == 10
    # ELBO <= IWAE(K=10) <= the S=200 estimate of log p(x) (each up to sampling noise, which is small here).
    assert report["test/elbo"] < report["test/iwae"] < -report["test/nll"] < 0
    assert "test/nll" in result.stdout


def test_eval_without_a_checkpoint_says_how_to_call_it(train_env, tmp_path):
    result = subprocess.run([PYTHON, str(ROOT / "eval.py"), f"hydra.run.dir={tmp_path}"], cwd=tmp_path,
                            env=train_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ckpt_path is not set" in result.stderr


@pytest.mark.parametrize("overrides, checks", [
    (["+experiment=burda"], {"objective": "IWAE", "num_samples": 50, "nll_samples": 5000}),
    (["+experiment=burda", "objective=elbo", "objective.num_samples=1"], {"objective": "ELBO", "num_samples": 1}),
    (["+experiment=mnist", "objective=iwae"], {"objective": "IWAE", "num_samples": 5}),
    (["objective.kl_schedule=cyclical", "objective.cycle_steps=100"], {"kl_schedule": "cyclical", "cycle_steps": 100}),
])
def test_objective_presets_reach_the_model(overrides, checks):
    model = make_vae(*overrides)
    got = {"objective": type(model.objective).__name__, "nll_samples": model.nll_samples,
           **{k: getattr(model.objective, k) for k in ("num_samples", "kl_schedule", "cycle_steps")}}
    assert {k: got[k] for k in checks} == checks


def test_burda_and_fashion_presets_build_their_models(fake_mnist):
    model = make_vae("+experiment=burda")
    sizes = [m.out_features for m in model.encoder.net if hasattr(m, "out_features")]
    assert sizes == [200, 200, 100] and isinstance(model.encoder.net[1], torch.nn.Tanh)
    assert isinstance(model.decoder.net[1], torch.nn.Tanh) and model.make_optimizer.keywords["eps"] == 1e-4
    assert model.make_lr_scheduler.func.__name__ == "burda"
    burda = _compose("+experiment=burda")
    assert burda.data.batch_size == 20 and burda.trainer.max_epochs == 3280
    fashion = _compose("+experiment=fashion_mnist", f"data.data_dir={fake_mnist}")
    assert fashion.data._target_ == "vae_lightning.data.FashionMNISTDataModule" and fashion.data.binarize == "none"
    model = make_vae("+experiment=fashion_mnist")
    assert type(model.encoder).__name__ == "ConvEncoder" and type(model.likelihood).__name__ == "ContinuousBernoulli"


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


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory) -> Path:
    """Fashion-MNIST-shaped IDX files (made, like fake_mnist) under FashionMNIST/raw."""
    from conftest import make_fake_mnist

    root = make_fake_mnist(tmp_path_factory.mktemp("fashion"), num_train=600, num_test=200, seed=2)
    (root / "MNIST").rename(root / "FashionMNIST")
    return root


@pytest.mark.parametrize("preset", ["conv", "fashion_mnist"])
def test_a_conv_vae_and_the_fashion_mnist_preset_train(preset, fake_mnist, fake_fashion, tmp_path):
    """Short real runs: the conv nets on MNIST, and +experiment=fashion_mnist (conv, continuous Bernoulli on
    intensities) on Fashion-MNIST-shaped data; the validation bound rises."""
    from vae_lightning.run import train
    overrides = ["model=conv", f"paths.data_dir={fake_mnist}"] if preset == "conv" else [
        "+experiment=fashion_mnist", "logger=csv", f"paths.data_dir={fake_fashion}"]
    cfg = _compose(*overrides, f"paths.output_dir={tmp_path}", "trainer.max_epochs=2", "data.val_size=100",
                   "data.batch_size=50", "trainer.log_every_n_steps=5", "callbacks.rich_progress_bar=null",
                   "callbacks.model_summary=null", "callbacks.image_logger.every_n_epochs=0",
                   "+trainer.enable_progress_bar=false")
    metrics = train(cfg)
    assert metrics["steps"] == 20 and math.isfinite(metrics["test/elbo"])
    rows = _metrics_csv(tmp_path)
    val = [float(r["val/elbo"]) for r in rows if r.get("val/elbo")]
    assert len(val) == 2 and val[1] > val[0]
    if preset == "fashion_mnist":
        assert cfg.data._target_.endswith("FashionMNISTDataModule") and cfg.data.binarize == "none"
        assert metrics["test/elbo"] > 0  # a density on [0, 1]^784 (continuous Bernoulli): log p can be > 0
