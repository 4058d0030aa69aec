"""The seams: posteriors and priors keep their contracts, a KL without a closed form is estimated without
bias, the full-covariance posterior is exact where the diagonal one cannot be, and new parts get
pictures, the test NLL, checkpoints and sweeps with no edit elsewhere."""

import inspect
import json
import math
import os
import subprocess

import pytest
import torch
from torch.distributions import (Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal,
                                 kl_divergence)

from conftest import PYTHON, ROOT, compose_run, make_vae
from custom_parts import LearnedDiagonalPrior
from linear_gaussian import LinearGaussian
from vae_lightning import load_model
from vae_lightning.likelihoods import Gaussian
from vae_lightning.objectives import ELBO, IWAE, log_importance_weights
from vae_lightning.posteriors import DiagonalGaussian, DiagonalGaussianPosterior
from vae_lightning.posteriors.full_covariance import FullCovarianceGaussian, FullCovariancePosterior
from vae_lightning.priors import StandardNormal
from vae_lightning.priors.mixture_of_gaussians import MixtureOfGaussians

POSTERIORS = [DiagonalGaussianPosterior, FullCovariancePosterior]


def _mixture(latent_dim=3, num_components=4, seed=0):
    torch.manual_seed(seed)
    prior = MixtureOfGaussians(latent_dim, num_components, init_spread=1.5, init_scale=0.7)
    with torch.no_grad():  # unequal weights and scales, as after training
        prior.logits.copy_(torch.randn(num_components))
        prior.log_scales.add_(0.3 * torch.randn_like(prior.log_scales))
    return prior


def _torch_mixture(prior: MixtureOfGaussians):
    return MixtureSameFamily(Categorical(logits=prior.logits), Independent(Normal(prior.means, prior.log_scales.exp()), 1))


# -- contracts -----------------------------------------------------------------------------

@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("family", POSTERIORS)
def test_posteriors_keep_the_contract_and_match_torch_distributions(family):
    posterior = family(latent_dim=3)
    q = posterior(torch.randn(5, posterior.num_params))
    z = q.rsample(7)
    assert z.shape == (7, 5, 3) and q.mean.shape == (5, 3) and q.log_prob(z).shape == (7, 5)
    scale_tril = q.scale_tril if isinstance(q, FullCovarianceGaussian) else torch.diag_embed((0.5 * q.logvar).exp())
    reference = MultivariateNormal(q.mean, scale_tril=scale_tril)
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(q.kl(StandardNormal(3)), kl_divergence(reference, MultivariateNormal(
        torch.zeros(3), torch.eye(3))))
    # rsample draws from q (the covariance of many draws) and is differentiable
    many = q.rsample(200_000)
    torch.testing.assert_close(torch.cov(many[:, 0].T), reference.covariance_matrix[0], atol=0.05, rtol=0.02)
    assert torch.equal(q.rsample(3, generator=torch.Generator().manual_seed(1)),
                       q.rsample(3, generator=torch.Generator().manual_seed(1)))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("make", [lambda: StandardNormal(3), lambda: _mixture(), lambda: LearnedDiagonalPrior(3, 0.5)])
def test_priors_keep_the_contract(make):
    prior = make()
    z = torch.randn(6, 5, 3)
    assert prior.log_prob(z).shape == (6, 5)
    reference = {StandardNormal: lambda p: Independent(Normal(torch.zeros(3), torch.ones(3)), 1),
                 MixtureOfGaussians: _torch_mixture,
                 LearnedDiagonalPrior: lambda p: Independent(Normal(p.loc, p.log_scale.exp()), 1)}[type(prior)](prior)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))
    draws = prior.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (200_000, 3)
    torch.testing.assert_close(draws.mean(0), reference.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(draws.var(0), reference.variance, atol=0.03, rtol=0.02)
    assert torch.equal(prior.sample(4, generator=torch.Generator().manual_seed(2)),
                       prior.sample(4, generator=torch.Generator().manual_seed(2)))


@pytest.mark.usefixtures("float64")
def test_a_kl_registered_outside_the_package_is_found_and_exact():
    prior = LearnedDiagonalPrior(3, init_scale=0.5)
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([0.3, -1.0, 2.0]))
    q = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    reference = kl_divergence(Independent(Normal(q.loc, (0.5 * q.logvar).exp()), 1),
                              Independent(Normal(prior.loc, prior.log_scale.exp()), 1))
    torch.testing.assert_close(q.kl(prior), reference)
    assert q.kl_per_dim(prior).shape == (4, 3)
    assert q.kl(_mixture()) is None and q.kl_per_dim(_mixture()) is None  # no closed form: None


# -- the mixture prior: a Monte-Carlo KL without bias --------------------------------------

@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("num_samples", [1, 5])
def test_the_monte_carlo_kl_of_the_mixture_prior_is_unbiased(num_samples):
    prior = _mixture()
    q = DiagonalGaussian(torch.tensor([[0.5, -0.3, 1.0], [-1.0, 0.0, 0.2]]), torch.tensor([[-1.0, 0.0, -0.5]] * 2))
    # Brute force: the average of log q - log p over a million draws of q.
    z = q.rsample(1_000_000)
    ratio = q.log_prob(z) - prior.log_prob(z)
    brute, brute_se = ratio.mean(0), ratio.std(0) / math.sqrt(z.shape[0])
    # The objective's estimate from its own K samples, repeated: its mean must agree.
    reps = 200_000
    objective = ELBO(num_samples=num_samples)
    assert objective.check(q, prior) == "monte_carlo"
    big_q = DiagonalGaussian(q.loc.repeat(reps, 1), q.logvar.repeat(reps, 1))
    x = torch.zeros(2 * reps, 1)
    terms = objective(x, big_q, lambda z: torch.zeros(*z.shape[:-1], 1), prior, Gaussian(sigma=1.0))
    estimates = terms.kl.view(reps, 2)
    assert terms.kl_per_dim is None
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(reps)
    assert ((mean - brute).abs() < 4 * torch.sqrt(se**2 + brute_se**2)).all(), (mean, brute, se)
    assert (brute > 0.1).all()  # a KL that is far from 0, so agreeing means something


def test_a_one_component_frozen_standard_normal_mixture_runs_exactly_as_the_standard_normal(fake_mnist, tmp_path):
    """The same seed, the same data, the Monte-Carlo KL in both: the same numbers, to float round-off."""
    from vae_lightning.run import train

    common = ["logger=none", "callbacks=none", f"paths.data_dir={fake_mnist}", "trainer.max_epochs=2",
              "data.val_size=100", "data.batch_size=50", "+trainer.enable_progress_bar=false",
              "model.latent_dim=3", "model.encoder.hidden_dims=[32]", "objective.num_samples=2",
              "objective.kl_estimator=monte_carlo", "eval.nll_samples=10"]
    runs = {}
    for name, prior in [("normal", []), ("mixture", ["model/prior=mixture_of_gaussians", "model.prior.num_components=1",
                                                      "model.prior.learnable=false", "model.prior.init_spread=0"])]:
        runs[name] = train(compose_run(*common, *prior, f"paths.output_dir={tmp_path / name}"))
    normal, mixture = runs["normal"], runs["mixture"]
    assert normal["kl_estimator"] == mixture["kl_estimator"] == "monte_carlo" and normal["steps"] == 20
    for key in ("test/elbo", "test/recon", "test/kl", "test/iwae", "test/nll"):
        assert mixture[key] == pytest.approx(normal[key], rel=1e-6, abs=1e-6), key
    # ... and the analytic KL is a different estimator: the numbers of that run differ.
    analytic = train(compose_run(*common[:-2], "eval.nll_samples=10", f"paths.output_dir={tmp_path / 'a'}"))
    assert analytic["kl_estimator"] == "analytic" and analytic["test/kl"] != pytest.approx(normal["test/kl"], rel=1e-6)


# -- the full-covariance posterior: exact where a diagonal one cannot be -------------------

@pytest.mark.usefixtures("float64")
def test_the_full_covariance_posterior_is_exact_on_a_linear_gaussian_model_with_non_orthogonal_w():
    model = LinearGaussian.make(orthogonal=False)
    x = model.sample_x(6)
    log_px = model.log_px(x)
    post_mean, post_cov = model.posterior(x)
    scale_tril = torch.linalg.cholesky(post_cov)
    std = torch.diagonal(post_cov).sqrt()
    assert (post_cov / std[:, None] / std - torch.eye(3)).abs().max() > 0.2  # correlated: not diagonal
    # The family's parameters for the exact posterior: (mu, log diag L, L below the diagonal).
    family = FullCovariancePosterior(latent_dim=3)
    rows, cols = torch.tril_indices(3, 3, offset=-1)
    params = torch.cat([post_mean, torch.diagonal(scale_tril).log().expand(6, 3),
                        scale_tril[rows, cols].expand(6, 3)], dim=-1)
    q = family(params)
    prior, likelihood = StandardNormal(3), Gaussian(sigma=model.s)

    # Closed form: E_q[log p(x|z)] - KL(q || p(z)) = log p(x), to round-off.
    elbo = model.expected_log_px_given_z_full(x, post_mean, post_cov) - q.kl(prior)
    torch.testing.assert_close(elbo, log_px, atol=1e-6, rtol=0)
    # Every importance weight is p(x), whatever z: log w = log p(x) for all K samples.
    z = q.rsample(50)
    log_w = log_importance_weights(x, z, q, model.decode, prior, likelihood)
    torch.testing.assert_close(log_w, log_px.expand_as(log_w), atol=1e-10, rtol=0)
    # The objectives on those samples: the Monte-Carlo ELBO and L_K are log p(x) exactly, for any K.
    for k in (1, 7):
        terms = ELBO(num_samples=k, kl_estimator="monte_carlo")(x, q, model.decode, prior, likelihood, with_iwae=True)
        torch.testing.assert_close(terms.elbo, log_px, atol=1e-10, rtol=0)
        torch.testing.assert_close(terms.iwae, log_px, atol=1e-10, rtol=0)
        torch.testing.assert_close(IWAE(num_samples=k)(x, q, model.decode, prior, likelihood).iwae, log_px,
                                   atol=1e-10, rtol=0)

    # The best diagonal q (the posterior mean, variances 1 / diag(precision)) stays below log p(x),
    # by exactly its KL to the full-covariance posterior.
    logvar = -torch.log(torch.diagonal(torch.linalg.inv(post_cov))).expand_as(post_mean)
    diagonal = DiagonalGaussian(post_mean, logvar)
    diag_elbo = model.expected_log_px_given_z(x, post_mean, logvar) - diagonal.kl(prior)
    gap = kl_divergence(MultivariateNormal(post_mean, torch.diag_embed(logvar.exp())),
                        MultivariateNormal(post_mean, post_cov))
    assert (gap > 1e-3).all()
    torch.testing.assert_close(log_px - diag_elbo, gap, atol=1e-10, rtol=0)


# -- new parts, downstream: pictures, NLL, checkpoints, sweeps, eval.py -------------------

def test_new_parts_get_pictures_nll_checkpoints_and_sweeps_with_no_edit_elsewhere(fake_mnist, train_env, tmp_path):
    """A sweep over posteriors and priors, one of them a user's own (tests/custom_parts.py and its YAML in
    tests/user_conf, found through hydra.searchpath): every job trains, draws its pictures, estimates
    its test NLL and writes checkpoints that rebuild themselves, in train.py, load_model and eval.py."""
    from test_dashboards import KINDS_2D
    from test_train import run_train

    env = dict(train_env, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    sweep = tmp_path / "sweep"
    result = run_train(["-m", f"hydra.searchpath=[file://{ROOT / 'tests' / 'user_conf'}]", "logger=csv",
                        f"data.data_dir={fake_mnist}", "trainer.max_epochs=1", "data.val_size=100",
                        "data.batch_size=100", "model.latent_dim=2", "model.encoder.hidden_dims=[32]",
                        "eval.nll_samples=20", "callbacks.image_logger.every_n_epochs=1",
                        "callbacks.image_logger.scatter_points=100", "callbacks.rich_progress_bar=null",
                        "model/posterior=diagonal_gaussian,full_covariance",
                        "model/prior=mixture_of_gaussians,learned_diagonal", f"hydra.sweep.dir={sweep}"],
                       env, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {("diagonal_gaussian", "mixture_of_gaussians"): "monte_carlo",
                ("diagonal_gaussian", "learned_diagonal"): "analytic",  # registered in custom_parts.py
                ("full_covariance", "mixture_of_gaussians"): "monte_carlo",
                ("full_covariance", "learned_diagonal"): "monte_carlo"}
    seen = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        key = next(k for k in expected if f"model/posterior={k[0]}" in overrides and f"model/prior={k[1]}" in overrides)
        metrics = json.loads((job / "metrics.json").read_text())
        seen[key] = metrics["kl_estimator"]
        assert metrics["test/nll"] > 0 and math.isfinite(metrics["test/elbo"]) and metrics["steps"] == 5
        assert sorted(p.name for p in (job / "images").iterdir()) == sorted(KINDS_2D)
        model = load_model(job / "checkpoints" / "last.ckpt")
        assert model.kl_estimator == metrics["kl_estimator"]
        assert type(model.prior).__name__ == {"mixture_of_gaussians": "MixtureOfGaussians",
                                              "learned_diagonal": "LearnedDiagonalPrior"}[key[1]]
        assert model.log_px(torch.rand(3, 1, 28, 28).round(), num_samples=5).shape == (3,)
    assert seen == expected
    import csv
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert sorted(r["kl_estimator"] for r in rows) == ["analytic", "monte_carlo", "monte_carlo", "monte_carlo"]

    # eval.py rebuilds the user's model from the checkpoint alone (no run directory beside it).
    job = next(j for j in sweep.iterdir() if j.is_dir() and "learned_diagonal" in (j / ".hydra" / "overrides.yaml")
               .read_text() and "diagonal_gaussian" in (j / ".hydra" / "overrides.yaml").read_text())
    lonely = tmp_path / "elsewhere" / "model.ckpt"
    lonely.parent.mkdir()
    lonely.write_bytes((job / "checkpoints" / "last.ckpt").read_bytes())
    result = subprocess.run([PYTHON, str(ROOT / "eval.py"), f"ckpt_path={lonely}", "num_samples=5", "nll_samples=20",
                             f"hydra.run.dir={tmp_path / 'eval'}"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert report["kl_estimator"] == "analytic" and report["test/elbo"] < report["test/iwae"] < -report["test/nll"] < 0


@pytest.mark.usefixtures("float64")
def test_free_bits_on_a_monte_carlo_kl_take_the_whole_latent_space_as_one_group():
    prior = _mixture()
    q = DiagonalGaussian(torch.randn(8, 3) * 0.1, torch.zeros(8, 3) - 0.1)
    decode = lambda z: torch.zeros(*z.shape[:-1], 1)  # noqa: E731
    x = torch.zeros(8, 1)
    for floor in (0.0, 100.0):  # below and above the batch-mean KL
        objective = ELBO(num_samples=3, free_bits=floor or 1e-9, free_bits_group_size=3)
        assert objective.check(q, prior) == "monte_carlo"
        torch.manual_seed(0)
        terms = objective(x, q, decode, prior, Gaussian(sigma=1.0))
        kl_term = terms.kl if terms.kl.mean() > floor else torch.full_like(terms.kl, floor)
        torch.testing.assert_close(terms.loss, terms.recon + kl_term)
    with pytest.raises(Exception, match="needs a KL per latent dimension"):
        ELBO(free_bits=0.5, free_bits_group_size=1).check(q, prior)


class _PriorThatAsks(torch.nn.Module):
    """A prior that names the encoder and the posterior among its arguments."""

    def __init__(self, latent_dim, encoder, posterior, scale=1.0):
        super().__init__()
        self.latent_dim, self.scale = latent_dim, scale
        self.seen = (encoder, posterior)


def test_a_part_gets_the_parts_built_before_it_that_it_names():
    from vae_lightning.build import _asked_for

    available = {"input_shape": [1, 28, 28], "latent_dim": 4, "encoder": "E", "posterior": "Q", "decoder": "D"}
    node = {"_target_": f"{__name__}._PriorThatAsks", "scale": 2.0}
    assert _asked_for(node, available, {"latent_dim": 4}) == {"encoder": "E", "posterior": "Q"}
    node["encoder"] = "set in the config"  # a config value is never overridden
    assert _asked_for(node, available, {}) == {"latent_dim": 4, "posterior": "Q"}
    vae = make_vae("model.latent_dim=4", "model.encoder.hidden_dims=[8]")
    assert "encoder" not in inspect.signature(type(vae.prior).__init__).parameters  # the others get nothing new
