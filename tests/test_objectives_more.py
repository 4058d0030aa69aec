"""MIWAE, CIWAE, PIWAE, beta-TCVAE and MMD against the objectives they reduce to, exact identities and sums
written out here."""

import math

import lightning as L
import pytest
import torch
from torch import nn

from conftest import make_vae
from linear_gaussian import LinearGaussian
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import ConfigError, VAEUserError
from vae_lightning.likelihoods import Gaussian, LearnedGaussian
from vae_lightning.objectives import CIWAE, ELBO, IWAE, MIWAE, MMD, PIWAE, BetaTCVAE
from vae_lightning.objectives.mmd import mmd
from vae_lightning.objectives.tcvae import decompose_kl
from vae_lightning.posteriors import DiagonalGaussian
from vae_lightning.priors import StandardNormal
from vae_lightning.priors.mixture_of_gaussians import MixtureOfGaussians


pytestmark = pytest.mark.usefixtures("float64")


def _setup(batch=6):
    """A linear Gaussian model, a batch, and a diagonal q(z|x) that is not its posterior."""
    model = LinearGaussian.make()
    x = model.sample_x(batch)
    mean, cov = model.posterior(x)
    q = DiagonalGaussian(mean + 0.3, torch.log(torch.diagonal(cov) * 2.0).expand_as(mean).clone())
    return model, x, q


def _terms(objective, seed=0, batch=6):
    """The objective's terms on the linear Gaussian model, its samples drawn from ``seed``."""
    model, x, q = _setup(batch)
    torch.manual_seed(seed)
    return objective(x, q, model.decode, StandardNormal(3), Gaussian(sigma=model.s))


# -- MIWAE, CIWAE ----------------------------------------------------------------------------

def test_miwae_with_one_group_is_iwae():
    miwae, iwae = _terms(MIWAE(num_samples=5, num_groups=1)), _terms(IWAE(num_samples=5))
    for name in ("loss", "iwae", "recon", "kl", "elbo"):
        torch.testing.assert_close(getattr(miwae, name), getattr(iwae, name), atol=1e-12, rtol=0)
    torch.testing.assert_close(miwae.extras["miwae"], iwae.iwae, atol=1e-12, rtol=0)


def test_miwae_with_one_sample_per_group_is_the_elbo_estimate():
    miwae = _terms(MIWAE(num_samples=1, num_groups=4))
    elbo = _terms(ELBO(num_samples=4, kl_estimator="monte_carlo"))  # mean_k log w_k over the same 4 samples
    torch.testing.assert_close(miwae.loss, elbo.loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(miwae.extras["miwae"], elbo.elbo, atol=1e-12, rtol=0)


def test_miwae_lies_between_the_elbo_estimate_and_iwae_of_all_its_samples():
    # log-mean-exp is at least the mean (Jensen): per example, on the same M * K samples,
    # mean_k log w <= MIWAE(M, K) <= L_MK, strictly for log weights that differ.
    terms = _terms(MIWAE(num_samples=3, num_groups=4, kl_estimator="monte_carlo"))
    assert (terms.elbo < terms.extras["miwae"]).all() and (terms.extras["miwae"] < terms.iwae).all()
    torch.testing.assert_close(terms.loss, -terms.extras["miwae"])


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_ciwae_at_its_ends_is_the_elbo_and_the_iwae_loss_and_between_them_their_mix(beta):
    elbo, iwae = _terms(ELBO(num_samples=5, beta=beta)), _terms(IWAE(num_samples=5, beta=beta))
    torch.testing.assert_close(_terms(CIWAE(num_samples=5, beta=beta, ciwae_beta=1.0)).loss, elbo.loss,
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(_terms(CIWAE(num_samples=5, beta=beta, ciwae_beta=0.0)).loss, iwae.loss,
                               atol=1e-12, rtol=0)
    mixed = _terms(CIWAE(num_samples=5, beta=beta, ciwae_beta=0.3))
    torch.testing.assert_close(mixed.loss, 0.3 * elbo.loss + 0.7 * iwae.loss)
    torch.testing.assert_close(mixed.extras["ciwae"], 0.3 * elbo.elbo + 0.7 * iwae.iwae)


# -- PIWAE: each parameter set gets its own objective's gradient -----------------------------

def _gradients(objective, seed=3):
    """Gradients of the batch-mean loss for an encoder, a decoder, a learned likelihood and a learnable
    prior, all float64, their weights fixed by a seed of their own; the samples of z drawn from ``seed``."""
    torch.manual_seed(0)
    data_dim, latent_dim = 6, 3
    parts = nn.ModuleDict({"encoder": nn.Linear(data_dim, 2 * latent_dim), "decoder": nn.Linear(latent_dim, data_dim),
                           "likelihood": LearnedGaussian((data_dim,), sigma=0.7),
                           "prior": MixtureOfGaussians(latent_dim, num_components=3)})
    x = LinearGaussian.make(data_dim, latent_dim).sample_x(5)
    loc, logvar = parts["encoder"](x).chunk(2, dim=-1)
    torch.manual_seed(seed)
    terms = objective(x, DiagonalGaussian(loc, logvar), parts["decoder"], parts["prior"], parts["likelihood"])
    terms.loss.mean().backward()
    grads = {name: torch.cat([p.grad.flatten() for p in part.parameters()]) for name, part in parts.items()}
    return terms, grads


def test_piwae_trains_the_encoder_on_miwae_and_the_decoder_on_iwae_of_all_samples():
    piwae, g = _gradients(PIWAE(num_samples=4, num_groups=3))
    miwae, g_miwae = _gradients(MIWAE(num_samples=4, num_groups=3))
    iwae, g_iwae = _gradients(IWAE(num_samples=12))
    torch.testing.assert_close(g["encoder"], g_miwae["encoder"], atol=1e-12, rtol=0)
    for part in ("decoder", "likelihood", "prior"):
        torch.testing.assert_close(g[part], g_iwae[part], atol=1e-12, rtol=0)
    # The two objectives do give the parts different gradients (else the test would say nothing).
    for part in ("encoder", "decoder", "likelihood", "prior"):
        assert (g_miwae[part] - g_iwae[part]).abs().max() > 1e-4, part
    # The loss's value is -MIWAE; both bounds are logged, on the same samples as the two objectives'.
    torch.testing.assert_close(piwae.loss, miwae.loss, atol=1e-12, rtol=0)
    torch.testing.assert_close(piwae.iwae, iwae.iwae, atol=1e-12, rtol=0)
    torch.testing.assert_close(piwae.extras["miwae"], miwae.extras["miwae"], atol=1e-12, rtol=0)


# -- beta-TCVAE ------------------------------------------------------------------------------

def _batch_posterior(batch=16, dim=3, seed=4):
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(batch, dim, generator=g), 0.5 * torch.randn(batch, dim, generator=g))


@pytest.mark.parametrize("estimator", ["mws", "unbiased"])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_tc_decomposition_adds_up_to_the_monte_carlo_kl_of_the_same_samples(estimator, num_samples):
    q, prior, lik = _batch_posterior(), StandardNormal(3), Gaussian(sigma=1.0)
    x, decode = torch.randn(16, 5), nn.Linear(3, 5)
    weights = dict(mi_weight=2.0, beta=6.0, dwkl_weight=3.0)
    torch.manual_seed(1)
    tc = BetaTCVAE(num_samples, dataset_size=1000, estimator=estimator, **weights)(x, q, decode, prior, lik)
    torch.manual_seed(1)
    elbo = ELBO(num_samples, kl_estimator="monte_carlo")(x, q, decode, prior, lik)
    mi, tcorr, dwkl = tc.extras["mi"], tc.extras["tc"], tc.extras["dwkl"]
    assert mi.shape == tcorr.shape == dwkl.shape == (16,)
    torch.testing.assert_close(mi + tcorr + dwkl, elbo.kl, atol=1e-10, rtol=0)
    torch.testing.assert_close(tc.loss, tc.recon + 2.0 * mi + 6.0 * tcorr + 3.0 * dwkl)
    torch.testing.assert_close(tc.recon, elbo.recon, atol=1e-10, rtol=0)
    torch.testing.assert_close(tc.kl, q.kl(prior))  # the logged KL is the analytic one, as elsewhere


def test_identical_posteriors_have_no_mutual_information_or_total_correlation():
    # Every example's q(z|x) is the same factorised Gaussian: the aggregate is that Gaussian, so
    # mi = tc = 0 and dwkl is the whole KL. MWS's weights add up to 1/N: its terms are off by multiples of log N.
    batch, dim, n = 32, 4, 1000
    q = DiagonalGaussian(torch.tensor([0.5, -1.0, 0.2, 2.0]).expand(batch, dim),
                         torch.tensor([-1.0, 0.3, 0.0, -2.0]).expand(batch, dim))
    z, log_q = q.rsample_and_log_prob(5)
    log_pz = StandardNormal(dim).log_prob(z)
    mc_kl = (log_q - log_pz).mean(0)
    unbiased = decompose_kl(q, z, log_q, log_pz, n, "unbiased")
    torch.testing.assert_close(unbiased["mi"], torch.zeros(batch), atol=1e-10, rtol=0)
    torch.testing.assert_close(unbiased["tc"], torch.zeros(batch), atol=1e-10, rtol=0)
    torch.testing.assert_close(unbiased["dwkl"], mc_kl, atol=1e-10, rtol=0)
    mws = decompose_kl(q, z, log_q, log_pz, n, "mws")
    torch.testing.assert_close(mws["mi"], torch.full((batch,), math.log(n)), atol=1e-10, rtol=0)
    torch.testing.assert_close(mws["tc"], torch.full((batch,), (dim - 1) * math.log(n)), atol=1e-10, rtol=0)
    torch.testing.assert_close(mws["dwkl"], mc_kl - dim * math.log(n), atol=1e-10, rtol=0)


def _grid_posterior(correlated: bool):
    """25 posteriors with means on a 5 x 5 grid (their average factorises over the 2 dimensions: every
    pair of marginal means appears once) or on the diagonal (it does not)."""
    values = torch.linspace(-2, 2, 5)
    a, b = torch.meshgrid(values, values, indexing="ij")
    loc = torch.stack([a.flatten(), a.flatten() if correlated else b.flatten()], dim=-1)  # [25, 2]
    return DiagonalGaussian(loc, torch.log(torch.tensor([0.4, 0.6]) ** 2).expand(25, 2))


def test_total_correlation_is_zero_when_the_aggregate_factorises_and_positive_when_not():
    # With dataset_size = 1 the MWS weights are 1/B: the estimate of q(z) is the batch's own aggregate.
    # On the grid that aggregate is the product of its marginals at every z, so each sample's TC is 0;
    # on the diagonal it is not, and the mean over many samples (the true TC) is clearly above 0.
    grid = _grid_posterior(correlated=False)
    z, log_q = grid.rsample_and_log_prob(50)  # [K, 25, 2]
    tc = decompose_kl(grid, z, log_q, StandardNormal(2).log_prob(z), dataset_size=1)["tc"]  # [25]
    torch.testing.assert_close(tc, torch.zeros(25), atol=1e-10, rtol=0)
    mws = decompose_kl(grid, z, log_q, StandardNormal(2).log_prob(z), dataset_size=1000)["tc"]
    torch.testing.assert_close(mws, torch.full((25,), math.log(1000)), atol=1e-10, rtol=0)  # (D - 1) log N

    diagonal = _grid_posterior(correlated=True)
    z, log_q = diagonal.rsample_and_log_prob(2000)
    tc = decompose_kl(diagonal, z, log_q, StandardNormal(2).log_prob(z), dataset_size=1)["tc"]
    assert (tc > 0.3).all()  # each example's mean over 2000 samples (~0.5 to 1.1 nats here)


def test_beta_tcvae_refuses_a_posterior_without_a_density_per_dimension():
    with pytest.raises(ConfigError, match=r"objective._target_=.*BetaTCVAE.* needs a diagonal Gaussian .*"
                                          r"FullCovarianceGaussian"):
        make_vae("objective=beta_tcvae", "model.latent_dim=3", "model.encoder.hidden_dims=[8]",
                 "model/posterior=full_covariance")


# -- MMD -------------------------------------------------------------------------------------

def _direct_mmd(a, b, kernel, scale, unbiased):
    """MMD^2 as its definition reads, one pair at a time."""
    def k(u, v):
        sq = float(((u - v) ** 2).sum())
        return math.exp(-sq / scale) if kernel == "rbf" else scale / (scale + sq)

    def mean_over(xs, ys, skip_same):
        pairs = [(i, j) for i in range(len(xs)) for j in range(len(ys)) if not (skip_same and i == j)]
        return sum(k(xs[i], ys[j]) for i, j in pairs) / len(pairs)

    return mean_over(a, a, unbiased) + mean_over(b, b, unbiased) - 2 * mean_over(a, b, False)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_the_double_sum_and_is_symmetric(kernel, unbiased):
    a, b = torch.randn(7, 3), torch.randn(9, 3) * 1.5 + 0.5
    ours = mmd(a, b, kernel, unbiased=unbiased)  # scale: 2 D = 6
    torch.testing.assert_close(ours, torch.tensor(_direct_mmd(a, b, kernel, 6.0, unbiased)), atol=1e-12, rtol=0)
    torch.testing.assert_close(mmd(a, b, kernel, 0.5, unbiased), torch.tensor(_direct_mmd(a, b, kernel, 0.5, unbiased)),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(mmd(b, a, kernel, unbiased=unbiased), ours, atol=1e-14, rtol=0)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_is_zero_for_the_same_samples_or_distribution_and_positive_for_different_ones(kernel):
    a = torch.randn(20, 4)
    assert mmd(a, a.clone(), kernel, unbiased=False) == 0  # the V-statistic of identical sets
    # The U-statistic is 0 in expectation when both come from the same distribution (the V-statistic
    # is not: it counts each point's kernel with itself).
    same = torch.stack([mmd(torch.randn(20, 4), torch.randn(20, 4), kernel) for _ in range(400)])
    biased = torch.stack([mmd(torch.randn(20, 4), torch.randn(20, 4), kernel, unbiased=False) for _ in range(400)])
    se = same.std() / math.sqrt(len(same))
    assert abs(same.mean()) < 4 * se and biased.mean() > 10 * se
    # Clearly different distributions (means 2 apart), with as few samples: far above that spread.
    apart = mmd(torch.randn(20, 4), torch.randn(20, 4) + 2.0, kernel)
    assert apart > 0 and apart > 10 * same.std()


def test_mmd_objective_adds_the_weighted_discrepancy_to_the_beta_weighted_elbo_loss():
    terms = _terms(MMD(num_samples=2, beta=0.5, mmd_weight=30.0, kernel="rbf"))
    value = terms.extras["mmd"]
    assert value.shape == (6,) and (value == value[0]).all()  # one value per batch, given to each example
    torch.testing.assert_close(terms.loss, terms.recon + 0.5 * terms.kl + 30.0 * value)
    torch.testing.assert_close(terms.elbo, -(terms.recon + terms.kl))


# -- through the VAE: built from the configs, trained, logged --------------------------------

@pytest.mark.parametrize("name, logged", [
    ("miwae", ["iwae", "miwae"]), ("ciwae", ["iwae", "ciwae"]), ("piwae", ["iwae", "miwae"]),
    ("beta_tcvae", ["mi", "tc", "dwkl"]), ("mmd", ["mmd"]),
])
def test_each_objective_builds_trains_and_logs_its_terms(name, logged, fake_mnist, tmp_path):
    torch.set_default_dtype(torch.float32)
    model = make_vae(f"objective={name}", "model.latent_dim=3", "model.encoder.hidden_dims=[32]")
    model.objective.set_training_size(1000)  # what the VAE does when it trains (beta-TCVAE's N)
    terms = model(torch.bernoulli(torch.rand(8, 1, 28, 28)))
    assert torch.isfinite(terms.loss).all() and terms.loss.shape == (8,)
    terms.loss.mean().backward()
    for part in (model.encoder, model.decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)

    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=50)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, log_every_n_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    if name == "beta_tcvae":
        model.objective.dataset_size = None  # as built from the YAML (dataset_size: null): N comes from the data
    trainer.fit(model, dm)
    metrics = trainer.logged_metrics
    for key in [f"{split}/{term}" for split in ("train", "val") for term in ["elbo", *logged]]:
        assert key in metrics and torch.isfinite(metrics[key]), key
    if name == "beta_tcvae":
        assert model.objective.dataset_size == 500  # the fake MNIST's 600 training images less the 100 held out


def test_beta_tcvae_without_its_n_says_how_to_give_it():
    model = make_vae("objective=beta_tcvae", "model.latent_dim=3", "model.encoder.hidden_dims=[32]")
    with pytest.raises(VAEUserError, match="objective.dataset_size=null takes N from the training data"):
        model(torch.rand(4, 1, 28, 28))


@pytest.mark.parametrize("overrides, key", [
    (["objective=miwae", "objective.num_groups=0"], "objective.num_groups"),
    (["objective=piwae", "objective.num_groups=1.5"], "objective.num_groups"),
    (["objective=ciwae", "objective.ciwae_beta=2"], "objective.ciwae_beta"),
    (["objective=mmd", "objective.kernel=foo"], "objective.kernel"),
    (["objective=mmd", "objective.kernel_scale=0"], "objective.kernel_scale"),
    (["objective=mmd", "objective.mmd_weight=-1"], "objective.mmd_weight"),
    (["objective=beta_tcvae", "objective.dataset_size=0"], "objective.dataset_size"),
    (["objective=beta_tcvae", "objective.estimator=mss"], "objective.estimator"),
])
def test_bad_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        make_vae("model.latent_dim=2", "model.encoder.hidden_dims=[8]", *overrides)
