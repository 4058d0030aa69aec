"""FactorVAE, DIP-VAE and the annealed-capacity beta-VAE against exact values: a discriminator's total
correlation of Gaussians, the DIP penalty by hand, the capacity schedule and its loss."""

import functools
import math

import pytest
import torch

from conftest import make_vae
from vae_lightning.errors import ConfigError, VAEUserError
from vae_lightning.likelihoods import Gaussian
from vae_lightning.objectives import DIPVAE, AnnealedVAE, FactorVAE
from vae_lightning.objectives.factor_vae import permute_dims
from vae_lightning.posteriors import DiagonalGaussian
from vae_lightning.priors import StandardNormal


def _batch(batch=6, latent_dim=3, data_dim=4):
    """x [B, data_dim], q(z|x) a diagonal Gaussian [B, D], a linear decoder, N(0, I), a unit Gaussian."""
    x = torch.randn(batch, data_dim)
    q = DiagonalGaussian(torch.randn(batch, latent_dim), torch.randn(batch, latent_dim) * 0.5)
    return x, q, torch.nn.Linear(latent_dim, data_dim), StandardNormal(latent_dim), Gaussian(sigma=1.0)


# -- FactorVAE ------------------------------------------------------------------------------

def test_permute_dims_shuffles_each_dimension_on_its_own():
    torch.manual_seed(0)
    codes = torch.randn(4000, 3) @ torch.tensor([[1.0, 0.9, 0.0], [0.0, 0.4, 0.0], [0.0, 0.0, 1.0]])
    shuffled = permute_dims(codes)
    for d in range(3):  # each column a permutation of its own values
        assert torch.equal(shuffled[:, d].sort().values, codes[:, d].sort().values)
    assert torch.corrcoef(codes.T)[0, 1] > 0.9 and abs(torch.corrcoef(shuffled.T)[0, 1]) < 0.05


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_the_discriminator_estimates_the_total_correlation_of_a_gaussian(rho):
    """Trained alone on its own loss, on codes of a bivariate Gaussian with correlation rho, the
    discriminator's E[log D/(1 - D)] approaches TC = KL(q(z) || q(z1) q(z2)) = -1/2 log(1 - rho^2)
    (0, 0.144, 0.511 nats) within 0.05 nats (seeds 0-2 gave errors below 0.025); a small net, 600 steps of
    batches of 512."""
    torch.manual_seed(0)
    objective = FactorVAE(latent_dim=2, hidden_dims=[64, 64], optimizer=functools.partial(torch.optim.Adam, lr=2e-3))
    optimizer = objective.optimizer(objective.parameters())
    scale = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))

    def codes(n):
        return torch.randn(n, 2) @ scale.T

    for _ in range(600):
        loss, logs = objective.discriminator_loss(codes(512))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        estimate = objective.tc_estimate(codes(50_000)).mean().item()
    assert estimate == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.05)
    assert set(logs) == {"d_loss", "d_acc"} and 0 <= logs["d_acc"] <= 1


def test_factor_vae_loss_is_the_elbo_plus_beta_times_the_estimate(float64):
    x, q, decoder, prior, likelihood = _batch()
    objective = FactorVAE(latent_dim=3, beta=6.0, hidden_dims=[8])
    terms = objective(x, q, decoder, prior, likelihood)
    torch.testing.assert_close(terms.loss, terms.recon + terms.kl + 6.0 * terms.extras["tc"])
    assert terms.beta == 6.0 and terms.extras["tc"].shape == (6,)
    objective.eval()  # evaluation batches report the discriminator's loss and accuracy per example too
    assert set(objective(x, q, decoder, prior, likelihood).extras) == {"tc", "d_loss", "d_acc"}


def test_factor_vae_sizes_its_discriminator_from_the_posterior():
    model = make_vae("model=two_layer", "objective=factor_vae", "objective.hidden_dims=[8]")
    assert model.objective.discriminator.net[0].in_features == model.latent_dim == 150  # z = [z1, z2]


# -- DIP-VAE --------------------------------------------------------------------------------

def _penalty_by_hand(mu, var, lambda_od, lambda_d, dip_type):
    batch, dims = mu.shape
    mean = [sum(mu[b, i] for b in range(batch)) / batch for i in range(dims)]
    cov = [[sum((mu[b, i] - mean[i]) * (mu[b, j] - mean[j]) for b in range(batch)) / batch for j in range(dims)]
           for i in range(dims)]
    if dip_type == "ii":
        for i in range(dims):
            cov[i][i] += sum(var[b, i] for b in range(batch)) / batch
    off = sum(cov[i][j] ** 2 for i in range(dims) for j in range(dims) if i != j)
    return lambda_od * off + lambda_d * sum((cov[i][i] - 1) ** 2 for i in range(dims))


@pytest.mark.parametrize("dip_type, lambda_d, expected_lambda_d", [("i", None, 70.0), ("ii", None, 7.0),
                                                                   ("i", 3.0, 3.0)])
def test_dip_penalty_against_a_hand_computation(dip_type, lambda_d, expected_lambda_d, float64):
    x, q, decoder, prior, likelihood = _batch(batch=5, latent_dim=3)
    objective = DIPVAE(beta=2.0, dip_type=dip_type, lambda_od=7.0, lambda_d=lambda_d)
    assert objective.lambda_d == expected_lambda_d  # disentanglement_lib's lambda_d_factor: 10 (i), 1 (ii)
    terms = objective(x, q, decoder, prior, likelihood)
    expected = _penalty_by_hand(q.loc, q.logvar.exp(), 7.0, expected_lambda_d, dip_type)
    torch.testing.assert_close(terms.extras["dip"], torch.full((5,), float(expected)))
    # Spread over the examples: the batch mean of the loss is the paper's mean(recon + beta kl) + penalty.
    torch.testing.assert_close(terms.loss.mean(), (terms.recon + 2.0 * terms.kl).mean() + expected)


def test_dip_penalty_vanishes_at_the_identity_covariance(float64):
    # Posterior means whose batch covariance is exactly I (an orthogonal design, centred): DIP-VAE-I's penalty is 0.
    mu = torch.linalg.qr(torch.randn(8, 3))[0] * math.sqrt(8)
    mu = mu - mu.mean(0)
    mu = mu @ torch.linalg.inv(torch.linalg.cholesky(mu.T @ mu / 8)).T
    q = DiagonalGaussian(mu, torch.zeros_like(mu))
    assert DIPVAE(dip_type="i").covariance(q).sub(torch.eye(3)).abs().max() < 1e-12


# -- annealed capacity ------------------------------------------------------------------------

def test_capacity_rises_linearly_then_holds():
    objective = AnnealedVAE(c_min=1.0, c_max=25.0, capacity_steps=1000)
    assert [objective.capacity_at(s) for s in (0, 250, 500, 1000, 5000)] == [1.0, 7.0, 13.0, 25.0, 25.0]
    assert AnnealedVAE(c_max=5.0, capacity_steps=0).capacity_at(0) == 5.0
    # disentanglement_lib's defaults: gamma 1000, 25 nats after 100,000 steps, from 0.
    default = AnnealedVAE()
    assert (default.beta, default.c_min, default.c_max, default.capacity_steps) == (1000.0, 0.0, 25.0, 100_000)


def test_capacity_loss_against_a_hand_value(float64):
    x, _, decoder, prior, likelihood = _batch(batch=2, latent_dim=2)
    q = DiagonalGaussian(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2, 2))  # KL = |mu|^2 / 2: 2.5, 0.5
    objective = AnnealedVAE(beta=100.0, c_min=0.0, c_max=4.0, capacity_steps=10)
    terms = objective(x, q, decoder, prior, likelihood, step=5)  # C = 2 nats; mean KL = 1.5
    torch.testing.assert_close(terms.kl, torch.tensor([2.5, 0.5]))
    torch.testing.assert_close(terms.loss, terms.recon + 100.0 * 0.5)
    torch.testing.assert_close(terms.extras["capacity"], torch.full((2,), 2.0))
    later = objective(x, q, decoder, prior, likelihood, step=50)  # C = 4: |1.5 - 4| = 2.5
    torch.testing.assert_close(later.loss - later.recon, torch.full((2,), 250.0))


# -- configs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["elbo", "beta_tcvae", "factor_vae", "dip_vae", "annealed_vae"])
@pytest.mark.parametrize("beta", [1, 4, 16])
def test_every_disentangling_objective_takes_a_beta_sweep(objective, beta):
    model = make_vae(f"objective={objective}", f"objective.beta={beta}", "model.latent_dim=4",
                     "model.encoder.hidden_dims=[16]")
    assert model.objective.beta == beta and model.objective.beta_at(0) == beta


@pytest.mark.parametrize("overrides, message", [
    (("objective=factor_vae", "objective.hidden_dims=[]"), "objective.hidden_dims=[] must be a non-empty list"),
    (("objective=factor_vae", "objective.negative_slope=-1"), "objective.negative_slope=-1 must be"),
    (("objective=factor_vae", "objective.beta=-1"), "objective.beta=-1 must be"),
    (("objective=dip_vae", "objective.dip_type=iii"), "objective.dip_type='iii' must be one of"),
    (("objective=dip_vae", "objective.lambda_od=-1"), "objective.lambda_od=-1 must be"),
    (("objective=dip_vae", "objective.lambda_d=-2"), "objective.lambda_d=-2 must be"),
    (("objective=dip_vae", "objective.dip_type=ii", "model/posterior=full_covariance"),
     "objective.dip_type='ii' needs a diagonal Gaussian"),
    (("objective=annealed_vae", "objective.c_max=-1"), "objective.c_max=-1 must be"),
    (("objective=annealed_vae", "objective.c_min=5", "objective.c_max=1"), "objective.c_max=1 must be >= c_min=5"),
    (("objective=annealed_vae", "objective.capacity_steps=-3"), "objective.capacity_steps=-3 must be"),
    (("objective=factor_vae", "objective.optimizer.lr=-1"), "objective.optimizer (torch.optim.adam.Adam) cannot be"),
])
def test_bad_settings_name_their_key(overrides, message):
    with pytest.raises(VAEUserError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        make_vae(*overrides, "model.latent_dim=4", "model.encoder.hidden_dims=[16]")


def test_factor_vae_needs_to_know_its_code_size():
    with pytest.raises(ConfigError, match="latent_dim=None is needed"):
        FactorVAE()
