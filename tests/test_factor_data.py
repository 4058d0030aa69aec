"""Data with known factors: the KnownFactors contract, dSprites (the official .npz and the
procedural generator) and 3D Shapes (the official .h5), as DataModules of the image family."""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_lightning.data import (DSpritesDataModule, FactorGrid, KnownFactors, MNISTDataModule, Shapes3DDataModule,
                                SpriteRenderer, dsprites)
from vae_lightning.data.download import Resource
from vae_lightning.data.sources import TensorSource
from vae_lightning.errors import ConfigError, DataError

DSPRITES_NAMES = ("shape", "scale", "orientation", "posX", "posY")
SHAPES3D_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def grid_rows(sizes) -> np.ndarray:
    """Every combination of factor values, in C order: [prod(sizes), F]."""
    return np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), axis=1)


def write_fake_dsprites(path: Path, sizes=(3, 2, 2, 3, 4), seed: int = 0, classes: np.ndarray | None = None,
                        images: np.ndarray | None = None) -> np.ndarray:
    """An .npz laid out as the official file (np.savez_compressed of imgs uint8 [N, 64, 64] of 0/1,
    latents_classes and latents_values [N, 6] with the one colour first, a pickled metadata dict),
    over a smaller grid. Returns the images written."""
    rows = grid_rows((1, *sizes))
    if images is None:
        images = (np.random.default_rng(seed).random((len(rows), 64, 64)) < 0.1).astype(np.uint8)
    classes = rows if classes is None else classes
    values = classes.astype(np.float64) / np.maximum(np.array((1, *sizes)) - 1, 1)
    metadata = np.array({"latents_sizes": np.array((1, *sizes)), "description": "fake"}, dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, imgs=images, latents_classes=classes, latents_values=values, metadata=metadata)
    return images


def write_fake_shapes3d(path: Path, sizes=(2, 3, 1, 2, 2, 3), seed: int = 0, shuffle: bool = False) -> np.ndarray:
    """A 3dshapes.h5 laid out as the official one (images uint8 [N, 64, 64, 3], labels float64 [N, 6]:
    the factor values, C order), over a smaller grid. Returns the images written."""
    import h5py

    rows = grid_rows(sizes)
    values = [np.linspace(0, 1, 10)[:sizes[0]], np.linspace(0, 1, 10)[:sizes[1]], np.linspace(0, 1, 10)[:sizes[2]],
              np.linspace(0.75, 1.25, 8)[:sizes[3]], np.arange(4.0)[:sizes[4]], np.linspace(-30, 30, 15)[:sizes[5]]]
    labels = np.stack([v[rows[:, i]] for i, v in enumerate(values)], axis=1)
    if shuffle:
        labels = labels[np.random.default_rng(seed).permutation(len(labels))]
    images = np.random.default_rng(seed).integers(0, 256, size=(len(rows), 64, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, 64, 64, 3))
        f.create_dataset("labels", data=labels)
    return images


@pytest.fixture(scope="module")
def generated() -> FactorGrid:
    return DSpritesDataModule(data_dir="/nonexistent", source="generate").ground_truth


# -- the contract ------------------------------------------------------------------------------

def small_grid(sizes=(2, 3, 4)) -> FactorGrid:
    """A grid whose image at row r is filled with r: what was read shows which row it was."""
    n = math.prod(sizes)
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 2, 2).contiguous()
    return FactorGrid([f"f{i}" for i in range(len(sizes))], sizes, TensorSource(images))


def test_grid_rows_are_the_factors_in_c_order():
    grid = small_grid((2, 3, 4))
    assert isinstance(grid, KnownFactors) and grid.num_factors == 3 and len(grid) == 24
    assert grid.image_shape == grid.shape == (1, 2, 2)
    factors = grid.all_factors()
    assert torch.equal(factors, torch.from_numpy(grid_rows((2, 3, 4))))  # the last factor varies fastest
    assert torch.equal(grid.rows_of(factors), torch.arange(24))
    rows = torch.tensor([23, 0, 5, 5, 17])
    assert torch.equal(grid.rows_of(grid.factors_of(rows)), rows)
    # The image of a factor row is the grid's image at that row.
    assert grid.images_from_factors(torch.tensor([[1, 2, 3], [0, 1, 0]]))[:, 0, 0, 0].tolist() == [23, 4]


def test_sampling_holds_one_factor_fixed_and_draws_the_others_uniformly():
    grid = small_grid((2, 3, 4))
    factors = grid.sample_factors(6000, torch.Generator().manual_seed(0))
    assert factors.dtype == torch.long and factors.shape == (6000, 3)
    for i, size in enumerate(grid.factor_sizes):  # every value, about equally often
        counts = torch.bincount(factors[:, i], minlength=size)
        assert len(counts) == size and (counts - 6000 / size).abs().max() < 0.1 * 6000 / size
    fixed = grid.sample_with_fixed_factor(500, 2, torch.Generator().manual_seed(1))
    assert fixed.shape == (500, 3) and len(fixed[:, 2].unique()) == 1
    assert len(fixed[:, 0].unique()) == 2 and len(fixed[:, 1].unique()) == 3  # the others vary
    values = {int(grid.sample_with_fixed_factor(1, 2, torch.Generator().manual_seed(s))[0, 2]) for s in range(40)}
    assert values == {0, 1, 2, 3}  # the fixed value itself drawn uniformly
    assert (grid.sample_with_fixed_factor(10, "f1", torch.Generator(), value=2)[:, 1] == 2).all()
    again = grid.sample_with_fixed_factor(500, 2, torch.Generator().manual_seed(1))
    assert torch.equal(fixed, again)  # the generator decides everything
    images, factors = grid.sample(7, torch.Generator().manual_seed(2))
    assert images.dtype == torch.uint8 and torch.equal(images[:, 0, 0, 0].long(), grid.rows_of(factors))


def test_bad_factor_arguments_name_what_is_wrong():
    grid = small_grid((2, 3, 4))
    with pytest.raises(ValueError, match=r"factor=3 is not a factor index: this data has 3 factors"):
        grid.sample_with_fixed_factor(4, 3, torch.Generator())
    with pytest.raises(ValueError, match=r"'size' is not one of this data's factors"):
        grid.sample_with_fixed_factor(4, "size", torch.Generator())
    with pytest.raises(ValueError, match=r"value=4 is not a value of factor 2 \(f2\), which takes 0 .. 3"):
        grid.sample_with_fixed_factor(4, 2, torch.Generator(), value=4)
    with pytest.raises(ValueError, match=r"factor 1 \(f1\) = 3 in row 1 is out of range: it takes 0 .. 2"):
        grid.images_from_factors(torch.tensor([[0, 0, 0], [0, 3, 0]]))
    with pytest.raises(ValueError, match=r"factors must be \[n, 3\]"):
        grid.rows_of(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="must be integers"):
        grid.rows_of(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="num=-1"):
        grid.sample_factors(-1, torch.Generator())
    with pytest.raises(ValueError, match="has 24 images, but the source holds 5"):
        FactorGrid(["a", "b", "c"], (2, 3, 4), TensorSource(torch.zeros(5, 1, 2, 2, dtype=torch.uint8)))


# -- dSprites, generated ---------------------------------------------------------------------

def test_generated_dsprites_is_the_official_grid(generated):
    assert generated.factor_names == DSPRITES_NAMES and generated.factor_sizes == (3, 6, 40, 32, 32)
    assert len(generated) == 737_280 and generated.image_shape == (1, 64, 64)
    rows = torch.randint(len(generated), (64,), generator=torch.Generator().manual_seed(0))
    factors = generated.factors_of(rows)
    assert torch.equal(generated.rows_of(factors), rows)
    images = generated.images_from_factors(factors)
    assert images.shape == (64, 1, 64, 64) and images.dtype == torch.uint8
    assert set(images.unique().tolist()) == {0, 255}  # binary, as the file's 0/1 become
    assert torch.equal(images, generated.read(rows))  # by factors or by rows: the same images
    assert torch.equal(images.flip(0), generated.images_from_factors(factors.flip(0)))  # whatever the batch


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(x, y) in pixels of each binary image [n, 1, H, W]: [n, 2]."""
    w = images[:, 0].float()
    grid_y, grid_x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    mass = w.sum((1, 2))
    return torch.stack([(w * grid_x).sum((1, 2)) / mass, (w * grid_y).sum((1, 2)) / mass], dim=1)


def principal_angle(images: torch.Tensor) -> torch.Tensor:
    """The angle (radians, anticlockwise on screen, modulo pi) of each sprite's long axis."""
    w = images[:, 0].float()
    grid_y, grid_x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cx, cy = centre_of_mass(images).unbind(1)
    dx, dy = grid_x - cx[:, None, None], -(grid_y - cy[:, None, None])  # y up
    mu20, mu02, mu11 = ((w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2)))
    return 0.5 * torch.atan2(2 * mu11, mu20 - mu02)


def test_generated_sprites_follow_their_factors(generated):
    def draw(*rows):
        return generated.images_from_factors(torch.tensor(rows))

    pixels = lambda images: (images > 0).sum((1, 2, 3))  # noqa: E731
    # Three different shapes, of about the same area.
    square, ellipse, heart = draw([0, 5, 0, 16, 16], [1, 5, 0, 16, 16], [2, 5, 0, 16, 16])
    assert not torch.equal(square, ellipse) and not torch.equal(square, heart) and not torch.equal(ellipse, heart)
    # Larger scale, more pixels (area ~ scale^2).
    counts = pixels(draw(*[[shape, scale, 7, 16, 16] for shape in range(3) for scale in range(6)])).view(3, 6)
    assert (counts.diff(dim=1) > 0).all()
    assert ((counts[:, 5] / counts[:, 0]) - 4).abs().max() < 0.5
    # posX moves the centre of mass right, in equal steps, posY down; the sprite stays whole.
    along_x = centre_of_mass(draw(*[[2, 3, 11, x, 9] for x in range(32)]))
    steps = along_x[:, 0].diff()
    assert (steps > 0).all() and (steps - steps.mean()).abs().max() < 0.6 and (along_x[:, 1].std() < 0.3)
    along_y = centre_of_mass(draw(*[[1, 3, 11, 4, y] for y in range(32)]))
    assert (along_y[:, 1].diff() > 0).all() and along_y[:, 0].std() < 0.3
    # At either end the biggest sprite (the ellipse at scale 1, lying or standing) reaches the edge, whole.
    edges = draw([1, 5, 0, 0, 16], [1, 5, 0, 31, 16], [1, 5, 10, 16, 0], [1, 5, 10, 16, 31])
    centred = pixels(draw([1, 5, 0, 16, 16], [1, 5, 10, 16, 16])).float()
    assert (pixels(edges).float().view(2, 2) / centred[:, None] - 1).abs().max() < 0.03
    # Orientation turns the ellipse's long axis by the orientation's angle, about a fixed centre.
    turned = draw(*[[1, 5, o, 16, 16] for o in range(0, 20)])  # 0 .. pi
    angles = principal_angle(turned)
    expected = torch.from_numpy(dsprites.ORIENTATIONS[:20]).float()
    error = torch.remainder(angles - expected + math.pi / 2, math.pi) - math.pi / 2
    assert error.abs().max() < 0.05
    assert (centre_of_mass(turned) - centre_of_mass(turned[:1])).abs().max() < 0.3
    # Orientation 2 pi is orientation 0 again (the file's 40 values include both ends).
    assert torch.equal(*draw([2, 4, 0, 5, 6], [2, 4, 39, 5, 6]))


def test_sprites_drawn_in_a_window_equal_sprites_drawn_on_the_whole_canvas(generated, monkeypatch):
    factors = generated.sample_factors(300, torch.Generator().manual_seed(3))
    factors[:100, 1], factors[:50, 3], factors[50:100, 4] = 5, 0, 31  # the biggest, at the edges
    windowed = generated.images_from_factors(factors)
    monkeypatch.setattr(dsprites, "WINDOW", 64)
    assert torch.equal(SpriteRenderer().render(factors), windowed)


def test_generated_sprites_cover_as_much_of_the_canvas_as_the_real_ones(generated):
    # All shapes x scales x orientations, at a few positions: the mean pixel is the published
    # mean of the real 737,280 images (0.042494, what the sprite size is fitted to).
    combos = torch.from_numpy(grid_rows((3, 6, 40)))
    factors = torch.cat([torch.cat([combos, torch.tensor([[x, y]]).expand(len(combos), 2)], 1)
                         for x, y in ((3, 20), (16, 16), (29, 7))])
    mean = generated.images_from_factors(factors).float().mean().item() / 255
    assert mean == pytest.approx(0.042494, rel=0.01)


# -- dSprites, the official file -----------------------------------------------------------------

def dsprites_module(tmp_path, monkeypatch, **kwargs) -> tuple[DSpritesDataModule, np.ndarray]:
    """A DSpritesDataModule over a small fake of the official file, its MD5 in place of the official one."""
    path = tmp_path / "data" / "dsprites" / dsprites.FILENAME
    images = write_fake_dsprites(path)
    monkeypatch.setattr(DSpritesDataModule, "resource", Resource(dsprites.FILENAME, md5(path), urls=(dsprites.URL,)))
    kwargs = {"val_size": 10, "test_size": 20, "batch_size": 16, **kwargs}
    return DSpritesDataModule(data_dir=tmp_path / "data", **kwargs), images


@pytest.mark.parametrize("in_memory", [True, False])
def test_dsprites_file_is_read_as_its_grid(tmp_path, monkeypatch, in_memory):
    dm, images = dsprites_module(tmp_path, monkeypatch, source="file", in_memory=in_memory)
    dm.prepare_data()
    dm.setup()
    grid = dm.ground_truth
    assert grid.factor_names == DSPRITES_NAMES and grid.factor_sizes == (3, 2, 2, 3, 4)  # the file's grid
    assert torch.equal(grid.read(torch.arange(144)), torch.from_numpy(images[:, None] * 255))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (114, 10, 20)
    assert dm.streaming is (not in_memory)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 64, 64) and y.shape == (16, 5) and y.dtype == torch.long
    assert torch.equal(x, grid.images_from_factors(y))  # each image with its own factors
    x, y = dm.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32 and set(x.unique().tolist()) <= {0.0, 1.0}
    cache = tmp_path / "data" / "dsprites" / "cache" / "imgs_uint8.npy"
    assert np.load(cache, mmap_mode="r").shape == (144, 1, 64, 64)


def test_dsprites_file_reader_checks_the_layout(tmp_path):
    path = tmp_path / dsprites.FILENAME
    classes = grid_rows((1, 3, 2, 2, 3, 4))
    write_fake_dsprites(path, classes=classes[::-1].copy())  # not in C order
    with pytest.raises(DataError, match="is not the grid colour x shape x scale"):
        dsprites.read_npz_grid(path)
    write_fake_dsprites(path, images=np.full((144, 64, 64), 255, dtype=np.uint8))
    assert dsprites.read_npz_grid(path) == (3, 2, 2, 3, 4)
    with pytest.raises(DataError, match="imgs holds values above 1"):
        dsprites.cache_npz_images(path, tmp_path / "cache.npy", 144)
    assert not list(tmp_path.glob("cache*"))  # nothing half-written left behind
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("imgs.npy", b"")
    with pytest.raises(DataError, match="has no array 'latents_classes'"):
        dsprites.read_npz_grid(path)


def test_dsprites_file_that_is_not_the_official_one_is_refused(tmp_path, monkeypatch):
    dm, _ = dsprites_module(tmp_path, monkeypatch, source="file")
    write_fake_dsprites(tmp_path / "data" / "dsprites" / dsprites.FILENAME, seed=1)  # other images
    with pytest.raises(DataError, match=r"is not the official dSprites file \(MD5 mismatch\)"):
        dm.setup()


def test_dsprites_missing_file_names_directory_file_and_url(tmp_path):
    dm = DSpritesDataModule(data_dir=tmp_path, source="file", download=False)
    with pytest.raises(DataError) as error:
        dm.setup()
    message = str(error.value)
    assert str(tmp_path / "dsprites") in message and dsprites.FILENAME in message
    assert "https://github.com/deepmind/dsprites-dataset/raw/master/" + dsprites.FILENAME in message
    assert "data.download=false" in message and "data.source=generate" in message


def test_dsprites_downloads_and_checks_the_md5(tmp_path, server, monkeypatch):
    url, served = server
    write_fake_dsprites(served / dsprites.FILENAME)
    digest = md5(served / dsprites.FILENAME)
    served_at = (url + dsprites.FILENAME,)
    monkeypatch.setattr(DSpritesDataModule, "resource", Resource(dsprites.FILENAME, digest, urls=served_at))
    dm = DSpritesDataModule(data_dir=tmp_path / "data", source="file", val_size=10, test_size=10)
    dm.prepare_data()
    assert md5(tmp_path / "data" / "dsprites" / dsprites.FILENAME) == digest
    dm.setup()
    assert dm.ground_truth.factor_sizes == (3, 2, 2, 3, 4)
    # A file whose MD5 is not the published one is refused, and not kept.
    monkeypatch.setattr(DSpritesDataModule, "resource", Resource(dsprites.FILENAME, "0" * 32, urls=served_at))
    with pytest.raises(DataError, match=r"MD5 .* does not match the published"):
        DSpritesDataModule(data_dir=tmp_path / "other", source="file").prepare_data()
    assert not list((tmp_path / "other" / "dsprites").iterdir())


def test_dsprites_auto_uses_the_file_when_there_else_generates(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="vae_lightning"):
        generated = DSpritesDataModule(data_dir=tmp_path / "empty", source="auto").ground_truth
    assert isinstance(generated.images, SpriteRenderer) and generated.factor_sizes == (3, 6, 40, 32, 32)
    assert [r.message for r in caplog.records if "drawn procedurally" in r.message] != []
    dm, _ = dsprites_module(tmp_path, monkeypatch, source="auto")
    assert dm.ground_truth.factor_sizes == (3, 2, 2, 3, 4)  # the file's


# -- the DataModule --------------------------------------------------------------------------------

def test_generated_dsprites_datamodule_end_to_end():
    dm = DSpritesDataModule(data_dir="/nonexistent", source="generate", val_size=20, test_size=30, batch_size=32,
                            in_memory=False)  # streamed: only the batches asked for are drawn
    assert dm.input_shape == (1, 64, 64) and dm.num_classes is None and dm.binarize == "none"
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (737_280 - 50, 20, 30)
    held_out = torch.cat([dm.val_set.split.rows, dm.test_set.split.rows])
    assert len(set(held_out.tolist()) | set(dm.train_set.split.rows[:100_000].tolist())) == 100_050  # disjoint
    again = DSpritesDataModule(data_dir="/nonexistent", source="generate", val_size=20, test_size=30, in_memory=False)
    again.setup()
    assert torch.equal(again.test_set.split.rows, dm.test_set.split.rows)  # fixed by split_seed
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 64, 64) and y.shape == (32, 5) and y.dtype == torch.long
    assert torch.equal(x, dm.ground_truth.images_from_factors(y))
    x, y = next(iter(dm.test_dataloader()))
    assert y.shape == (30, 5) and torch.equal(dm.ground_truth.rows_of(y), dm.test_set.split.rows)
    # Batches with one factor held fixed.
    x, factors = dm.factor_batch("scale", 12, torch.Generator().manual_seed(0), value=4)
    assert x.shape == (12, 1, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() == 1
    assert (factors[:, 1] == 4).all() and len(factors[:, 2].unique()) > 1
    assert torch.equal(x, dm.ground_truth.images_from_factors(factors).float() / 255)
    x, factors = dm.factor_batch(0, 12, torch.Generator().manual_seed(1))
    assert len(factors[:, 0].unique()) == 1
    with pytest.raises(ValueError, match="factor=5 is not a factor index"):
        dm.factor_batch(5, 4, torch.Generator())


def test_factor_data_options_and_other_data(tmp_path):
    with pytest.raises(ConfigError, match="data.hflip=True does not apply"):
        DSpritesDataModule(source="generate", hflip=True)
    with pytest.raises(ConfigError, match="data.source='npz' must be one of"):
        DSpritesDataModule(source="npz")
    assert getattr(MNISTDataModule(data_dir=tmp_path), "ground_truth", None) is None  # only factor data has one


def test_data_configs_compose_into_the_factor_datamodules(tmp_path):
    from hydra.utils import instantiate

    from conftest import compose_run

    for name, cls in (("dsprites", DSpritesDataModule), ("shapes3d", Shapes3DDataModule)):
        cfg = compose_run(f"data={name}", f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}")
        dm = instantiate(cfg.data)
        assert type(dm) is cls and (dm.val_size, dm.test_size, dm.binarize, dm.hflip) == (5000, 10000, "none", False)
    assert dm.input_shape == (3, 64, 64)


# -- 3D Shapes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("in_memory", [True, False])
def test_shapes3d_file_is_read_as_its_grid(tmp_path, in_memory):
    images = write_fake_shapes3d(tmp_path / "shapes3d" / "3dshapes.h5")
    dm = Shapes3DDataModule(data_dir=tmp_path, val_size=4, test_size=6, batch_size=8, in_memory=in_memory)
    dm.setup()
    assert "h5py" in sys.modules
    grid = dm.ground_truth
    assert grid.factor_names == SHAPES3D_NAMES and grid.factor_sizes == (2, 3, 1, 2, 2, 3)
    assert grid.image_shape == (3, 64, 64) and dm.num_classes is None
    rows = torch.tensor([71, 3, 3, 40, 0, 41, 42])  # unsorted, repeated, runs of consecutive rows
    assert torch.equal(grid.read(rows), torch.from_numpy(images[rows.numpy()].transpose(0, 3, 1, 2)))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (62, 4, 6)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 64, 64) and y.shape == (8, 6) and torch.equal(x, grid.images_from_factors(y))
    x, factors = dm.factor_batch("object_hue", 5, torch.Generator().manual_seed(0))
    assert (factors[:, 2] == 0).all() and x.shape == (5, 3, 64, 64)


def test_shapes3d_streams_through_dataloader_workers(tmp_path):
    images = write_fake_shapes3d(tmp_path / "3dshapes.h5")
    dm = Shapes3DDataModule(data_dir=tmp_path, val_size=4, test_size=6, eval_batch_size=6, in_memory=False,
                            num_workers=1)
    dm.setup()
    source = dm.ground_truth.images
    source.read(torch.tensor([0]))  # the file open in this process: the worker opens its own
    x, y = next(iter(dm.test_dataloader()))
    assert torch.equal(x, torch.from_numpy(images[dm.ground_truth.rows_of(y).numpy()].transpose(0, 3, 1, 2)))
    # Neither pickled (spawned workers) nor forked (a process of another id) is the handle used again.
    assert pickle.loads(pickle.dumps(source))._file is None
    opened = source._file
    source._pid = -1  # as a forked worker finds the parent's handle
    assert torch.equal(source.read(torch.tensor([5]))[0], torch.from_numpy(images[5].transpose(2, 0, 1)))
    assert source._file is not opened


def test_h5py_is_imported_only_when_3d_shapes_is_used():
    code = "import sys, vae_lightning.data, vae_lightning.run; print('h5py' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_shapes3d_checks_the_file(tmp_path):
    write_fake_shapes3d(tmp_path / "3dshapes.h5", shuffle=True)
    with pytest.raises(DataError, match="labels are not the grid floor_hue x wall_hue"):
        Shapes3DDataModule(data_dir=tmp_path).ground_truth
    (tmp_path / "3dshapes.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot be read as an HDF5 file"):
        Shapes3DDataModule(data_dir=tmp_path).ground_truth
    dm = Shapes3DDataModule(data_dir=tmp_path / "none", download=False)
    with pytest.raises(DataError) as error:
        dm.setup()
    message = str(error.value)
    assert str(tmp_path / "none" / "shapes3d") in message and "3dshapes.h5" in message
    assert "https://storage.googleapis.com/3d-shapes/3dshapes.h5" in message


def test_shapes3d_downloads_and_checks_the_md5(tmp_path, server, monkeypatch):
    url, served = server
    write_fake_shapes3d(served / "3dshapes.h5")
    digest = md5(served / "3dshapes.h5")
    monkeypatch.setattr(Shapes3DDataModule, "resource", Resource("3dshapes.h5", digest, urls=(url + "3dshapes.h5",)))
    dm = Shapes3DDataModule(data_dir=tmp_path / "data", val_size=4, test_size=4)
    dm.prepare_data()
    assert md5(tmp_path / "data" / "shapes3d" / "3dshapes.h5") == digest
    assert len(dm.ground_truth) == 72
