"""FID: torchmetrics' Fréchet distance checked against the closed form on features made here, eval.py's
wiring (the model's samples against the test images, through an injected feature extractor), and one
clear error line, before any evaluation, where the Inception network cannot be had."""

import json
import sys
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from torch import nn

import vae_lightning.fid as fid
from conftest import compose_run
from vae_lightning import load_model
from vae_lightning.errors import VAEUserError
from vae_lightning.run import evaluate, instantiate, train


def closed_form(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with scipy's matrix square root."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * root))


def gaussian_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(0), np.cov(features, rowvar=False)  # unbiased, as torchmetrics


def with_moments(n: int, mu: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n draws of N(mu, sigma) whitened so that their sample mean and (unbiased) covariance are exactly mu
    and sigma: [n, d] float64."""
    eps = torch.randn(n, len(mu), dtype=torch.float64, generator=generator)
    eps = eps - eps.mean(0)
    eps = eps @ torch.linalg.inv(torch.linalg.cholesky(eps.T @ eps / (n - 1))).T
    return mu + eps @ torch.linalg.cholesky(sigma).T


class Identity(nn.Module):
    """A fixed feature extractor: the 'images' are the features themselves."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def random_spd(d: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, dtype=torch.float64, generator=generator)
    return a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)


def test_the_frechet_distance_is_the_closed_form_between_the_two_gaussians():
    g = torch.Generator().manual_seed(0)
    d = 5
    mu1, mu2 = torch.randn(d, dtype=torch.float64, generator=g), torch.randn(d, dtype=torch.float64, generator=g)
    sigma1, sigma2 = random_spd(d, g), random_spd(d, g)  # not commuting: (S1 S2)^(1/2) is not S1^(1/2) S2^(1/2)
    real, fake = with_moments(400, mu1, sigma1, g), with_moments(300, mu2, sigma2, g)
    metric = fid.fid_metric(feature=Identity(d))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = closed_form(mu1.numpy(), sigma1.numpy(), mu2.numpy(), sigma2.numpy())
    assert expected > 1
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-9)
    # Many plain draws of the same Gaussians: near it, within their sampling error.
    plain = fid.fid_metric(feature=Identity(d))
    for mu, sigma, real_set in ((mu1, sigma1, True), (mu2, sigma2, False)):
        draws = mu + torch.randn(100_000, d, dtype=torch.float64, generator=g) @ torch.linalg.cholesky(sigma).T
        plain.update(draws, real=real_set)
    assert float(plain.compute()) == pytest.approx(expected, rel=0.02)
    # The same features on both sides: 0.
    same = fid.fid_metric(feature=Identity(d))
    same.update(real, real=True)
    same.update(real, real=False)
    assert abs(float(same.compute())) < 1e-8


class ChannelStats(nn.Module):
    """A made extractor for uint8 colour images [N, 3, H, W]: each channel's mean and spread [N, 6]
    (float64), keeping every batch it sees."""

    num_features = 6

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        self.seen.append(images.clone())
        return features_of(images)


def features_of(images: torch.Tensor) -> torch.Tensor:
    values = images.double().flatten(2) / 255
    return torch.cat([values.mean(-1), values.std(-1)], dim=1)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A short run on made 3 x 8 x 8 colour images: its checkpoint and resolved config."""
    root = tmp_path_factory.mktemp("colour")
    images = np.random.default_rng(0).integers(0, 256, size=(150, 3, 8, 8), dtype=np.uint8)
    np.save(root / "x.npy", images)
    train(compose_run("data=arrays", f"data.path={root / 'x.npy'}", "data.test_size=20", "data.val_size=10",
                      f"paths.data_dir={root}", f"paths.output_dir={root / 'run'}", "logger=none",
                      "model/likelihood=discretized_logistic", "model.latent_dim=2", "model.encoder.hidden_dims=[16]",
                      "trainer.max_epochs=1", "test=false", "callbacks.rich_progress_bar=null",
                      "callbacks.model_summary=null", "callbacks.image_logger.every_n_epochs=0",
                      "+trainer.enable_progress_bar=false"))
    return root / "run"


def _evaluate(run, out, *overrides):
    cfg = compose_run("trainer.accelerator=cpu", f"hydra.runtime.output_dir={out}",
                      f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "num_samples=1", "nll_samples=0", *overrides,
                      config_name="eval", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return evaluate(cfg)


def test_eval_fid_compares_the_models_samples_with_every_test_image(colour_run, tmp_path, monkeypatch, capsys):
    made = ChannelStats()
    default = fid.fid_metric
    monkeypatch.setattr(fid, "fid_metric", lambda feature=None: default(feature=made))  # instead of Inception
    metrics = _evaluate(colour_run, tmp_path, "fid=true", "fid_samples=30", "fid_batch_size=16", "seed=5")

    # What went in: every test image as stored, then 30 samples of the model (decoder means of z ~ p(z) from
    # the seed, drawn in batches of 16), as 8-bit images.
    dm = instantiate(OmegaConf.load(colour_run / "resolved_config.yaml").data)
    dm.setup()
    real = dm.test_set.images
    model = load_model(colour_run / "checkpoints" / "last.ckpt").eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        means = torch.cat([model.sample(n, generator=generator) for n in (16, 14)])
    fake = (means.clamp(0, 1) * 255).round().to(torch.uint8)
    assert [len(batch) for batch in made.seen] == [16, 4, 16, 14]
    assert torch.equal(torch.cat(made.seen[:2]), real) and len(real) == 20
    assert torch.equal(torch.cat(made.seen[2:]), fake)

    # The value: the Fréchet distance between the Gaussians of the two sets' features.
    expected = closed_form(*gaussian_moments(features_of(real).numpy()), *gaussian_moments(features_of(fake).numpy()))
    assert metrics["test/fid"] == pytest.approx(expected, rel=1e-6)
    assert json.loads((tmp_path / "eval_metrics.json").read_text())["test/fid"] == metrics["test/fid"]
    assert "test/fid" in capsys.readouterr().out


def test_without_torch_fidelity_eval_stops_with_one_line_before_evaluating(colour_run, tmp_path, monkeypatch):
    import lightning as L
    import torchmetrics.image.fid

    def evaluated(*args, **kwargs):
        raise AssertionError("the test ran before the FID's network was checked")

    monkeypatch.setattr(L.Trainer, "test", evaluated)
    monkeypatch.setattr(torchmetrics.image.fid, "_TORCH_FIDELITY_AVAILABLE", False)  # as without the package
    with pytest.raises(VAEUserError, match=r"^fid=true needs torch-fidelity, whose Inception network FID is defined "
                                           r"with: pip install torch-fidelity torchvision") as error:
        _evaluate(colour_run, tmp_path, "fid=true")
    assert "\n" not in str(error.value)


def test_inception_weights_that_cannot_be_had_or_imported_are_one_line(monkeypatch):
    import torchmetrics.image.fid

    class Offline:
        def __init__(self, feature=2048, **kwargs):
            raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torchmetrics.image.fid, "FrechetInceptionDistance", Offline)
    with pytest.raises(VAEUserError, match=r"Inception weights, downloaded on first use into .*checkpoints.* could not "
                                           r"be loaded or downloaded \(URLError: .*name resolution.*\)") as error:
        fid.fid_metric()
    assert "\n" not in str(error.value)
    # torch-fidelity there, but the torchvision it imports does not load beside this torch.
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(VAEUserError, match=r"needs torch-fidelity and a torchvision that loads") as error:
        fid.fid_metric()
    assert "\n" not in str(error.value)


def test_grey_data_and_too_few_samples_are_refused(fake_mnist):
    from vae_lightning.data import MNISTDataModule

    with pytest.raises(VAEUserError, match=r"fid=true measures colour \(3-channel\) images .* has 1 channel"):
        fid.check_fid_data(MNISTDataModule(data_dir=fake_mnist))
    with pytest.raises(VAEUserError, match=r"fid_samples=1 must be an integer >= 2"):
        fid.check_fid_settings(1, 100)
