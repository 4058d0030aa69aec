"""DataModules for 28x28 greyscale image datasets stored as IDX files (MNIST, Fashion-MNIST)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..callbacks import batches_done_this_epoch
from ..checks import check_data_args
from ..errors import DataError, VAEUserError
from .batches import EpochOrder, TensorBatches
from .download import Resource, locate_or_download
from .idx import read_idx


class ImageTensorDataset(Dataset):
    """Images [N, C, H, W] uint8 and labels [N] held in memory.

    ``__getitems__`` hands the DataLoader a whole batch by one index operation
    instead of N per-example calls and a collate.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        assert len(images) == len(labels)
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


class ContiguousShards(DistributedSampler):
    """Evaluation under DDP with a DataLoader: each process a contiguous share of the examples, all of
    them once, none repeated (as the tensor loader's :class:`EpochOrder` does). A DistributedSampler,
    so Lightning keeps it rather than injecting its own."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.order = EpochOrder(len(dataset), shuffle=False, rank=rank, world_size=num_replicas)

    def __iter__(self):
        return iter(range(*self.order.span()))

    def __len__(self) -> int:
        return len(self.order)


def _batch_as_is(batch):
    """collate_fn for datasets whose __getitems__ already returns a batch."""
    return batch


def default_data_dir() -> str:
    """$VAE_DATA_DIR when set, else ./data."""
    return os.environ.get("VAE_DATA_DIR") or "data"


class IDXImageDataModule(L.LightningDataModule):
    """Train/validation/test splits of an IDX image dataset, binarised for a Bernoulli decoder.

    Batches are ``(x, y)``: x float [B, 1, 28, 28] on the training device, y int64 [B].

    binarize:
      ``dynamic`` - training images are drawn afresh as Bernoulli(intensity) every time
                   they are seen (the standard for likelihood numbers); validation and
                   test images are drawn once with ``split_seed``, so evaluation is
                   repeatable.
      ``static``  - every image drawn once with ``split_seed``.
      ``none``    - intensities in [0, 1], for Gaussian-type decoders.

    The validation split is ``val_size`` images of the training file, picked with
    ``split_seed``; the test file is the test split.

    loader:
      ``tensor``     - (default) each split is one uint8 tensor and batches are taken by slicing
                      (:class:`TensorBatches`): one permutation per epoch from
                      ``shuffle_seed + epoch``, no per-example Python, each DDP process its
                      own share. With ``on_device`` (``auto``: when training on a GPU) the
                      tensors live on the training device.
      ``dataloader`` - a standard ``DataLoader`` (``num_workers``, ``pin_memory``; Lightning adds
                      the ``DistributedSampler``), for data that does not fit in memory.
    """

    #: Set by subclasses.
    name: str = ""
    mirrors: tuple[str, ...] = ()
    resources: dict[str, Resource] = {}
    input_shape = (1, 28, 28)

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        binarize: str = "dynamic",
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        download: bool = True,
        loader: str = "tensor",
        shuffle_seed: int = 0,
        on_device: bool | str = "auto",
    ):
        super().__init__()
        check_data_args(binarize, batch_size, eval_batch_size, val_size, num_workers, loader, pin_memory, on_device)
        self.data_dir = Path(data_dir if data_dir not in (None, "") else default_data_dir()).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size = val_size
        self.binarize = binarize
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.download = download
        self.loader = loader
        self.shuffle_seed = shuffle_seed
        self.on_device = on_device
        self.train_set = self.val_set = self.test_set = None

    # -- files -------------------------------------------------------------------------
    @property
    def raw_folder(self) -> Path:
        """Where downloads go: <data_dir>/<NAME>/raw, the layout torchvision uses too."""
        return self.data_dir / self.name / "raw"

    def _files(self, allow_download: bool) -> dict[str, Path]:
        # Not data_dir itself: MNIST and Fashion-MNIST files have the same names.
        folders = [self.raw_folder, self.data_dir / self.name]
        found = locate_or_download(
            list(self.resources.values()), folders, self.raw_folder, self.mirrors, allow_download, self.name
        )
        return {key: found[r.filename] for key, r in self.resources.items()}

    def prepare_data(self) -> None:
        """Download what is missing (called on one process only)."""
        self._files(allow_download=self.download)

    # -- splits ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = self._files(allow_download=False)
        images, labels = self._read_pair(files, "train_images", "train_labels")
        test_images, test_labels = self._read_pair(files, "test_images", "test_labels")
        if not 0 < self.val_size < len(images):
            raise VAEUserError(f"data.val_size={self.val_size} must be between 1 and {len(images) - 1} "
                               f"(the training file has {len(images)} images).")
        generator = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(images), generator=generator)
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        train_images, val_images = images[train_idx], images[val_idx]
        if self.binarize in ("dynamic", "static"):
            # Fixed draws are stored as 0/255 so every split is read the same way.
            val_images = self._fixed_draw(val_images, generator)
            test_images = self._fixed_draw(test_images, generator)
            if self.binarize == "static":
                train_images = self._fixed_draw(train_images, generator)
        device = self._data_device()
        self.train_set = ImageTensorDataset(train_images.to(device), labels[train_idx].to(device))
        self.val_set = ImageTensorDataset(val_images.to(device), labels[val_idx].to(device))
        self.test_set = ImageTensorDataset(test_images.to(device), test_labels.to(device))

    def _data_device(self) -> torch.device:
        """Where the splits are kept: the training device with the tensor loader and ``on_device``
        (``auto``: an accelerator, not the CPU), else host memory."""
        trainer = self.trainer  # None until a Trainer uses this DataModule
        if self.loader != "tensor" or trainer is None or self.on_device is False:
            return torch.device("cpu")
        device = trainer.strategy.root_device
        return device if self.on_device is True or device.type != "cpu" else torch.device("cpu")

    def _read_pair(self, files: dict[str, Path], images_key: str, labels_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 1, H, W] uint8 and labels [N] int64, checked to be what they claim."""
        images_path, labels_path = files[images_key], files[labels_key]
        images, labels = (read_idx(files[key], self._official(key)) for key in (images_key, labels_key))
        if images.dim() != 3 or tuple(images.shape[1:]) != self.input_shape[1:] or images.dtype != torch.uint8:
            raise DataError(f"{images_path} holds {images.dtype} data of shape {list(images.shape)}, not "
                            f"{self.name} images (uint8, N x {self.input_shape[1]} x {self.input_shape[2]}). "
                            f"Replace it with the original file.")
        if labels.dim() != 1 or labels.dtype != torch.uint8:
            raise DataError(f"{labels_path} holds {labels.dtype} data of shape {list(labels.shape)}, not "
                            f"{self.name} labels (uint8, N). Replace it with the original file.")
        if len(images) != len(labels):
            raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
                            f"labels. One of them is from another dataset or split.")
        return images.unsqueeze(1), labels.long()

    def _official(self, key: str) -> tuple[int, str] | None:
        r = self.resources[key]
        return (r.raw_size, r.raw_md5) if r.raw_size and r.raw_md5 else None

    @staticmethod
    def _fixed_draw(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draw = torch.bernoulli(images.float() / 255.0, generator=generator)
        return (draw * 255).to(torch.uint8)

    # -- loaders -----------------------------------------------------------------------
    def _loader(self, dataset: ImageTensorDataset | None, batch_size: int, shuffle: bool) -> TensorBatches | DataLoader:
        if dataset is None:
            raise RuntimeError("setup() has not run: call datamodule.setup() first.")
        trainer = self.trainer
        if not shuffle and trainer is not None and len(dataset) < trainer.world_size:
            # A process with no evaluation batch at all would miss DDP's first buffer broadcast: a hang.
            raise VAEUserError(f"An evaluation split of {len(dataset)} images cannot give each of the "
                               f"{trainer.world_size} processes one: raise data.val_size or use fewer devices.")
        if self.loader == "tensor":
            rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            return TensorBatches((dataset.images, dataset.labels), batch_size, shuffle=shuffle,
                                 seed=self.shuffle_seed, rank=rank, world_size=world_size,
                                 skip_batches=self._batches_done_this_epoch if shuffle else None)
        if self.num_workers == 0:
            # The data is in memory and batches come by slicing: workers would only add copies.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        sampler = None
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Lightning's DistributedSampler would pad the shards by repeating examples, which the
            # epoch means would then count twice: evaluation takes contiguous, unpadded shares.
            sampler = ContiguousShards(dataset, trainer.world_size, trainer.global_rank)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=_batch_as_is,
            persistent_workers=self.num_workers > 0,
        )

    def _batches_done_this_epoch(self) -> int:
        """Training batches of the current epoch already done (a run resumed mid-epoch goes on from there)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        return batches_done_this_epoch(trainer)

    def train_dataloader(self) -> TensorBatches | DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatches | DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches | DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 -> float in [0, 1] on the device; the dynamic Bernoulli draw for training batches."""
        x, y = batch
        x = x.float() / 255.0
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            # Bernoulli(x) as u < x, u ~ U[0, 1): the same draw, ~3x faster than torch.bernoulli on a CPU.
            x = (torch.rand_like(x) < x).to(x.dtype)
        return x, y


class MNISTDataModule(IDXImageDataModule):
    """MNIST (LeCun, Cortes and Burges; CC BY-SA 3.0): 60k training and 10k test digits."""

    name = "MNIST"
    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    resources = {
        "train_images": Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                 47040016, "6bbc9ace898e44ae57da46a324031adb"),
        "train_labels": Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                                 60008, "a25bea736e30d166cdddb491f175f624"),
        "test_images": Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                                7840016, "2646ac647ad5339dbf082846283269ea"),
        "test_labels": Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                                10008, "27ae3e4e09519cfbb04c329615203637"),
    }


class FashionMNISTDataModule(IDXImageDataModule):
    """Fashion-MNIST (Xiao, Rasul and Vollgraf 2017; MIT): 60k training and 10k test 28x28 images
    of clothing in MNIST's IDX format, under ``<data_dir>/FashionMNIST/raw``."""

    name = "FashionMNIST"
    mirrors = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    resources = {
        "train_images": Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    }
