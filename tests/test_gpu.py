"""The GPU paths: data held on the device, the fused optimiser, bf16, compile, DDP on NCCL.

Marked ``gpu``: left out of the default run (``pytest -m gpu`` runs them, on a machine with CUDA;
``benchmarks/gpu_check.sh`` does). Without CUDA they skip, saying so.
"""

import json
import math

import pytest
import torch

from conftest import compose_run
from vae_lightning.run import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _train(tmp_path, fake_mnist, *overrides: str) -> dict:
    cfg = compose_run("trainer=gpu", "logger=csv", f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
                      "data.val_size=100", "data.batch_size=50", "model.latent_dim=4", "trainer.max_epochs=2",
                      "eval.nll_samples=20", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
                      "+trainer.enable_progress_bar=false", "+callbacks.probe._target_=helpers.RecordDevices",
                      f"+callbacks.probe.path={tmp_path / 'devices.json'}", *overrides)
    metrics = train(cfg)
    metrics["devices"] = json.loads((tmp_path / "devices.json").read_text())
    return metrics


def test_the_data_lives_on_the_gpu_and_batches_never_cross_the_bus(fake_mnist, tmp_path):
    metrics = _train(tmp_path, fake_mnist)
    seen = metrics["devices"]
    assert seen["train_images"].startswith("cuda") and seen["batch"].startswith("cuda")
    assert seen["optimizer_fused"] is True  # Adam's fused kernel on CUDA
    assert math.isfinite(metrics["test/elbo"]) and math.isfinite(metrics["test/nll"])


def test_on_device_false_keeps_the_data_in_host_memory(fake_mnist, tmp_path):
    seen = _train(tmp_path, fake_mnist, "data.on_device=false")["devices"]
    assert seen["train_images"] == "cpu" and seen["batch"].startswith("cuda")


def test_streamed_data_is_pinned_and_reaches_the_gpu(fake_mnist, tmp_path):
    seen = _train(tmp_path, fake_mnist, "data.in_memory=false", "data.num_workers=2", "data.pin_memory=true")["devices"]
    assert seen["streaming"] is True and seen["batch"].startswith("cuda")


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_trains_and_evaluates(fake_mnist, tmp_path, precision):
    metrics = _train(tmp_path, fake_mnist, f"trainer.precision={precision}", "objective=iwae",
                     "objective.num_samples=5")
    for key in ("test/elbo", "test/iwae", "test/nll", "val/elbo_best"):
        assert math.isfinite(metrics[key]), key
    assert metrics["test/iwae"] >= metrics["test/elbo"] - 1.0  # the bounds keep their order (bf16 noise aside)


def test_compile_trains_on_the_gpu(fake_mnist, tmp_path):
    metrics = _train(tmp_path, fake_mnist, "compile=true")
    assert math.isfinite(metrics["test/elbo"])


def test_8bit_colour_data_on_the_gpu(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, size=(300, 3, 16, 16), dtype=np.uint8))
    cfg = compose_run("trainer=gpu", "logger=csv", "data=arrays", f"data.path={tmp_path / 'x.npy'}",
                      f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "model=resnet",
                      "model.encoder.channels=[16,32]", "model/likelihood=discretized_mixture", "data.hflip=true",
                      "trainer.max_epochs=1", "eval.nll_samples=10", "callbacks.rich_progress_bar=null",
                      "+trainer.enable_progress_bar=false")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/bpd"])


def test_ddp_with_one_process_on_nccl(fake_mnist, tmp_path):
    """The model and the data under Lightning's DDP on NCCL (one process: all this machine has)."""
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from conftest import make_vae
    from vae_lightning.data import MNISTDataModule

    model = make_vae("model.latent_dim=4", "eval.nll_samples=20")
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50, download=False)
    trainer = L.Trainer(accelerator="gpu", devices=1, strategy=DDPStrategy(process_group_backend="nccl"),
                        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    try:
        trainer.fit(model, dm)
        assert torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"
        (results,) = trainer.test(model, dm, verbose=False)
        assert math.isfinite(results["test/nll"])
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
