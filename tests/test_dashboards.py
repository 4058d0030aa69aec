"""Pictures (PNG and wandb), the wandb run's contents read back from its offline file, and the local report."""

import struct
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import PYTHON, ROOT, make_vae
from test_train import QUICK, run_train
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import VAEUserError
from vae_lightning.images import ImageLogger, png_size
from vae_lightning.report import build_report
from vae_lightning.wandb_files import find_run_file, history, records

KINDS_2D = ("reconstructions", "samples", "traversals", "manifold", "latent_scatter")
IMAGES_EVERY_EPOCH = ["callbacks.image_logger.every_n_epochs=1", "model.latent_dim=2"]


def png_dimensions(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def runs(fake_mnist, tmp_path_factory):
    """Two short real runs of the MNIST experiment with a 2-D latent space and pictures every
    epoch: one with the CSV logger, one with wandb (offline, with the CSV log beside it)."""
    import os

    tmp_path = tmp_path_factory.mktemp("dashboards")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "VAE_DATA_DIR"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(ROOT))
    out = {}
    from concurrent.futures import ThreadPoolExecutor

    def one(logger, extra):
        run_dir = tmp_path / logger
        result = run_train(["+experiment=mnist", f"logger={logger}", f"data.data_dir={fake_mnist}",
                            "trainer.log_every_n_steps=2", f"hydra.run.dir={run_dir}", *QUICK, *IMAGES_EVERY_EPOCH,
                            *extra], env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        return run_dir

    # The two runs side by side: each is mostly imports and start-up, single-threaded.
    with ThreadPoolExecutor(2) as pool:
        jobs = {logger: pool.submit(one, logger, extra) for logger, extra in (
            ("csv", []), ("wandb", ["logger.wandb.group=g-test", "logger.wandb.name=n-test",
                                    "logger.wandb.job_type=jt-test", "logger.wandb.log_model=true"]))}
        out = {logger: job.result() for logger, job in jobs.items()}
    return out


def test_pictures_are_png_files_of_the_documented_sizes_with_the_csv_logger(runs):
    images = runs["csv"] / "images"
    assert sorted(p.name for p in images.iterdir()) == sorted(KINDS_2D)
    for kind in KINDS_2D:
        frames = sorted((images / kind).glob("*.png"))
        assert [f.name for f in frames] == ["epoch_000.png", "epoch_001.png"]  # every epoch, 2 epochs
        for frame in frames:
            assert png_dimensions(frame) == png_size(kind), frame
            assert frame.stat().st_size > 5000  # a drawn figure, not an empty canvas


def test_wandb_offline_run_holds_the_terms_the_images_and_the_setup(runs):
    run_dir = runs["wandb"]
    run_file = find_run_file(run_dir)
    assert run_file is not None and run_file.parent.name.startswith("offline-run-")
    rows = history(run_file)
    # The KL and recon series of every split, against the trainer's step.
    for split, least in (("train", 2), ("val", 2), ("test", 1)):
        for term in ("kl", "recon", "elbo"):
            values = [r[f"{split}/{term}"] for r in rows if f"{split}/{term}" in r]
            assert len(values) >= least, f"{split}/{term}: {values}"
    assert all("trainer/global_step" in r for r in rows if "val/kl" in r)
    # The pictures, once per epoch each, as wandb images in the images/ section.
    for kind in KINDS_2D:
        logged = [r[f"images/{kind}"] for r in rows if f"images/{kind}" in r]
        assert len(logged) == 2, kind
        assert logged[0]["_type"] == "image-file" and (logged[0]["width"], logged[0]["height"]) == png_size(kind)
        assert [i["caption"] for i in logged] == ["epoch 1", "epoch 2"]
    assert len([r for r in rows if "images/samples" in r and "images/traversals" in r]) == 2  # one row per epoch
    media = list((run_file.parent / "files" / "media" / "images").glob("**/*.png"))
    assert len(media) >= 2 * len(KINDS_2D)
    # Project, group, name, job type and tags from the config; the best val ELBO as a summary.
    (run,) = [r.run for r in records(run_file) if r.WhichOneof("record_type") == "run"][:1]
    assert (run.project, run.run_group, run.display_name, run.job_type) == ("vae-lightning", "g-test", "n-test",
                                                                            "jt-test")
    assert list(run.tags) == ["mnist", "vae"]
    metric_defs = {r.metric.name: r.metric for r in records(run_file) if r.WhichOneof("record_type") == "metric"}
    assert "val/elbo" in metric_defs and metric_defs["val/elbo"].summary.max
    # log_model=true: the checkpoints were logged as a model artifact.
    artifacts = [r.artifact for r in records(run_file) if r.WhichOneof("record_type") == "artifact"]
    assert any(a.type == "model" for a in artifacts)
    # The CSV log sits beside it, so the local report works offline too.
    assert list(run_dir.glob("csv/version_*/metrics.csv"))


def test_the_local_report_builds_from_a_real_run(runs, tmp_path):
    result = subprocess.run([PYTHON, str(ROOT / "report.py"), str(runs["csv"]), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    page, sheet = tmp_path / "report.html", tmp_path / "report.png"
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1 + len(KINDS_2D)  # the curves and each latest picture
    for kind in KINDS_2D:
        assert f"{kind}, epoch_001.png" in text  # the newest frame
    width, height = png_dimensions(sheet)
    assert width >= 1500 and height > 450
    # A wandb-only history works as well (the report reads the offline run file).
    wandb_copy = tmp_path / "wandb_only"
    subprocess.run(["cp", "-r", str(runs["wandb"]), str(wandb_copy)], check=True)
    subprocess.run(["rm", "-rf", str(wandb_copy / "csv")], check=True)
    page, _ = build_report(wandb_copy)
    assert "data:image/png;base64," in page.read_text()


def test_the_report_says_what_is_wrong_with_a_directory(tmp_path):
    result = subprocess.run([PYTHON, str(ROOT / "report.py"), str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAEUserError, match="No metrics found"):
        build_report(tmp_path / "empty")


def test_fixed_inputs_and_noise_are_the_same_in_every_frame(fake_mnist, tmp_path):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100)
    model = make_vae("model.latent_dim=4", "model.encoder.hidden_dims=[32]")
    logger = ImageLogger(tmp_path / "images", every_n_epochs=1, num_inputs=5, num_samples=9, traversal_dims=3)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[logger], default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    first = {k: v.clone() for k, v in logger._fixed.items()}
    assert [p.name for p in sorted((tmp_path / "images" / "samples").iterdir())] == ["epoch_000.png", "epoch_001.png"]
    assert not (tmp_path / "images" / "manifold").exists()  # 2-D pictures only for a 2-D latent space
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(100, generator=generator)[:5]
    assert torch.equal(first["inputs"], dm.val_set.images[pick])  # validation images chosen by the seed
    # The prior noise comes from the seed too, the same at every render.
    draws = [model.prior.sample(9, generator=logger.noise_generator()) for _ in range(2)]
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], torch.randn(9, 4, generator=torch.Generator()
                                                                                  .manual_seed(1)))
    logger.render(trainer, model)  # a later frame draws on exactly the same inputs and noise
    for key, value in first.items():
        assert torch.equal(logger._fixed[key], value), key
    # The same weights and the same inputs give the same picture.
    again = ImageLogger(tmp_path / "again", num_inputs=5, num_samples=9, traversal_dims=3)
    (path_a,) = [p for p in logger.render(trainer, model) if p.parent.name == "samples"]
    (path_b,) = [p for p in again.render(trainer, model) if p.parent.name == "samples"]
    assert path_a.read_bytes() == path_b.read_bytes()


def test_image_logger_settings_are_checked():
    with pytest.raises(VAEUserError, match=r"callbacks.image_logger.every_n_epochs=-1 must be an integer >= 0"):
        ImageLogger("x", every_n_epochs=-1)
    with pytest.raises(VAEUserError, match=r"callbacks.image_logger.traversal_steps=1 must be an integer >= 2"):
        ImageLogger("x", traversal_steps=1)


def _fit_with_images(fake_mnist, tmp_path, logger, **trainer_kwargs):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50)  # 10 steps an epoch
    model = make_vae("model.latent_dim=4", "model.encoder.hidden_dims=[32]")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[logger], default_root_dir=tmp_path, **trainer_kwargs)
    trainer.fit(model, datamodule=dm)
    return trainer, model, dm


def _frames(directory: Path, kind: str = "samples") -> list[str]:
    return sorted(p.name for p in (directory / kind).glob("*.png"))


def test_pictures_every_n_epochs_and_after_the_last(fake_mnist, tmp_path):
    logger = ImageLogger(tmp_path / "images", every_n_epochs=2, num_inputs=4, num_samples=4, traversal_dims=2)
    _fit_with_images(fake_mnist, tmp_path, logger, max_epochs=5)
    # Epochs 2 and 4 (the cadence), and 5 (the last), counted from 1; files are numbered from 0.
    assert _frames(tmp_path / "images") == ["epoch_001.png", "epoch_003.png", "epoch_004.png"]


def test_a_run_stopped_early_still_gets_its_final_pictures(fake_mnist, tmp_path):
    logger = ImageLogger(tmp_path / "images", every_n_epochs=10, num_inputs=4, num_samples=4, traversal_dims=2)
    trainer, _, _ = _fit_with_images(fake_mnist, tmp_path, logger, max_epochs=20, max_steps=15)
    assert trainer.global_step == 15  # stopped in the middle of epoch 2 (Lightning has counted it: 2)
    for kind in ("reconstructions", "samples", "traversals"):
        assert _frames(tmp_path / "images", kind) == ["epoch_001.png"], kind


def test_the_reconstruction_panel_shows_the_chosen_inputs_above_their_reconstructions(fake_mnist, tmp_path,
                                                                                       monkeypatch):
    from matplotlib.axes import Axes

    from vae_lightning.images import background, tile

    logger = ImageLogger(tmp_path / "images", every_n_epochs=1, num_inputs=10, num_samples=4, traversal_dims=2,
                         seed=7)
    trainer, model, dm = _fit_with_images(fake_mnist, tmp_path, logger, max_epochs=1)
    drawn = []
    original = Axes.imshow
    monkeypatch.setattr(Axes, "imshow", lambda ax, data, *a, **k: drawn.append(data) or original(ax, data, *a, **k))
    logger.render(trainer, model)
    shown = torch.as_tensor(drawn[0])  # the first picture: reconstructions, greyscale [H', W']
    # The inputs: the validation images the seed picks, as the model sees them (fixed draws, in [0, 1]).
    pick = torch.randperm(100, generator=torch.Generator().manual_seed(7))[:10]
    x = dm.val_set.images[pick].float() / 255
    assert set(x.unique().tolist()) == {0.0, 1.0}
    with torch.no_grad():
        recon = model.decode_mean(model.encode(x).mean)
    blank = torch.full((6, 1, 28, 28), background(1))  # the short second row: empty tiles of the frame's grey
    rows = [x[:8], recon[:8], torch.cat([x[8:], blank]), torch.cat([recon[8:], blank])]
    expected = tile(torch.cat(rows), 8)[..., 0].clamp(0, 1)
    assert shown.shape == expected.shape
    cell = 28 + 2
    for r, what in enumerate(["inputs", "reconstructions", "inputs", "reconstructions"]):
        band = slice(2 + r * cell, 2 + r * cell + 28)
        torch.testing.assert_close(shown[band].float(), expected[band].float(), atol=1e-6, rtol=0, msg=what)
    # ... and it is not blank: the inputs have ink, the reconstructions are not the inputs.
    assert shown[2:30].sum() > 10 and not torch.equal(shown[2:30], shown[32:60])
