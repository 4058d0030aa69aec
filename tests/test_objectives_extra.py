"""IWAE, the importance-sampled log-likelihood, KL schedules, free bits, likelihoods, conv nets."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

from conftest import make_vae
from linear_gaussian import LinearGaussian, elbo_terms, gaussian_kl, log_weights, reparameterize
from vae_lightning.errors import VAEUserError
from vae_lightning.evaluation import LatentActivity, NegativeLogLikelihood, importance_sampled_log_px
from vae_lightning.likelihoods import ContinuousBernoulli, Gaussian, LearnedGaussian, PredictedGaussian
from vae_lightning.nets import ConvDecoder, ConvEncoder
from vae_lightning.objectives import free_bits_kl, iwae_bound
from vae_lightning.posteriors import DiagonalGaussian
from vae_lightning.priors import StandardNormal
from vae_lightning.schedules import beta_at, burda_lr_factor


pytestmark = pytest.mark.usefixtures("float64")


def _approximate_encoder(model: LinearGaussian, x):
    """A diagonal q that is not the posterior: shifted mean, widened variances."""
    mean, cov = model.posterior(x)
    return mean + 0.3, torch.log(torch.diagonal(cov) * 2.0).expand_as(mean).clone()


def _q(model, x):
    return DiagonalGaussian(*_approximate_encoder(model, x))


# -- IWAE ----------------------------------------------------------------------------------

def test_iwae_rises_with_k_towards_log_px():
    model = LinearGaussian.make()
    x = model.sample_x(4)
    mu, logvar = _approximate_encoder(model, x)
    reps = 4000
    means = {}
    for k in (1, 5, 50, 500):
        z = reparameterize(mu.repeat(reps, 1), logvar.repeat(reps, 1), k)
        log_w = log_weights(x.repeat(reps, 1), z, mu.repeat(reps, 1), logvar.repeat(reps, 1),
                                       model.decode, Gaussian(sigma=model.s))
        means[k] = iwae_bound(log_w).view(reps, -1).mean(0)  # E[L_K], [B]
    exact_elbo = model.expected_log_px_given_z(x, mu, logvar) - gaussian_kl(mu, logvar)
    log_px = model.log_px(x)
    # L_1 is the ELBO (unbiased, within sampling error), L_K rises, and L_500 is close to log p(x).
    torch.testing.assert_close(means[1], exact_elbo, atol=0.05, rtol=0)
    assert (means[1] < means[5]).all() and (means[5] < means[50]).all() and (means[50] < means[500]).all()
    assert (means[500] < log_px + 1e-3).all()
    assert ((log_px - means[500]) < 0.05 * (log_px - means[1])).all()


def test_iwae_with_one_sample_is_that_samples_log_weight():
    log_w = torch.randn(1, 7)
    torch.testing.assert_close(iwae_bound(log_w), log_w[0])


def test_iwae_objective_trains_on_minus_the_bound():
    model = LinearGaussian.make()
    x = model.sample_x(6)
    mu, logvar = _approximate_encoder(model, x)
    terms = elbo_terms(x, mu, logvar, model.decode, Gaussian(sigma=model.s), num_samples=10, objective="iwae")
    torch.testing.assert_close(terms.loss, -terms.iwae)
    torch.testing.assert_close(terms.elbo, -(terms.recon + terms.kl))


def test_elbo_objective_computes_the_iwae_bound_only_when_asked():
    model = LinearGaussian.make()
    x = model.sample_x(6)
    mu, logvar = _approximate_encoder(model, x)
    args = (x, mu, logvar, model.decode, Gaussian(sigma=model.s), 10)
    assert elbo_terms(*args).iwae is None
    torch.manual_seed(2)
    asked = elbo_terms(*args, with_iwae=True)
    torch.manual_seed(2)
    trained = elbo_terms(*args, objective="iwae")
    torch.testing.assert_close(asked.iwae, trained.iwae)  # the same bound on the same samples
    torch.testing.assert_close(asked.loss, asked.recon + asked.kl)  # while the loss stays the ELBO's


def test_iwae_with_beta_weights_the_prior_ratio_of_the_same_samples():
    model = LinearGaussian.make()
    x = model.sample_x(4)
    mu, logvar = _approximate_encoder(model, x)
    lik = Gaussian(sigma=model.s)
    torch.manual_seed(3)
    terms = elbo_terms(x, mu, logvar, model.decode, lik, num_samples=6, beta=0.25, objective="iwae")
    torch.manual_seed(3)
    z = reparameterize(mu, logvar, 6)
    log_px_z = lik.log_prob(x, model.decode(z), 1)
    log_ratio = log_weights(x, z, mu, logvar, model.decode, lik) - log_px_z
    torch.testing.assert_close(terms.loss, -iwae_bound(log_px_z + 0.25 * log_ratio))
    torch.testing.assert_close(terms.iwae, iwae_bound(log_px_z + log_ratio))  # the logged bound keeps beta = 1


def test_iwae_is_stable_for_very_negative_log_weights():
    log_w = torch.tensor([[-1e4, -2e4], [-1e4 - math.log(3), -2e4]])
    out = iwae_bound(log_w)
    torch.testing.assert_close(out, torch.tensor([-1e4 + math.log((1 + 1 / 3) / 2), -2e4]))


# -- importance-sampled log p(x) -----------------------------------------------------------

def test_importance_sampled_log_px_converges_to_the_closed_form():
    model = LinearGaussian.make()
    x = model.sample_x(5)
    estimate = importance_sampled_log_px(x, _q(model, x), model.decode, StandardNormal(3), Gaussian(sigma=model.s),
                                         num_samples=20_000)
    mu, logvar = _approximate_encoder(model, x)
    elbo_gap = model.log_px(x) - (model.expected_log_px_given_z(x, mu, logvar) - gaussian_kl(mu, logvar))
    error = (estimate - model.log_px(x)).abs()
    # Sampling error at S = 20000 is ~0.01 nats here; the ELBO of this q is ~0.5 nats short.
    assert (error < 0.05).all() and (error < 0.1 * elbo_gap).all()


def test_importance_sampled_log_px_is_exact_with_the_exact_posterior():
    model = LinearGaussian.make()
    x = model.sample_x(3)

    mean, cov = model.posterior(x)
    exact = DiagonalGaussian(mean, torch.log(torch.diagonal(cov)).expand_as(mean).clone())
    estimate = importance_sampled_log_px(x, exact, model.decode, StandardNormal(3), Gaussian(sigma=model.s),
                                         num_samples=7)
    torch.testing.assert_close(estimate, model.log_px(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 300])
def test_importance_sampled_log_px_does_not_depend_on_the_chunking(chunk_size):
    model = LinearGaussian.make(orthogonal=False)
    x = model.sample_x(4)
    args = (x, _q(model, x), model.decode, StandardNormal(3), Gaussian(sigma=model.s))
    whole = importance_sampled_log_px(*args, num_samples=300, chunk_size=300,
                                      generator=torch.Generator().manual_seed(5))
    chunked = importance_sampled_log_px(*args, num_samples=300, chunk_size=chunk_size,
                                        generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=0)


def test_nll_metric_is_the_same_on_one_process_or_split_across_two():
    log_px = -torch.rand(101) * 100
    one = NegativeLogLikelihood(num_dims=784)
    one.update(log_px[:30])
    one.update(log_px[30:])
    rank0, rank1 = NegativeLogLikelihood(num_dims=784), NegativeLogLikelihood(num_dims=784)
    rank0.update(log_px[:50])  # uneven shards, as the last batch of a DDP rank may be
    rank1.update(log_px[50:])
    rank0.merge_state(rank1)  # what the sum reduction across ranks does
    torch.testing.assert_close(one.compute(), -log_px.mean())
    torch.testing.assert_close(rank0.compute(), one.compute())
    torch.testing.assert_close(one.bits_per_dim(one.compute()), -log_px.mean() / (784 * math.log(2)))


def test_latent_activity_counts_units_whose_mean_varies():
    mu = torch.randn(2000, 4) * torch.tensor([1.0, 0.5, 0.05, 0.0])  # variances 1, 0.25, 0.0025, 0
    logvar = torch.zeros(2000, 4)
    metric = LatentActivity(latent_dim=4)
    kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)
    metric.update(mu[:1000], kl_per_dim[:1000])
    metric.update(mu[1000:], kl_per_dim[1000:])
    out = metric.compute()
    assert out["active_units"] == 2
    torch.testing.assert_close(out["variance"], mu.var(0, unbiased=False))
    torch.testing.assert_close(out["kl_per_dim"], 0.5 * mu.pow(2).mean(0))


# -- KL schedules and free bits ------------------------------------------------------------

def test_schedules_give_the_documented_beta():
    assert beta_at(123, 2.0) == 2.0
    assert [beta_at(s, 2.0, "linear", warmup_steps=100) for s in (0, 25, 50, 100, 1000)] == [0, 0.5, 1.0, 2.0, 2.0]
    cyc = dict(schedule="cyclical", cycle_steps=100, cycle_ratio=0.5)
    assert [beta_at(s, 1.0, **cyc) for s in (0, 25, 50, 99, 100, 125, 150)] == [0, 0.5, 1, 1, 0, 0.5, 1]


@pytest.mark.parametrize("overrides, key", [
    (["objective.kl_schedule=linear"], "objective.warmup_steps"),
    (["objective.kl_schedule=cyclical"], "objective.cycle_steps"),
    (["objective.kl_schedule=cyclical", "objective.cycle_steps=10", "objective.cycle_ratio=0.0"],
     "objective.cycle_ratio"),
    (["objective.kl_schedule=sigmoid"], "objective.kl_schedule"),
])
def test_bad_schedule_settings_name_the_key(overrides, key):
    with pytest.raises(VAEUserError, match=key):
        make_vae("model.encoder.hidden_dims=[8]", "model.latent_dim=2", *overrides)


def test_free_bits_changes_the_gradient_only_below_the_floor():
    # Two latent dims: dim 0 far above a 0.5-nat floor, dim 1 below it.
    mu = torch.tensor([[2.0, 0.1], [1.5, -0.1], [2.5, 0.2]], requires_grad=True)
    logvar = torch.zeros(3, 2, requires_grad=True)
    kl_dims = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)
    free = free_bits_kl(kl_dims, floor=0.5).mean()
    plain = kl_dims.sum(-1).mean()
    g_free = torch.autograd.grad(free, mu, retain_graph=True)[0]
    g_plain = torch.autograd.grad(plain, mu)[0]
    torch.testing.assert_close(g_free[:, 0], g_plain[:, 0])  # above the floor: unchanged
    assert (g_free[:, 1] == 0).all() and (g_plain[:, 1] != 0).all()  # below: no pull towards the prior
    # Its value is the paper's sum_g max(floor, mean_batch KL_g).
    torch.testing.assert_close(free, kl_dims[:, 0].mean() + 0.5)


def test_free_bits_in_groups():
    kl_dims = torch.tensor([[0.1, 0.2, 3.0, 1.0]])
    torch.testing.assert_close(free_bits_kl(kl_dims, floor=1.0, group_size=2), torch.tensor([1.0 + 4.0]))
    with pytest.raises(ValueError, match="does not divide"):
        free_bits_kl(kl_dims, floor=1.0, group_size=3)


def test_burda_learning_rate_schedule():
    factors = [burda_lr_factor(e) for e in range(3281)]
    assert factors[0] == 1.0
    assert set(factors[1:4]) == {10 ** (-1 / 7)} and factors[4] == 10 ** (-2 / 7)
    assert factors[3279] == 10 ** (-7 / 7) and factors[3280] == factors[3279]
    stage_lengths = [sum(1 for f in factors[:3280] if f == 10 ** (-i / 7)) for i in range(8)]
    assert stage_lengths == [3**i for i in range(8)]


# -- likelihoods ---------------------------------------------------------------------------

def test_continuous_bernoulli_is_a_normalised_density():
    logits = torch.tensor([-3.0, -0.5, 0.0, 1e-4, 2.0])
    grid = torch.linspace(0, 1, 20001)[:, None].expand(-1, 5)
    lik = ContinuousBernoulli()
    density = lik.log_prob(grid[..., None], logits.expand(20001, 5)[..., None], event_dim=1).exp()
    integral = torch.trapezoid(density, grid, dim=0)
    torch.testing.assert_close(integral, torch.ones(5), atol=1e-6, rtol=0)
    # Its mean is E[x] = integral of x p(x) dx, not sigmoid(logits) (except at logits = 0).
    mean = torch.trapezoid(grid * density, grid, dim=0)
    torch.testing.assert_close(lik.mean(logits, 0), mean, atol=1e-6, rtol=0)
    assert (lik.mean(logits, 0)[[0, 1, 4]] - torch.sigmoid(logits[[0, 1, 4]])).abs().min() > 0.05


def test_learned_gaussian_scalar_and_per_pixel():
    x = torch.rand(3, 1, 4, 4)
    mean = torch.rand(3, 1, 4, 4)
    scalar = LearnedGaussian((1, 4, 4), sigma=0.5, min_sigma=0.01, per_pixel=False)
    per_pixel = LearnedGaussian((1, 4, 4), sigma=0.5, min_sigma=0.01, per_pixel=True)
    assert scalar.raw_sigma.shape == () and per_pixel.raw_sigma.shape == (1, 4, 4)
    torch.testing.assert_close(scalar.sigma, torch.tensor(0.5))
    ref = Independent(Normal(mean, 0.5), 3).log_prob(x)
    torch.testing.assert_close(scalar.log_prob(x, mean, 3), ref)
    torch.testing.assert_close(per_pixel.log_prob(x, mean, 3), ref)
    per_pixel.log_prob(x, mean, 3).sum().backward()
    assert per_pixel.raw_sigma.grad.abs().min() > 0
    with torch.no_grad():
        per_pixel.raw_sigma.fill_(-1e4)
    assert (per_pixel.sigma >= 0.01).all()


def test_predicted_gaussian_splits_mean_and_bounded_sigma():
    lik = PredictedGaussian(min_sigma=0.05)
    assert lik.param_shape((3, 8, 8)) == (6, 8, 8)
    x = torch.rand(2, 3, 8, 8)
    mean, raw = torch.rand(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    sigma = 0.05 + torch.nn.functional.softplus(raw)
    ref = Independent(Normal(mean, sigma), 3).log_prob(x)
    torch.testing.assert_close(lik.log_prob(x, torch.cat([mean, raw], dim=1), 3), ref)
    collapsed = torch.cat([x, torch.full_like(raw, -1e4)], dim=1)  # mean exact, sigma pushed to its floor
    torch.testing.assert_close(lik.log_prob(x, collapsed, 3),
                               torch.full((2,), -0.5 * 192 * math.log(2 * math.pi * 0.05**2)))


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned",
                                  "gaussian_learned_per_pixel", "gaussian_predicted"])
def test_every_likelihood_trains_in_the_vae(name, architecture):
    torch.set_default_dtype(torch.float32)
    net = "model.encoder.channels=[4, 8]" if architecture == "conv" else "model.encoder.hidden_dims=[16]"
    sigma = ["model.likelihood.sigma=0.5"] if name in ("gaussian", "gaussian_learned", "gaussian_learned_per_pixel") else []
    model = make_vae(f"model={architecture}", net, "model.latent_dim=4", f"model/likelihood={name}", *sigma,
                     "objective=iwae", "objective.num_samples=3")
    x = torch.rand(5, 1, 28, 28)
    terms = model(x)
    assert terms.recon.shape == (5,) and torch.isfinite(terms.loss).all()
    terms.loss.mean().backward()
    assert model.sample(2).shape == (2, 1, 28, 28)


# -- convolutional networks ----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_encoder_decoder_shapes(shape):
    torch.set_default_dtype(torch.float32)
    enc = ConvEncoder(shape, out_features=16, channels=[16, 32])
    dec = ConvDecoder(8, (2 * shape[0], *shape[1:]), channels=[16, 32])
    assert enc(torch.rand(5, *shape)).shape == (5, 16)
    assert dec(torch.randn(3, 5, 8)).shape == (3, 5, 2 * shape[0], *shape[1:])
    model = make_vae("model=conv", "model.encoder.channels=[16, 32]", "model.latent_dim=8",
                     "model/likelihood=gaussian_predicted", "objective.num_samples=3", input_shape=shape)
    terms = model(torch.rand(4, *shape))
    assert terms.elbo.shape == (4,) and torch.isfinite(terms.elbo).all()


def test_conv_on_a_size_too_small_for_its_layers_is_a_clear_error():
    make_vae("model=conv", "model.encoder.channels=[16, 32]", input_shape=(1, 30, 30))  # 30 -> 15 -> 7: fine
    with pytest.raises(VAEUserError, match=r"model.encoder.channels=\[8, 8, 8\] .*below 1x1"):
        make_vae("model=conv", "model.encoder.channels=[8, 8, 8]", input_shape=(1, 7, 9))


def test_importance_sampled_log_px_keeps_the_decoder_output_of_a_chunk_bounded():
    """Chunks are sized by the decoder's output values, not its rows: a mixture of logistics on
    3x32x32 puts 100 x 32 x 32 values in a row, 130 MNIST rows' worth."""
    from vae_lightning.likelihoods import DiscretizedMixtureOfLogistics

    likelihood = DiscretizedMixtureOfLogistics((3, 32, 32), num_mixtures=10)
    shape = likelihood.param_shape((3, 32, 32))
    calls = []

    def decode(z):  # [k, B, D] -> [k, B, 100, 32, 32]
        calls.append(z.shape[:-1].numel())
        return torch.zeros(*z.shape[:-1], *shape)

    x = torch.rand(8, 3, 32, 32)
    q = DiagonalGaussian(torch.zeros(8, 2), torch.zeros(8, 2))
    budget = 2**20
    importance_sampled_log_px(x, q, decode, StandardNormal(2), likelihood, num_samples=10, max_elements=budget)
    assert sum(calls) == 10 * 8 and max(calls) * math.prod(shape) <= budget
    assert max(calls) == 8  # one sample (8 rows of 102,400 values) at a time within 2^20


def test_on_a_cpu_the_nll_takes_cache_sized_chunks_by_default():
    """2^18 decoder outputs per piece of work on a CPU (twice as fast there as 2^26; see benchmarks/nll_speed.py)."""
    from vae_lightning.likelihoods import Bernoulli

    calls = []

    def decode(z):  # [k, B, D] -> [k, B, 1, 28, 28]
        calls.append(z.shape[0])
        return torch.zeros(*z.shape[:-1], 1, 28, 28)

    x = torch.rand(10, 1, 28, 28).round()
    q = DiagonalGaussian(torch.zeros(10, 2), torch.zeros(10, 2))
    importance_sampled_log_px(x, q, decode, StandardNormal(2), Bernoulli((1, 28, 28)), num_samples=300)
    assert calls == [33] * 9 + [3]  # 2^18 // (10 images x 784 values) samples at a time

    # A large batch is decoded in blocks of 2^18 // 784 = 334 examples, one sample at a time.
    blocks = []
    x = torch.rand(1000, 1, 28, 28).round()
    q = DiagonalGaussian(torch.zeros(1000, 2), torch.zeros(1000, 2))
    importance_sampled_log_px(x, q, lambda z: blocks.append(tuple(z.shape[:2])) or torch.zeros(*z.shape[:-1], 1, 28, 28),
                              StandardNormal(2), Bernoulli((1, 28, 28)), num_samples=2)
    assert blocks == [(1, 334), (1, 334), (1, 332)] * 2


def test_decoding_in_blocks_of_examples_leaves_the_estimate_as_it_is(float64):
    model = LinearGaussian.make(orthogonal=False)
    x = model.sample_x(300)
    args = (x, _q(model, x), model.decode, StandardNormal(3), Gaussian(sigma=model.s))
    whole = importance_sampled_log_px(*args, num_samples=40, max_elements=10**9,
                                      generator=torch.Generator().manual_seed(5))
    blocked = importance_sampled_log_px(*args, num_samples=40, max_elements=64 * 5,  # 64-example blocks
                                        generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(blocked, whole, atol=1e-12, rtol=0)
