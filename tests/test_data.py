"""IDX reading, finding and downloading files, and the MNIST DataModule on small files it writes."""

import functools
import gzip
import hashlib
import http.server
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_fake_mnist
from vae_lightning.data import MNISTDataModule, read_idx, write_idx
from vae_lightning.data.download import Resource
from vae_lightning.errors import DataError, VAEUserError


# -- IDX -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    out = read_idx(path)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out.numpy(), array)


def test_idx_header_is_big_endian_as_in_the_standard(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1])
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + np.array([1, 258], dtype=">i4").tobytes())
    assert read_idx(path).tolist() == [1, 258]


def test_truncated_idx_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated.*Delete it"):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"Cannot read .*t10k-images-idx3-ubyte.gz"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(path)


# -- finding and downloading ---------------------------------------------------------------

def test_missing_files_without_download_name_directory_files_and_fix(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "data.data_dir=" in message and "VAE_DATA_DIR" in message


def test_missing_files_with_no_network_fail_at_once(tmp_path, monkeypatch):
    # Port 9 on loopback refuses connections at once, like a machine without a network.
    monkeypatch.setattr(MNISTDataModule, "mirrors", ("http://127.0.0.1:9/mnist/",))
    dm = MNISTDataModule(data_dir=tmp_path, download=True)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"the download of train-images-idx3-ubyte.gz failed.*VAE_DATA_DIR"):
        dm.prepare_data()
    assert time.monotonic() - start < 10
    assert not list((tmp_path / "MNIST" / "raw").glob("*.part")), "a failed download left a partial file"


def test_data_dir_that_cannot_be_created_is_reported_before_downloading(tmp_path):
    (tmp_path / "file").write_text("")  # a file where the data directory should be
    dm = MNISTDataModule(data_dir=tmp_path / "file", download=True)
    with pytest.raises(DataError, match=r"cannot create .*file/MNIST/raw to download them"):
        dm.prepare_data()


def test_read_only_data_dir_is_reported_before_downloading(tmp_path, monkeypatch):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    # Permission bits do not bind root, so say the directory is read-only as os.access would.
    monkeypatch.setattr("vae_lightning.data.download.os.access", lambda path, mode: False)
    dm = MNISTDataModule(data_dir=tmp_path, download=True)
    with pytest.raises(DataError, match=r"MNIST/raw is not writable, so they cannot be downloaded"):
        dm.prepare_data()


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server standing in for a dataset mirror; yields (url, folder it serves)."""
    served = tmp_path / "mirror"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()


def _fake_mnist_resources(folder: Path) -> dict:
    make_fake_mnist(folder.parent / "src", num_train=100, num_test=20)
    resources = {}
    for key, name in [("train_images", "train-images-idx3-ubyte.gz"), ("train_labels", "train-labels-idx1-ubyte.gz"),
                      ("test_images", "t10k-images-idx3-ubyte.gz"), ("test_labels", "t10k-labels-idx1-ubyte.gz")]:
        data = (folder.parent / "src" / "MNIST" / "raw" / name).read_bytes()
        (folder / name).write_bytes(data)
        resources[key] = Resource(name, hashlib.md5(data).hexdigest())
    return resources


def test_download_checks_md5_and_then_loads(tmp_path, mirror, monkeypatch):
    url, served = mirror
    monkeypatch.setattr(MNISTDataModule, "mirrors", ("http://127.0.0.1:9/dead/", url))  # first mirror down
    monkeypatch.setattr(MNISTDataModule, "resources", _fake_mnist_resources(served))
    dm = MNISTDataModule(data_dir=tmp_path / "data", val_size=10)
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data" / "MNIST" / "raw").iterdir()) == sorted(
        r.filename for r in MNISTDataModule.resources.values())
    dm.setup("fit")
    assert len(dm.train_set) == 90 and len(dm.val_set) == 10 and len(dm.test_set) == 20


def test_download_with_wrong_md5_is_refused_and_not_kept(tmp_path, mirror, monkeypatch):
    url, served = mirror
    resources = _fake_mnist_resources(served)
    resources["train_images"] = Resource("train-images-idx3-ubyte.gz", "0" * 32)
    monkeypatch.setattr(MNISTDataModule, "mirrors", (url,))
    monkeypatch.setattr(MNISTDataModule, "resources", resources)
    dm = MNISTDataModule(data_dir=tmp_path / "data")
    with pytest.raises(DataError, match="does not match the published 0000"):
        dm.prepare_data()
    assert not (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()


def test_uncompressed_files_in_the_dataset_folder_are_found(tmp_path, fake_mnist):
    (tmp_path / "MNIST").mkdir()
    for gz in (fake_mnist / "MNIST" / "raw").glob("*.gz"):
        (tmp_path / "MNIST" / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    dm = MNISTDataModule(data_dir=tmp_path, download=False, val_size=100)
    dm.prepare_data()
    dm.setup()
    assert len(dm.test_set) == 200


def test_labels_file_in_place_of_images_is_named(tmp_path, fake_mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (fake_mnist / "MNIST" / "raw").glob("*.gz"):
        (raw / gz.name).write_bytes(gz.read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz holds .* not MNIST images"):
        dm.setup()


def test_data_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path))
    assert MNISTDataModule().data_dir == tmp_path


# -- splits and binarisation ---------------------------------------------------------------

class _FakeTrainer:
    global_rank, world_size = 0, 1

    def __init__(self, training):
        from types import SimpleNamespace

        from lightning.pytorch.trainer.states import RunningStage

        self.training = training
        self.state = SimpleNamespace(stage=RunningStage.TRAINING if training else RunningStage.VALIDATING)


def _first_batch(dm, loader, training):
    dm.trainer = _FakeTrainer(training)
    return dm.on_after_batch_transfer(next(iter(loader)), 0)


def test_split_is_fixed_by_seed_and_disjoint(fake_mnist):
    a = MNISTDataModule(data_dir=fake_mnist, val_size=100, split_seed=3)
    b = MNISTDataModule(data_dir=fake_mnist, val_size=100, split_seed=3)
    c = MNISTDataModule(data_dir=fake_mnist, val_size=100, split_seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert len(a.train_set) == 500 and len(a.val_set) == 100
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    # No training image is also a validation image (images here are all distinct).
    train = {bytes(i.numpy()) for i in a.train_set.images}
    assert not any(bytes(i.numpy()) in train for i in a.val_set.images)


def test_dynamic_binarisation_draws_training_batches_afresh_and_keeps_eval_fixed(fake_mnist):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=64, binarize="dynamic")
    dm.setup()
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=64, collate_fn=lambda b: b)
    x1, y1 = _first_batch(dm, loader, training=True)
    x2, _ = _first_batch(dm, loader, training=True)
    assert x1.shape == (64, 1, 28, 28) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert set(x1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(x1, x2), "a dynamic draw should differ each time an image is seen"
    v1, _ = _first_batch(dm, dm.val_dataloader(), training=False)
    v2, _ = _first_batch(dm, dm.val_dataloader(), training=False)
    assert set(v1.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(v1, v2), "validation images should be one fixed draw"


def test_dynamic_binarisation_has_the_intensity_as_its_mean(fake_mnist):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, binarize="dynamic")
    dm.setup()
    batch = (dm.train_set.images[:8], dm.train_set.labels[:8])
    dm.trainer = _FakeTrainer(True)
    draws = torch.stack([dm.on_after_batch_transfer(batch, 0)[0] for _ in range(400)])
    torch.testing.assert_close(draws.mean(0), batch[0].float() / 255, atol=0.1, rtol=0)


@pytest.mark.parametrize("binarize", ["static", "none"])
def test_static_and_none_give_the_same_training_batch_every_time(fake_mnist, binarize):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, binarize=binarize)
    dm.setup()
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=32, collate_fn=lambda b: b)
    x1, _ = _first_batch(dm, loader, training=True)
    x2, _ = _first_batch(dm, loader, training=True)
    assert torch.equal(x1, x2)
    values = set(x1.unique().tolist())
    if binarize == "static":
        assert values == {0.0, 1.0}
    else:
        assert len(values) > 2 and min(values) >= 0.0 and max(values) == 1.0


def test_bad_binarize_and_val_size_are_clear_errors(fake_mnist):
    with pytest.raises(VAEUserError, match=r"data.binarize='otsu'.*dynamic"):
        MNISTDataModule(data_dir=fake_mnist, binarize="otsu")
    with pytest.raises(VAEUserError, match=r"data.val_size=600 leaves no training images: MNIST has 600"):
        MNISTDataModule(data_dir=fake_mnist, val_size=600).setup()


def test_loaders_deliver_batches_without_per_example_collate(fake_mnist):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50, eval_batch_size=64)
    dm.setup()
    sizes = [len(x) for x, _ in dm.train_dataloader()]
    assert sum(sizes) == 500 and sizes[0] == 50
    assert [len(x) for x, _ in dm.test_dataloader()] == [64, 64, 64, 8]


def test_fashion_mnist_shares_the_loader_and_reads_its_own_folder(tmp_path, fake_mnist):
    from vae_lightning.data import FashionMNISTDataModule
    missing = FashionMNISTDataModule(data_dir=fake_mnist, download=False)  # only MNIST/raw is there
    with pytest.raises(DataError, match=r"FashionMNIST files missing in .*FashionMNIST/raw"):
        missing.prepare_data()
    (tmp_path / "FashionMNIST").mkdir()
    (tmp_path / "FashionMNIST" / "raw").symlink_to(fake_mnist / "MNIST" / "raw")
    dm = FashionMNISTDataModule(data_dir=tmp_path, download=False, val_size=50, binarize="none")
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 550 and len(dm.test_set) == 200
    assert FashionMNISTDataModule.resources["train_images"].md5 != MNISTDataModule.resources["train_images"].md5


def test_a_file_of_the_official_size_with_other_contents_is_reported_corrupt(tmp_path, fake_mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (fake_mnist / "MNIST" / "raw").glob("*.gz"):
        (raw / gz.name).write_bytes(gz.read_bytes())
    # 10000 labels: exactly the size of the official t10k labels, but not their contents.
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(10_000, dtype=np.uint8))
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte is corrupt: the MD5 of its contents is .* not the "
                                        r"official 27ae3e4e09519cfbb04c329615203637"):
        dm.setup()


# -- the in-memory tensor loader ------------------------------------------------------------

from vae_lightning.data.batches import TensorBatches  # noqa: E402


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return torch.cat([x for x, in loader])


def test_tensor_batches_shuffle_each_epoch_from_the_seed_and_cover_every_example():
    data = torch.arange(1000)
    loader = TensorBatches((data,), batch_size=128, shuffle=True, seed=5)
    assert len(loader) == 8 and [len(x) for x, in loader] == [128] * 7 + [104]
    e0, e1 = _epoch(loader, 0), _epoch(loader, 1)
    assert torch.equal(e0.sort().values, data) and torch.equal(e1.sort().values, data)
    assert not torch.equal(e0, e1)  # a new order every epoch ...
    again = TensorBatches((data,), batch_size=128, shuffle=True, seed=5)
    assert torch.equal(_epoch(again, 1), e1)  # ... fixed by seed + epoch, so a resumed run sees the same one
    assert not torch.equal(_epoch(TensorBatches((data,), 128, shuffle=True, seed=6), 1), e1)


def test_tensor_batches_keep_tensors_aligned_and_drop_last():
    images, labels = torch.arange(100).repeat_interleave(3).view(100, 3), torch.arange(100)
    loader = TensorBatches((images, labels), batch_size=32, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and all(len(y) == 32 for _, y in batches)
    for x, y in batches:
        assert torch.equal(x, y[:, None].expand(-1, 3))
    unshuffled = list(TensorBatches((labels,), batch_size=32))
    assert torch.equal(torch.cat([y for y, in unshuffled]), labels)
    assert unshuffled[0][0].data_ptr() == labels.data_ptr()  # evaluation batches are views, not copies


@pytest.mark.parametrize("size, world", [(1000, 2), (1001, 3), (7, 4)])
def test_tensor_batches_deal_each_process_its_own_share(size, world):
    data = torch.arange(size)
    train = [TensorBatches((data,), 16, shuffle=True, seed=1, rank=r, world_size=world) for r in range(world)]
    shares = [_epoch(loader, 3) for loader in train]
    # Training: every process the same number of steps and examples (padded by wrapping round, as
    # DistributedSampler), together every example, none twice beyond the padding.
    assert len({len(loader) for loader in train}) == 1 and len({len(s) for s in shares}) == 1
    together = torch.cat(shares)
    assert torch.equal(together.unique(), data) and len(together) - size < world
    # Evaluation: contiguous shares with no padding, so means over all processes are exact.
    evals = [torch.cat([x for x, in TensorBatches((data,), 16, rank=r, world_size=world)]) for r in range(world)]
    assert torch.equal(torch.cat(evals), data)


def test_datamodule_loader_options(fake_mnist):
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50, loader="dataloader")
    dm.setup()
    assert isinstance(dm.train_dataloader(), torch.utils.data.DataLoader)
    assert sum(len(x) for x, _ in dm.train_dataloader()) == 500
    with pytest.raises(VAEUserError, match=r"data.num_workers=2 applies to DataLoader paths only"):
        MNISTDataModule(data_dir=fake_mnist, num_workers=2, loader="tensor")
    with pytest.raises(VAEUserError, match=r"data.loader='lmdb' is not known"):
        MNISTDataModule(data_dir=fake_mnist, loader="lmdb")
    MNISTDataModule(data_dir=fake_mnist, num_workers=2, pin_memory=True, loader="dataloader")  # fine there


@pytest.mark.parametrize("path", [{}, {"in_memory": False}, {"loader": "dataloader"}], ids=["tensor", "streamed",
                                                                                            "dataloader"])
def test_a_run_resumed_mid_epoch_sees_the_rest_of_that_epoch_in_the_same_order(fake_mnist, tmp_path, monkeypatch,
                                                                               path):
    import lightning as L

    from conftest import make_vae

    class Record(L.Callback):
        def __init__(self, stop_at=None):
            self.seen, self.stop_at = [], stop_at

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.append((trainer.current_epoch, batch_idx, batch[1].tolist()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self.stop_at:  # a checkpoint mid-epoch 1, then stop
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                trainer.should_stop = True

    def fit(stop_at=None, ckpt_path=None):
        L.seed_everything(0, verbose=False)
        dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50, binarize="static", **path)
        record = Record(stop_at)
        trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[record], limit_val_batches=0,
                            default_root_dir=tmp_path)
        trainer.fit(make_vae("model.latent_dim=4", "model.encoder.hidden_dims=[16]"), dm, ckpt_path=ckpt_path)
        return record.seen

    whole = fit()
    first = fit(stop_at=13)  # 10 batches an epoch: stops after batch 3 of epoch 1
    rest = fit(ckpt_path=tmp_path / "mid.ckpt")
    assert len(whole) == 30 and len(first) == 13
    assert first + rest == whole  # the same batches, in the same order, each exactly once
    # Without the skip the resumed epoch would start its permutation again.
    monkeypatch.setattr(MNISTDataModule, "_batches_done_this_epoch", lambda self: 0)
    assert first + fit(ckpt_path=tmp_path / "mid.ckpt") != whole


def test_tensor_batches_state_names_a_changed_order():
    loader = TensorBatches((torch.arange(10),), batch_size=4, shuffle=True, seed=3)
    loader.load_state_dict(loader.state_dict())  # the same order: silent
    with pytest.warns(UserWarning, match="different data order"):
        loader.load_state_dict({**loader.state_dict(), "seed": 4})


def test_an_evaluation_split_smaller_than_the_processes_is_refused(fake_mnist):
    from types import SimpleNamespace

    dm = MNISTDataModule(data_dir=fake_mnist, val_size=3, batch_size=50)
    dm.setup()
    dm.trainer = SimpleNamespace(world_size=4, global_rank=0)  # 4 processes, 3 validation images
    with pytest.raises(VAEUserError, match=r"An evaluation split of 3 images cannot give each of the 4 processes"):
        dm.val_dataloader()
