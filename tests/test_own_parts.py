"""The README's "Add your own part" examples, copied as a user copies them: a Laplace prior (file, YAML,
config) and an objective that reports an extra term; and the prior base class's public device, dtype
and noise, which such a prior builds its samples on."""

import math
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, compose_run
from vae_lightning import VAE
from vae_lightning.posteriors import DiagonalGaussian
from vae_lightning.priors import Prior, StandardNormal

README = ROOT / "README.md"


def readme_block(first_line: str) -> str:
    """The README code block whose first line is ``first_line``."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"README: {len(found)} code blocks start with {first_line!r}"
    return found[0]


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """The README's files written into a project of the user's, importable as they are."""
    root = tmp_path_factory.mktemp("my_project")
    for first_line in ("# my_parts.py", "# my_objective.py", "# my_conf/model/prior/laplace.yaml",
                       "# my_conf/objective/elbo_in_bits.yaml"):
        path = root / first_line[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(readme_block(first_line))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in ("my_parts", "my_objective"):
        sys.modules.pop(name, None)


def build_user_vae(root: Path, *overrides: str) -> VAE:
    """The VAE train.py builds with the README's searchpath and overrides (a small MLP)."""
    from omegaconf import OmegaConf

    cfg = compose_run(f"hydra.searchpath=[file://{root / 'my_conf'}]", "model.latent_dim=3",
                      "model.encoder.hidden_dims=[8]", *overrides, "paths.data_dir=/nonexistent",
                      "paths.output_dir=/nonexistent")
    return VAE.from_config(OmegaConf.to_container(cfg, resolve=True), (1, 4, 4))


def devices() -> list[str]:
    # meta: a device other than the CPU that every machine has (shapes, dtypes and devices, no values)
    return ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def test_the_readme_laplace_prior_samples_on_the_models_dtype_and_device(user_project):
    vae = build_user_vae(user_project, "model/prior=laplace", "model.prior.scale=0.5")
    prior = vae.prior
    assert type(prior).__name__ == "LaplacePrior" and prior.scale == 0.5
    assert prior.sample(7).dtype == torch.float32 and prior.sample(7).shape == (7, 3)
    vae.double()
    assert prior.dtype == torch.float64
    draws = prior.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float64 and draws.device.type == "cpu"
    # They are Laplace(0, 0.5) draws: E|z| = b, Var z = 2 b^2, and log_prob is the Laplace density.
    assert abs(draws.abs().mean().item() - 0.5) < 0.005 and abs(draws.var().item() - 0.5) < 0.01
    reference = torch.distributions.Laplace(torch.zeros(3, dtype=torch.float64), 0.5)
    torch.testing.assert_close(prior.log_prob(draws[:100]), reference.log_prob(draws[:100]).sum(-1))
    # The same generator state gives the same draws; the pictures' quantiles come from them.
    one, two = (prior.sample(5, generator=torch.Generator().manual_seed(0)) for _ in range(2))
    torch.testing.assert_close(one, two)
    assert prior.quantiles(torch.tensor([0.5])).abs().max() < 0.02
    for device in devices():
        vae.to(device)
        for generator in (None, torch.Generator().manual_seed(0)):
            z = prior.sample(4, generator=generator)
            assert (z.device.type, z.dtype, z.shape) == (device, torch.float64, (4, 3))


def test_the_readme_laplace_kl_is_the_kl(user_project, float64):
    vae = build_user_vae(user_project, "model/prior=laplace", "model.prior.scale=0.7")
    vae.double()
    assert vae.kl_estimator == "analytic"  # the README's register_kl is found
    q = DiagonalGaussian(torch.tensor([[0.0, 1.5, -2.0]]), torch.tensor([[0.0, -1.0, 0.5]]))
    analytic = q.kl(vae.prior)  # [1]
    z = q.rsample(200_000, generator=torch.Generator().manual_seed(1))  # [K, 1, D]
    monte_carlo = (q.log_prob(z) - vae.prior.log_prob(z)).mean(0)
    torch.testing.assert_close(analytic, monte_carlo, atol=0.015, rtol=0)


def test_the_readme_objective_reports_its_extra_term(user_project, float64):
    vae = build_user_vae(user_project, "objective=elbo_in_bits", "objective.beta=2")
    assert type(vae.objective).__name__ == "ELBOInBits"
    terms = vae(torch.rand(6, 1, 4, 4))
    assert set(terms.extras) == {"kl_bits"} and terms.extras["kl_bits"].shape == (6,)
    torch.testing.assert_close(terms.extras["kl_bits"], terms.kl / math.log(2))
    torch.testing.assert_close(terms.loss, terms.recon + 2 * terms.kl)
    torch.testing.assert_close(terms.elbo, -(terms.recon + terms.kl))


class UniformCube(Prior):
    """A prior of a user's own without parameters: U[-1, 1)^D through the public noise."""

    def log_prob(self, z):
        return torch.full(z.shape[:-1], -self.latent_dim * math.log(2.0), device=self.device, dtype=self.dtype)

    def sample(self, num, generator=None):
        return 2 * self.rand(num, self.latent_dim, generator=generator) - 1


def test_priors_follow_the_model_device_and_dtype_publicly():
    for prior in (UniformCube(4), StandardNormal(4)):
        assert (prior.device.type, prior.dtype) == ("cpu", torch.float32)
        prior.double()
        assert prior.dtype == torch.float64 and prior.sample(3).dtype == torch.float64
        # randn / rand take a shape as torch.randn does, and a generator gives the same draws again
        assert prior.randn(2, 5).shape == prior.randn((2, 5)).shape == prior.rand([2, 5]).shape == (2, 5)
        one, two = (prior.randn(3, generator=torch.Generator().manual_seed(3)) for _ in range(2))
        torch.testing.assert_close(one, two)
        for device in devices():
            moved = type(prior)(4).to(device)
            assert moved.device.type == device
            assert moved.sample(2).device.type == device
            assert moved.sample(2, generator=torch.Generator()).device.type == device
    u = UniformCube(2).rand(10_000, generator=torch.Generator().manual_seed(0))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02
