import functools
import http.server
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_lightning import VAE
from vae_lightning.data import write_idx

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data"


def real_mnist_dir() -> Path | None:
    """A directory holding MNIST/raw with the four real files, if this machine has one."""
    for candidate in (os.environ.get("VAE_DATA_DIR"), SHARED_MNIST):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            files = list((Path(candidate) / "MNIST" / "raw").glob("*idx*"))
            if len(files) >= 4:
                return Path(candidate)
    return None


def make_fake_mnist(root: Path, num_train: int = 600, num_test: int = 200, seed: int = 0) -> Path:
    """Write small MNIST-shaped IDX files (gzipped) under root/MNIST/raw: blobs of ink on black."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    def images(n):
        # A bright square at a random place per image, plus noise: something a VAE can learn.
        out = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, (r, c) in enumerate(rng.integers(2, 18, size=(n, 2))):
            out[i, r : r + 8, c : c + 8] = 255
        return out

    write_idx(raw / "train-images-idx3-ubyte.gz", images(num_train))
    write_idx(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, size=num_train, dtype=np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images(num_test))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, size=num_test, dtype=np.uint8))
    return root


def compose_run(*overrides: str, config_name: str = "train", **kwargs):
    """The config train.py (or eval.py, ``config_name="eval"``) composes from conf/: a DictConfig."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), **kwargs)


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_run(*overrides, "paths.data_dir=/nonexistent", "paths.output_dir=/nonexistent")
    return OmegaConf.to_container(cfg, resolve=True)


def compose_config(*overrides: str) -> dict:
    """The run config composed from conf/ as train.py composes it (resolved, plain values)."""
    return _composed(tuple(overrides))


def make_vae(*overrides: str, input_shape=(1, 28, 28)) -> VAE:
    """A VAE built from the real configs, e.g. make_vae("model.latent_dim=4", "model.encoder.hidden_dims=[16]")."""
    return VAE.from_config(compose_config(*overrides), input_shape)


@pytest.fixture
def float64():
    """Exact comparisons need float64 (and a fixed seed); the default dtype is restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory) -> Path:
    return make_fake_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture
def train_env(monkeypatch) -> dict[str, str]:
    """Environment for a train.py subprocess: offline wandb, no user settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(ROOT))
    env.pop("HYDRA_FULL_ERROR", None)  # errors as a user sees them
    env.pop("VAE_DATA_DIR", None)
    return env


PYTHON = sys.executable


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over a folder: the official hosts, without a network."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    httpd.shutdown()
