"""The ELBO against exact answers: the linear Gaussian model, torch.distributions, Monte Carlo."""

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from linear_gaussian import LinearGaussian, elbo_terms, gaussian_kl, log_weights, reparameterize
from vae_lightning.errors import ConfigError
from vae_lightning.likelihoods import Bernoulli, Gaussian
from vae_lightning.objectives import ELBO


pytestmark = pytest.mark.usefixtures("float64")


# -- likelihoods ---------------------------------------------------------------------------

def test_bernoulli_matches_torch_distributions_and_sums_over_pixels():
    x = torch.bernoulli(torch.full((4, 1, 5, 5), 0.3))
    logits = torch.randn(3, 4, 1, 5, 5) * 4  # K=3 samples of the parameters
    ours = Bernoulli().log_prob(x, logits, event_dim=3)
    ref = Independent(TorchBernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
    assert ours.shape == (3, 4)
    torch.testing.assert_close(ours, ref)


def test_bernoulli_is_finite_for_extreme_logits():
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    logits = torch.tensor([[-200.0, 200.0, 200.0, -200.0]])  # sigmoid is exactly 0 or 1 here
    log_p = Bernoulli().log_prob(x, logits, event_dim=1)
    # The two wrong pixels cost 200 nats each; the two right ones ~0.
    torch.testing.assert_close(log_p, torch.tensor([-400.0]))


@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_gaussian_matches_torch_distributions_with_normaliser(sigma):
    x = torch.rand(4, 1, 5, 5)
    mean = torch.rand(2, 4, 1, 5, 5)
    ours = Gaussian(sigma=sigma).log_prob(x, mean, event_dim=3)
    ref = Independent(Normal(mean, sigma), 3).log_prob(x.expand_as(mean))
    torch.testing.assert_close(ours, ref)


def test_gaussian_at_its_mean_is_the_normaliser_alone():
    # Where x = mu the squared error vanishes: log p = -D/2 log(2 pi sigma^2), positive for small sigma.
    x = torch.rand(2, 10)
    log_p = Gaussian(sigma=0.1).log_prob(x, x, event_dim=1)
    torch.testing.assert_close(log_p, torch.full((2,), -5 * math.log(2 * math.pi * 0.01)))
    assert (log_p > 0).all()


def test_bad_sigma_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"sigma=0.0 must be > 0"):
        Gaussian(sigma=0.0)


# -- KL ------------------------------------------------------------------------------------

def test_analytic_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = Independent(Normal(mu, (0.5 * logvar).exp()), 1)
    p = Independent(Normal(torch.zeros(7), torch.ones(7)), 1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p))


def test_analytic_kl_matches_monte_carlo():
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    z = reparameterize(mu, logvar, 400_000)  # [K, B, D]
    q = Normal(mu, (0.5 * logvar).exp())
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # [K, B]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(z.shape[0])
    assert ((mc - gaussian_kl(mu, logvar)).abs() < 4 * se).all()


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0
    assert (gaussian_kl(torch.randn(100, 3), torch.randn(100, 3)) > 0).all()


# -- the linear Gaussian model: exact ELBO -------------------------------------------------

def _exact_encoder(model: LinearGaussian, x):
    mean, cov = model.posterior(x)
    return mean, torch.log(torch.diagonal(cov)).expand_as(mean).clone()


def test_exact_posterior_is_diagonal_for_orthogonal_W():
    model = LinearGaussian.make(orthogonal=True)
    _, cov = model.posterior(model.sample_x(2))
    torch.testing.assert_close(cov, torch.diag(torch.diagonal(cov)))


@pytest.mark.parametrize("num_samples", [1, 5, 100])
def test_log_weights_equal_log_px_for_every_sample_at_the_exact_posterior(num_samples):
    model = LinearGaussian.make()
    x = model.sample_x(8)
    mu, logvar = _exact_encoder(model, x)
    z = reparameterize(mu, logvar, num_samples)
    log_w = log_weights(x, z, mu, logvar, model.decode, Gaussian(sigma=model.s))  # [K, B]
    torch.testing.assert_close(log_w, model.log_px(x).expand_as(log_w), atol=1e-10, rtol=0)


def test_closed_form_elbo_equals_log_px_at_the_exact_posterior_and_is_lower_elsewhere():
    model = LinearGaussian.make()
    x = model.sample_x(8)
    mu, logvar = _exact_encoder(model, x)
    elbo = model.expected_log_px_given_z(x, mu, logvar) - gaussian_kl(mu, logvar)
    torch.testing.assert_close(elbo, model.log_px(x), atol=1e-10, rtol=0)

    for d_mu, d_logvar in [(0.3, 0.0), (0.0, 0.5), (-0.2, -0.7)]:
        mu2, logvar2 = mu + d_mu, logvar + d_logvar
        elbo2 = model.expected_log_px_given_z(x, mu2, logvar2) - gaussian_kl(mu2, logvar2)
        # The gap is exactly KL(q || p(z|x)).
        post_mean, post_cov = model.posterior(x)
        q = Independent(Normal(mu2, (0.5 * logvar2).exp()), 1)
        gap = kl_divergence(q, Independent(Normal(post_mean, torch.diagonal(post_cov).sqrt()), 1))
        assert (elbo2 < model.log_px(x)).all()
        torch.testing.assert_close(model.log_px(x) - elbo2, gap, atol=1e-10, rtol=0)


@pytest.mark.parametrize("num_samples", [1, 10])
def test_mc_elbo_is_unbiased_for_the_closed_form(num_samples):
    """Many independent K-sample estimates average to the exact ELBO (within 4 standard errors)."""
    model = LinearGaussian.make()
    x = model.sample_x(4)
    mu, logvar = _exact_encoder(model, x)
    mu, logvar = mu + 0.2, logvar - 0.3  # a q that is not the posterior, so the ELBO < log p(x)
    exact = model.expected_log_px_given_z(x, mu, logvar) - gaussian_kl(mu, logvar)
    reps = 20_000
    estimates = elbo_terms(
        x.repeat(reps, 1), mu.repeat(reps, 1), logvar.repeat(reps, 1), model.decode, Gaussian(sigma=model.s), num_samples
    ).elbo.view(reps, -1)  # [reps, B]
    se = estimates.std(0) / math.sqrt(reps)
    assert ((estimates.mean(0) - exact).abs() < 4 * se).all()
    assert (exact < model.log_px(x)).all()


def test_mc_elbo_variance_falls_as_one_over_k():
    model = LinearGaussian.make()
    x = model.sample_x(3)
    mu, logvar = _exact_encoder(model, x)
    reps = 20_000

    def variance(k):
        est = elbo_terms(x.repeat(reps, 1), mu.repeat(reps, 1), logvar.repeat(reps, 1),
                         model.decode, Gaussian(sigma=model.s), k).elbo.view(reps, -1)
        return est.var(0)

    v1, v10, v100 = variance(1), variance(10), variance(100)
    assert (v1 > 0).all()
    # Independent samples: Var(K-sample mean) = Var(1 sample) / K (sampling error ~2% here).
    torch.testing.assert_close(v10 / v1, torch.full_like(v1, 0.1), rtol=0.1, atol=0)
    torch.testing.assert_close(v100 / v1, torch.full_like(v1, 0.01), rtol=0.1, atol=0)


def test_non_orthogonal_W_best_diagonal_q_stays_below_log_px_by_the_kl_to_the_full_posterior():
    model = LinearGaussian.make(orthogonal=False)
    x = model.sample_x(5)
    post_mean, post_cov = model.posterior(x)
    # The diagonal q closest in KL(q || p): the posterior mean, variances 1 / diag(precision).
    logvar = -torch.log(torch.diagonal(torch.linalg.inv(post_cov))).expand_as(post_mean)
    elbo = model.expected_log_px_given_z(x, post_mean, logvar) - gaussian_kl(post_mean, logvar)
    gap = kl_divergence(
        MultivariateNormal(post_mean, torch.diag_embed(logvar.exp())), MultivariateNormal(post_mean, post_cov)
    )
    assert (gap > 1e-3).all()
    torch.testing.assert_close(model.log_px(x) - elbo, gap, atol=1e-10, rtol=0)


def test_beta_weights_the_kl_in_the_loss_only():
    model = LinearGaussian.make()
    x = model.sample_x(4)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    torch.manual_seed(1)
    t1 = elbo_terms(x, mu, logvar, model.decode, Gaussian(sigma=model.s), 3, beta=1.0)
    torch.manual_seed(1)
    t4 = elbo_terms(x, mu, logvar, model.decode, Gaussian(sigma=model.s), 3, beta=4.0)
    torch.testing.assert_close(t1.elbo, t4.elbo)
    torch.testing.assert_close(t1.loss, -t1.elbo)
    torch.testing.assert_close(t4.loss, t4.recon + 4.0 * t4.kl)
    torch.testing.assert_close(t1.elbo, -(t1.recon + t1.kl))


def test_num_samples_below_one_is_rejected():
    with pytest.raises(ConfigError, match="num_samples=0 must be an integer >= 1"):
        ELBO(num_samples=0)


def test_gradients_flow_through_the_reparameterisation():
    mu = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    x = torch.ones(2, 3)
    elbo_terms(x, mu, logvar, lambda z: z, Gaussian(), 4).loss.sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


@pytest.mark.parametrize("objective, num_samples, evaluated", [("elbo", 1, False), ("elbo", 3, True), ("iwae", 3, True)])
def test_log_q_is_evaluated_only_where_the_objective_needs_it(monkeypatch, objective, num_samples, evaluated):
    """The ELBO of one sample with an analytic KL (the default model) never evaluates log q(z|x) in the step;
    with K > 1 it reports L_K, which needs it, and IWAE trains on it."""
    from conftest import make_vae
    from vae_lightning.posteriors import DiagonalGaussian

    calls = []
    log_prob = DiagonalGaussian.log_prob
    monkeypatch.setattr(DiagonalGaussian, "log_prob", lambda self, z: calls.append(z.shape) or log_prob(self, z))
    vae = make_vae(f"objective={objective}", f"objective.num_samples={num_samples}", "model.latent_dim=4",
                   "model.encoder.hidden_dims=[16]")
    terms = vae((torch.rand(5, 1, 28, 28) > 0.5).float())
    assert torch.isfinite(terms.loss).all()
    assert bool(calls) is evaluated


# -- the one-sample path (K = 1, closed-form KL): the same terms, draws and gradients -------------------------

@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_one_sample_without_a_sample_axis_is_the_k_sample_path_with_k_1(beta):
    """ELBO(K=1) draws z as [B, D] and takes -log p(x|z) straight from the Bernoulli's cross-entropy; the
    same terms through the K-sample path ([1, B, D], log_prob, mean over K), the same draws from the same seed,
    the same gradients, and against torch.distributions."""
    from vae_lightning.nets import MLPDecoder
    from vae_lightning.posteriors import DiagonalGaussianPosterior
    from vae_lightning.priors import StandardNormal

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.4))
    params = torch.randn(5, 6, requires_grad=True)
    posterior, prior, likelihood = DiagonalGaussianPosterior(3), StandardNormal(3), Bernoulli()
    decoder = MLPDecoder(3, (1, 4, 4), hidden_dims=[7])
    q = posterior(params)

    torch.manual_seed(1)
    fast = ELBO(num_samples=1, beta=beta)(x, q, decoder, prior, likelihood)
    torch.manual_seed(1)
    z = q.rsample(1)  # [1, B, D]: the K-sample draw
    log_px_z = likelihood.log_prob(x, decoder(z), 3)
    recon, kl = -log_px_z.mean(0), q.kl(prior)
    torch.testing.assert_close(fast.recon, recon, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast.kl, kl, rtol=0, atol=0)
    torch.testing.assert_close(fast.loss, recon + beta * kl, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast.elbo, -(recon + kl), rtol=0, atol=1e-12)  # computed when read
    ref = Independent(TorchBernoulli(logits=decoder(z[0])), 3).log_prob(x)
    torch.testing.assert_close(fast.recon, -ref)
    (grad_fast,) = torch.autograd.grad(fast.loss.sum(), params)
    (grad_k,) = torch.autograd.grad((recon + beta * kl).sum(), params)
    torch.testing.assert_close(grad_fast, grad_k, rtol=0, atol=1e-12)
    # the generic K = 1 of the other objectives (sample_terms): the same [1, B] log p(x|z)
    torch.manual_seed(1)
    log_px_one, log_ratio, kl_one, _ = ELBO(num_samples=1).sample_terms(x, q, decoder, prior, likelihood, False)
    assert log_px_one.shape == (1, 5) and log_ratio is None
    torch.testing.assert_close(log_px_one, log_px_z, rtol=0, atol=1e-12)


def test_terms_compute_the_elbo_when_read_and_need_a_loss():
    from vae_lightning.objectives import Terms

    recon, kl = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.5])
    terms = Terms(recon=recon, kl=kl, loss=recon + kl)
    torch.testing.assert_close(terms.elbo, -(recon + kl))
    terms.elbo = torch.tensor([7.0, 8.0])  # one an objective gives is kept
    torch.testing.assert_close(terms.elbo, torch.tensor([7.0, 8.0]))
    with pytest.raises(TypeError, match="Terms needs loss="):
        Terms(recon=recon, kl=kl)


def test_the_one_sample_path_keeps_a_subclass_s_own_draw_and_log_prob():
    """A posterior that draws its own way, a likelihood with its own log_prob and an objective with its own draw
    are what K = 1 uses: the one-sample path bypasses none of them."""
    from vae_lightning.nets import MLPDecoder
    from vae_lightning.posteriors import DiagonalGaussianPosterior
    from vae_lightning.posteriors.diagonal_gaussian import DiagonalGaussian
    from vae_lightning.priors import StandardNormal

    class AtTheMean(DiagonalGaussian):
        def rsample(self, num_samples, generator=None):
            return self.loc.expand(num_samples, *self.loc.shape)

    class Shifted(Bernoulli):
        def log_prob(self, x, params, event_dim):
            return super().log_prob(x, params, event_dim) - 7.0

    class AtZero(ELBO):
        def draw(self, q, prior, need_log_ratio):
            return torch.zeros(self.num_samples, *q.mean.shape), None

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.4))
    loc, logvar = torch.randn(5, 3), torch.randn(5, 3)
    decoder, prior = MLPDecoder(3, (1, 4, 4), hidden_dims=[7]), StandardNormal(3)
    plain_recon = -Bernoulli().log_prob(x, decoder(loc), 3)
    terms = ELBO()(x, AtTheMean(loc, logvar), decoder, prior, Bernoulli())
    torch.testing.assert_close(terms.recon, plain_recon)
    terms = ELBO()(x, AtTheMean(loc, logvar), decoder, prior, Shifted())
    torch.testing.assert_close(terms.recon, plain_recon + 7.0)
    terms = AtZero()(x, DiagonalGaussianPosterior(3)(torch.cat([loc, logvar], -1)), decoder, prior, Bernoulli())
    torch.testing.assert_close(terms.recon, -Bernoulli().log_prob(x, decoder(torch.zeros(5, 3)), 3))
