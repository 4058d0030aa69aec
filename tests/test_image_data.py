"""Any image data: CIFAR-10, CelebA, a folder of images, a user's arrays; in memory or streamed."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.trainer.states import RunningStage

from image_data import make_fake_celeba, make_fake_cifar10
from vae_lightning.data import (ArraysDataModule, CelebADataModule, CIFAR10DataModule, ImageFolderDataModule,
                                MNISTDataModule, cifar)
from vae_lightning.data.download import Resource
from vae_lightning.errors import ConfigError, DataError, VAEUserError


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """A small CIFAR-10 archive in the official format, its MD5s in place of the official ones."""
    info = make_fake_cifar10(tmp_path / "cifar_src")
    monkeypatch.setattr(cifar, "TRAIN_BATCHES", {k: v for k, v in info["md5s"].items() if k != "test_batch"})
    monkeypatch.setattr(cifar, "TEST_BATCHES", {"test_batch": info["md5s"]["test_batch"]})
    monkeypatch.setattr(CIFAR10DataModule, "archive", Resource("cifar-10-python.tar.gz", info["archive_md5"]))
    return info


def batches(loader, epoch=0):
    loader.sampler.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


# -- CIFAR-10 ------------------------------------------------------------------------------

def test_cifar10_downloads_checks_and_reads_the_official_format(tmp_path, server, fake_cifar, monkeypatch):
    url, served = server
    (served / "cifar-10-python.tar.gz").write_bytes((tmp_path / "cifar_src" / "cifar-10-python.tar.gz").read_bytes())
    monkeypatch.setattr(CIFAR10DataModule, "mirrors", ("http://127.0.0.1:9/dead/", url))  # the first host down
    dm = CIFAR10DataModule(data_dir=tmp_path / "data", val_size=20, batch_size=16)
    dm.prepare_data()
    dm.setup()
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (180, 20, 40)
    # Pixels and labels as written: rows of R, G, B planes become [3, 32, 32].
    assert torch.equal(dm.test_set.images, torch.from_numpy(fake_cifar["test"]))
    assert dm.test_set.labels.tolist() == fake_cifar["test_labels"]
    held = torch.cat([dm.train_set.images, dm.val_set.images])
    assert sorted(map(bytes, held.numpy())) == sorted(map(bytes, fake_cifar["train"]))  # a split, nothing lost


def test_cifar10_archive_with_a_wrong_md5_is_refused_and_not_kept(tmp_path, server, fake_cifar, monkeypatch):
    url, served = server
    (served / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    monkeypatch.setattr(CIFAR10DataModule, "mirrors", (url,))
    dm = CIFAR10DataModule(data_dir=tmp_path / "data")
    with pytest.raises(DataError, match=r"MD5 .* does not match the published"):
        dm.prepare_data()
    assert not any((tmp_path / "data").iterdir())  # no partial file left looking complete


def test_cifar10_missing_names_directory_file_and_url(tmp_path):
    dm = CIFAR10DataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataError) as e:
        dm.setup()
    message = str(e.value)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "data.data_dir" in message


def test_cifar10_batch_with_other_contents_is_named(tmp_path, fake_cifar, monkeypatch):
    monkeypatch.setitem(cifar.TRAIN_BATCHES, "data_batch_3", "0" * 32)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-python.tar.gz").write_bytes(
        (tmp_path / "cifar_src" / "cifar-10-python.tar.gz").read_bytes())
    with pytest.raises(DataError, match=r"data_batch_3 .* is not the official file"):
        CIFAR10DataModule(data_dir=tmp_path / "data", download=False).setup()


# -- CelebA --------------------------------------------------------------------------------

def test_celeba_downloads_splits_by_the_partition_file_crops_and_caches(tmp_path, server, monkeypatch):
    url, served = server
    info = make_fake_celeba(served)
    monkeypatch.setattr(CelebADataModule, "resources", {
        "images": Resource("img_align_celeba.zip", info["zip_md5"], urls=(url + "img_align_celeba.zip",)),
        "partition": Resource("list_eval_partition.txt", info["partition_md5"], urls=(url + "list_eval_partition.txt",)),
    })
    dm = CelebADataModule(data_dir=tmp_path / "data", batch_size=4)
    dm.prepare_data()
    dm.setup()
    assert dm.input_shape == (3, 64, 64)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 4, 5)  # the partition file's
    # The centre crop is the face: every pixel is the centre colour (JPEG leaves a few levels of noise).
    for split, images in (("train", dm.train_set.images), ("test", dm.test_set.images)):
        centres = torch.from_numpy(np.stack(info["centres"][split])).float()
        assert (images[:, :, 4:-4, 4:-4].float() - centres[:, :, None, None]).abs().max() < 20
    # Cached once: the images may go, the splits stay.
    import shutil

    shutil.rmtree(tmp_path / "data" / "celeba" / "img_align_celeba")
    again = CelebADataModule(data_dir=tmp_path / "data", download=False)
    again.setup()
    assert torch.equal(again.test_set.images, dm.test_set.images)


def test_celeba_without_crop_keeps_the_border(tmp_path):
    info = make_fake_celeba(tmp_path / "data" / "celeba", counts=(3, 1, 1))
    dm = CelebADataModule(data_dir=tmp_path / "data", crop=None, image_size=[109, 89], download=False)
    dm.setup()
    outer = dm.train_set.images[0, :, 0, 0].float()  # the corner: the colour around the face
    centre = torch.from_numpy(info["centres"]["train"][0]).float()
    assert (outer - centre).abs().max() > 10


def test_celeba_missing_names_the_official_files(tmp_path):
    with pytest.raises(DataError) as e:
        CelebADataModule(data_dir=tmp_path, download=False).setup()
    assert "img_align_celeba" in str(e.value) and "list_eval_partition.txt" in str(e.value)
    assert str(tmp_path / "celeba") in str(e.value)


# -- a folder of images --------------------------------------------------------------------

def write_images(folder: Path, count: int, size=(40, 30), mode="RGB", seed=0) -> list[np.ndarray]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        colour = rng.integers(0, 256, size=3 if mode == "RGB" else 1, dtype=np.uint8)
        array = np.broadcast_to(colour, (size[1], size[0], len(colour))).copy()
        Image.fromarray(array.squeeze(-1) if mode == "L" else array, mode).save(folder / f"{i:03d}.png")
        written.append(colour)
    return written


def test_image_folder_with_class_folders_gives_labels_resized_images_and_held_out_splits(tmp_path):
    write_images(tmp_path / "imgs" / "cats", 12, seed=1)
    write_images(tmp_path / "imgs" / "dogs", 8, seed=2)
    dm = ImageFolderDataModule(path=tmp_path / "imgs", image_size=16, val_size=4, test_size=0.2,
                               data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", batch_size=5)
    dm.setup()
    assert dm.input_shape == (3, 16, 16) and dm.num_classes == 2
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 4, 4)
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels, dm.test_set.labels])
    assert sorted(labels.tolist()) == [0] * 12 + [1] * 8
    # Every image is one flat colour: resizing keeps it.
    images = dm.train_set.images.flatten(2)
    assert (images.max(-1).values.int() - images.min(-1).values.int()).abs().max() <= 1
    assert list((tmp_path / "cache" / "image_folder").glob("imgs-*.npy"))  # decoded once, cached


def test_image_folder_greyscale_unlabelled_streamed(tmp_path):
    colours = write_images(tmp_path / "imgs", 10, size=(20, 20), mode="L")
    dm = ImageFolderDataModule(path=tmp_path / "imgs", image_size=[8, 12], channels=1, val_size=2, test_size=2,
                               in_memory=False, data_dir=tmp_path / "data", batch_size=3)
    dm.setup()
    assert dm.streaming and dm.num_classes is None and dm.input_shape == (1, 8, 12)
    seen = torch.cat([x for x, _ in dm.train_dataloader()] + [x for x, _ in dm.val_dataloader()]
                     + [x for x, _ in dm.test_dataloader()])
    assert seen.shape == (10, 1, 8, 12)
    assert sorted(seen[:, 0, 0, 0].tolist()) == sorted(int(c[0]) for c in colours)
    y = next(iter(dm.train_dataloader()))[1]
    assert (y == -1).all()  # no labels
    assert not (tmp_path / "data" / "image_folder").exists()  # streamed: nothing cached


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match=r"data.path=None is required"):
        ImageFolderDataModule()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no image files"):
        ImageFolderDataModule(path=tmp_path / "empty").setup()
    write_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png cannot be read as an image"):
        ImageFolderDataModule(path=tmp_path / "imgs", val_size=1, test_size=1, data_dir=tmp_path,
                              cache_dir=tmp_path / "cache").setup()
    with pytest.raises(ConfigError, match=r"data.channels=2 must be one of \[1, 3\]"):
        ImageFolderDataModule(path=tmp_path / "imgs", channels=2)


# -- a user's arrays -----------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
@pytest.mark.parametrize("fmt", [".npz", ".pt", ".npy"])
def test_arrays_in_each_layout_and_format(tmp_path, layout, fmt):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(30, 3 if layout != "NHW" else 1, 6, 5), dtype=np.uint8)
    array = {"NHWC": nchw.transpose(0, 2, 3, 1), "NCHW": nchw, "NHW": nchw[:, 0]}[layout]
    labels = rng.integers(0, 4, size=30)
    path = tmp_path / f"images{fmt}"
    if fmt == ".npz":
        np.savez(path, images=array, labels=labels)
    elif fmt == ".pt":
        torch.save({"x": torch.from_numpy(array), "y": torch.from_numpy(labels)}, path)
    else:
        np.save(path, array)
        np.save(tmp_path / "images_labels.npy", labels)
    dm = ArraysDataModule(path=path, val_size=5, test_size=5)
    assert dm.input_shape == nchw.shape[1:]
    dm.setup()
    assert dm.num_classes == 4
    everything = torch.cat([dm.train_set.images, dm.val_set.images, dm.test_set.images])
    all_labels = torch.cat([dm.train_set.labels, dm.val_set.labels, dm.test_set.labels])
    # Each image with its label, in the [C, H, W] layout, exactly once.
    got = sorted(zip(all_labels.tolist(), map(bytes, everything.numpy())))
    assert got == sorted(zip(labels.tolist(), map(bytes, nchw)))


def test_float_arrays_become_8bit_and_bad_layouts_are_explained(tmp_path):
    x = np.random.default_rng(0).random((20, 4, 4, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    dm = ArraysDataModule(path=tmp_path / "f.npy", val_size=2, test_size=2)
    dm.setup()
    assert dm.train_set.images.dtype == torch.uint8 and dm.input_shape == (3, 4, 4)
    np.save(tmp_path / "big.npy", x * 255)
    with pytest.raises(DataError, match=r"values in \[.*\]: float images must lie in \[0, 1\]"):
        ArraysDataModule(path=tmp_path / "big.npy").input_shape
    np.save(tmp_path / "amb.npy", np.zeros((5, 3, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"channels first or last\? Set data.layout=NCHW or data.layout=NHWC"):
        ArraysDataModule(path=tmp_path / "amb.npy").input_shape
    assert ArraysDataModule(path=tmp_path / "amb.npy", layout="NHWC").input_shape == (3, 3, 8)
    np.save(tmp_path / "flat.npy", np.zeros((5, 64), np.uint8))
    with pytest.raises(DataError, match=r"shape \[5, 64\]: images must be N x H x W"):
        ArraysDataModule(path=tmp_path / "flat.npy").input_shape
    np.savez(tmp_path / "two.npz", a=np.zeros((5, 4, 4)), b=np.zeros(5))
    with pytest.raises(DataError, match=r"set data.images_key"):
        ArraysDataModule(path=tmp_path / "two.npz").input_shape
    with pytest.raises(DataError, match=r"does not exist"):
        ArraysDataModule(path=tmp_path / "nope.npy").input_shape
    with pytest.raises(ConfigError, match=r"data.test_size=None must be set: f.npy has no test split of its own"):
        ArraysDataModule(path=tmp_path / "f.npy", test_size=None).setup()
    np.savez(tmp_path / "ok.npz", images=np.zeros((9, 4, 4), np.uint8))
    with pytest.raises(ConfigError, match=r"data.in_memory=False streams from a .npy file only"):
        ArraysDataModule(path=tmp_path / "ok.npz", in_memory=False).setup()


def test_binarising_colour_images_is_a_clear_error(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((10, 3, 4, 4), np.uint8))
    with pytest.raises(ConfigError, match=r"data.binarize='dynamic' applies to single-channel images; c.npy has 3 "
                                          r"channels: set data.binarize=none"):
        ArraysDataModule(path=tmp_path / "c.npy", binarize="dynamic").setup()
    np.save(tmp_path / "g.npy", np.zeros((10, 4, 4), np.uint8))
    ArraysDataModule(path=tmp_path / "g.npy", binarize="dynamic", val_size=2, test_size=2).setup()  # one channel


# -- in memory or streamed: the same data, the same order ----------------------------------

def _trainer(rank=0, world_size=1):
    return SimpleNamespace(global_rank=rank, world_size=world_size, training=False)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_streaming_and_in_memory_deliver_the_same_batches_on_every_process(tmp_path, world_size):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, size=(103, 2, 3, 3), dtype=np.uint8))
    np.save(tmp_path / "x_labels.npy", np.arange(103))
    for rank in range(world_size):
        got = {}
        for how in [dict(in_memory=True), dict(in_memory=True, loader="dataloader"),
                    dict(in_memory=False, num_workers=1)]:
            dm = ArraysDataModule(path=tmp_path / "x.npy", val_size=10, test_size=7, batch_size=8, shuffle_seed=5,
                                  **how)
            dm.setup()
            dm.trainer = _trainer(rank, world_size)
            key = str(how)
            got[key] = [batches(dm.train_dataloader(), epoch) for epoch in (0, 1)]
            got[key].append([(x, y) for x, y in dm.test_dataloader()])
        reference, *others = got.values()
        for other in others:
            for a, b in zip(reference, other, strict=True):
                assert len(a) == len(b)
                for (xa, ya), (xb, yb) in zip(a, b):
                    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(reference[0][0][1], reference[1][0][1])  # each epoch its own order


def test_in_memory_auto_decides_by_size_and_says_so(tmp_path, caplog):
    np.save(tmp_path / "x.npy", np.zeros((100, 3, 32, 32), np.uint8))  # 300 KiB
    with caplog.at_level(logging.INFO, logger="vae_lightning"):
        small = ArraysDataModule(path=tmp_path / "x.npy", memory_limit_gb=1.0)
        small.setup()
        big = ArraysDataModule(path=tmp_path / "x.npy", memory_limit_gb=0.0001)  # ~105 KiB
        big.setup()
    assert not small.streaming and big.streaming
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data:")]
    assert "90/5/5 train/val/test images of 3x32x32 uint8, 0.3 MiB: in memory (data.in_memory=auto, limit 1.00 GiB" \
        in lines[0]
    assert "0.3 MiB: streamed from disk (data.in_memory=auto, limit 0.1 MiB" in lines[1]
    with pytest.raises(ConfigError, match=r"data.loader='tensor' needs the data in memory"):
        ArraysDataModule(path=tmp_path / "x.npy", memory_limit_gb=0.0001, loader="tensor").setup()


def test_streamed_evaluation_binarisation_is_fixed_per_image(fake_mnist):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=30, eval_batch_size=7, in_memory=False)
    dm.setup()
    dm.trainer = _trainer()
    first = torch.cat([x for x, _ in dm.val_dataloader()])
    dm.eval_batch_size = 40  # other batches, the same draws
    again = torch.cat([x for x, _ in dm.val_dataloader()])
    assert torch.equal(first, again) and set(first.unique().tolist()) == {0, 255}


# -- augmentation --------------------------------------------------------------------------

def test_hflip_flips_about_half_of_training_images_and_never_evaluation_ones(tmp_path):
    x = torch.rand(400, 3, 4, 5)
    dm = ArraysDataModule.__new__(ArraysDataModule)
    dm.binarize, dm.hflip = "none", True
    dm.trainer = SimpleNamespace(state=SimpleNamespace(stage=RunningStage.TRAINING))
    out, _ = dm.on_after_batch_transfer(((x * 255).round().to(torch.uint8), None), 0)
    as_float = (x * 255).round() / 255
    flipped = (out == as_float.flip(-1)).flatten(1).all(1)
    kept = (out == as_float).flatten(1).all(1)
    assert (flipped | kept).all() and 150 < flipped.sum() < 250
    dm.trainer = SimpleNamespace(state=SimpleNamespace(stage=RunningStage.VALIDATING))
    out, _ = dm.on_after_batch_transfer(((x * 255).round().to(torch.uint8), None), 0)
    assert torch.equal(out, as_float)


def test_data_options_are_checked(tmp_path):
    for kwargs, pattern in [({"in_memory": "maybe"}, r"data.in_memory='maybe' must be true, false or auto"),
                            ({"hflip": "yes"}, r"data.hflip='yes'"),
                            ({"memory_limit_gb": 0}, r"data.memory_limit_gb=0"),
                            ({"loader": "tensor", "in_memory": False}, r"data.loader='tensor' needs the data in memory")]:
        with pytest.raises(VAEUserError, match=pattern):
            ArraysDataModule(path=tmp_path / "x.npy", **kwargs)


# -- the presets, end to end ---------------------------------------------------------------

def write_cifar_cache(root: Path, train: int = 300, test: int = 60) -> None:
    """Made CIFAR-10-shaped data where CIFAR10DataModule caches the real set once it is prepared."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "image_presets.py"
    spec = importlib.util.spec_from_file_location("image_presets", path)
    presets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(presets)
    made_images = presets.made_images  # the benchmark's made data, smaller

    cache = root / "cifar-10-batches-py" / "cache"
    cache.mkdir(parents=True)
    for split, n in (("train", train), ("test", test)):
        np.save(cache / f"{split}_images.npy", made_images(n, 32, seed=n))
        np.save(cache / f"{split}_labels.npy", np.arange(n) % 10)


def test_cifar10_preset_trains_reports_bits_per_dim_and_draws_colour_pictures(tmp_path):
    from PIL import Image

    from conftest import compose_run
    from vae_lightning.run import train

    write_cifar_cache(tmp_path / "data")
    run = tmp_path / "run"
    metrics = train(compose_run(
        "+experiment=cifar10", "logger=csv", f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={run}",
        "data.val_size=40", "data.batch_size=50", "model.encoder.channels=[8,16]", "model.latent_dim=2",
        "trainer.max_epochs=1", "eval.nll_samples=4", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null", "+trainer.enable_progress_bar=false"))
    # 8-bit data under a mixture of logistics: NLL in nats and in bits per dimension, one the other's scale.
    assert metrics["test/bpd"] == pytest.approx(metrics["test/nll"] / (3 * 32 * 32 * np.log(2)), rel=1e-6)
    assert 0 < metrics["test/bpd"] < 20
    pictures = {p.parent.name: np.asarray(Image.open(p).convert("RGB")).astype(int) for p in run.glob("images/*/*.png")}
    assert set(pictures) == {"reconstructions", "samples", "traversals", "manifold", "latent_scatter"}
    r, g, b = pictures["reconstructions"].transpose(2, 0, 1)
    assert (abs(r - g) + abs(g - b)).max() > 60  # in colour, not grey


def test_unlabelled_data_gets_no_code_scatter(tmp_path):
    from conftest import compose_run
    from vae_lightning.run import train

    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, size=(120, 8, 8), dtype=np.uint8))
    run = tmp_path / "run"
    train(compose_run(
        "data=arrays", f"data.path={tmp_path / 'x.npy'}", f"paths.data_dir={tmp_path}", "model/likelihood=discretized_logistic", "logger=csv",
        f"paths.output_dir={run}", "model.latent_dim=2", "model.encoder.hidden_dims=[16]", "trainer.max_epochs=1",
        "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "+trainer.enable_progress_bar=false"))
    kinds = {p.parent.name for p in run.glob("images/*/*.png")}
    assert kinds == {"reconstructions", "samples", "traversals", "manifold"}
