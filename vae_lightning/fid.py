"""Fréchet Inception distance (FID) of a model's samples against the test images.

The metric is torchmetrics' ``FrechetInceptionDistance``: Inception-v3 pool features (2048) of
both image sets, a Gaussian fitted to each, and the Fréchet distance between the two,

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).

Its Inception network and weights are torch-fidelity's (the TensorFlow FID weights, converted),
downloaded by torch-fidelity on first use into torch.hub's cache. Images go in as uint8
[N, 3, H, W] at the data's own size; the network resizes them to 299 x 299 itself.

Samples are the decoder means of z ~ p(z) (what the sample pictures show), clamped to [0, 1] and
rounded to 8 bits like the data. Only colour (3-channel) data is measured: Inception features of
grey digits repeated to three channels say little, and no published figure uses them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import require_int
from .errors import VAEUserError

#: What to install for the default feature extractor.
INSTALL = "pip install torch-fidelity torchvision (or pip install 'vae-lightning[fid]')"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def fid_metric(feature: nn.Module | None = None):
    """torchmetrics' ``FrechetInceptionDistance`` for uint8 images [N, 3, H, W], computed on the process
    that fills it (no sync across processes). ``feature``: the feature extractor, uint8 images ->
    [N, F] (default: torch-fidelity's Inception-v3, weights downloaded on first use).

    Raises one :class:`VAEUserError` line when the default extractor cannot be had: torch-fidelity
    (or the torchvision it imports) missing, or its weights neither cached nor downloadable.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except Exception as e:  # noqa: BLE001 - torch-fidelity imports torchvision, which may not load beside this torch
        raise VAEUserError(f"fid=true needs torch-fidelity and a torchvision that loads beside this torch "
                           f"({torch.__version__}): {INSTALL}. Importing them failed: {_one_line(e)}") from None
    if feature is not None:
        return FrechetInceptionDistance(feature=feature, sync_on_compute=False)
    try:
        return FrechetInceptionDistance(feature=2048, sync_on_compute=False)
    except ModuleNotFoundError:  # torchmetrics' word for torch-fidelity not installed
        raise VAEUserError(f"fid=true needs torch-fidelity, whose Inception network FID is defined with: "
                           f"{INSTALL}.") from None
    except Exception as e:  # noqa: BLE001 - a download or cache error, named in the message
        cache = f"{torch.hub.get_dir()}/checkpoints"
        raise VAEUserError(f"fid=true needs torch-fidelity's Inception weights, downloaded on first use into "
                           f"{cache} (TORCH_HOME moves it): they could not be loaded or downloaded "
                           f"({_one_line(e)}). Run once with network access, or copy the weights file "
                           f"there.") from None


def check_fid_data(datamodule: Any) -> None:
    """Refuse data that is not colour images (before anything is read or evaluated)."""
    channels = datamodule.input_shape[0]
    if channels != 3:
        name = getattr(datamodule, "name", "") or "this data"
        raise VAEUserError(f"fid=true measures colour (3-channel) images such as CIFAR-10 and CelebA; {name} has "
                           f"{channels} channel{'s' if channels != 1 else ''}: leave fid=false.")


def check_fid_settings(num_samples: Any, batch_size: Any) -> tuple[int, int]:
    """``fid_samples`` (at least 2: a covariance; 10000 is usual) and ``fid_batch_size`` as integers."""
    return require_int("fid_samples", num_samples, 2), require_int("fid_batch_size", batch_size, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Intensities [N, C, H, W] (decoder means; a Gaussian's may leave [0, 1]) -> uint8, as the data is stored."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


@torch.no_grad()
def frechet_distance(model: nn.Module, datamodule: Any, metric, num_samples: int, batch_size: int = 100,
                     seed: int = 0, device: torch.device | str = "cpu") -> float:
    """FID of ``num_samples`` samples of ``model`` against every image of the test split of ``datamodule``
    (set up), fed to ``metric`` (:func:`fid_metric`) ``batch_size`` images at a time on ``device``.
    The samples' noise comes from ``seed``."""
    check_fid_settings(num_samples, batch_size)
    device = torch.device(device)
    metric = metric.to(device)
    metric.reset()
    test_set = datamodule.test_set  # in memory or streamed: read by index, uint8 [n, 3, H, W]
    for start in range(0, len(test_set), batch_size):
        images, _ = test_set.__getitems__(list(range(start, min(start + batch_size, len(test_set)))))
        metric.update(images.to(device), real=True)
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, num_samples, batch_size):
            samples = model.sample(min(batch_size, num_samples - start), generator=generator)  # [b, 3, H, W]
            metric.update(to_uint8(samples.float()).to(device), real=False)
    finally:
        model.train(was_training)
    return float(metric.compute())
