"""Likelihoods of 8-bit data against exact answers: each mass sums to 1 over the 256 values (256^C colours),
the mixture is PixelCNN++'s, a uniform Categorical is 8 bits per value through the whole test loop, and
a dequantised density bounds the exact mass of its bins."""

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.distributions import Normal
from torch.utils.data import DataLoader, TensorDataset

from conftest import make_vae
from vae_lightning.errors import ConfigError, VAEUserError
from vae_lightning.likelihoods import (Categorical, ContinuousBernoulli, DiscretizedLogistic,
                                       DiscretizedMixtureOfLogistics, Gaussian, LearnedGaussian, PredictedGaussian)
from vae_lightning.likelihoods.base import uniform_dequantize
from vae_lightning.likelihoods.discretized import logistic_bin_log_mass

ALL_VALUES = torch.arange(256)


def _all_values(channels=1):
    """Every value (channels=1: [256, 1, 1, 1]) or every colour (channels=2: [65536, 2, 1, 1]) as x = k / 255."""
    grids = torch.meshgrid(*[ALL_VALUES] * channels, indexing="ij")
    return (torch.stack([g.flatten() for g in grids], dim=1) / 255).view(-1, channels, 1, 1)


def _total_mass(likelihood, x, params):
    """sum over the rows of x of p(x | params), for each of N parameter sets: params [N, P] -> [N].

    The sets go in the leading (sample) dim, each repeated for every row: params [N, V, P, 1, 1] against
    x [V, C, 1, 1] gives log p [N, V]."""
    log_p = likelihood.log_prob(x, params.view(*params.shape, 1, 1).unsqueeze(1).expand(-1, x.shape[0], -1, 1, 1), 3)
    return torch.logsumexp(log_p, dim=1).exp()


def _random_logistic(n, channels=1, components=1):
    """Means far outside [-1, 1] included, log-scales from below the bound (-7) to very broad."""
    means = 4 * torch.rand(n, components, channels) - 2
    log_scales = torch.cat([torch.full((n // 4, components, channels), -30.0),  # clamped to min_log_scale
                            16 * torch.rand(n - n // 4, components, channels) - 10])
    return means, log_scales


def _mixture_params(logits, means, log_scales, coefficients):
    """The decoder's channels of DiscretizedMixtureOfLogistics, in its documented order:
    logits [N, M], means and log-scales [N, M, C], coefficients [N, M, C(C-1)/2] -> [N, P]."""
    return torch.cat([logits, means.flatten(1), log_scales.flatten(1), coefficients.flatten(1)], dim=1)


def _random_mixture(n, channels, components):
    means, log_scales = _random_logistic(n, channels, components)
    pairs = channels * (channels - 1) // 2
    return 3 * torch.randn(n, components), means, log_scales, 2 * torch.randn(n, components, pairs)


pytestmark = pytest.mark.usefixtures("float64")


# -- each mass sums to 1 -------------------------------------------------------------------

@pytest.mark.parametrize("min_log_scale", [-7.0, -20.0])
def test_the_discretized_logistic_sums_to_one_over_the_256_values(min_log_scale):
    means, log_scales = _random_logistic(400)
    params = torch.cat([means.flatten(1), log_scales.flatten(1)], dim=1)  # [N, 2]
    total = _total_mass(DiscretizedLogistic(min_log_scale=min_log_scale), _all_values(), params)
    torch.testing.assert_close(total, torch.ones(400), atol=1e-6, rtol=0)


@pytest.mark.parametrize("components", [1, 4])
def test_the_mixture_sums_to_one_over_the_256_values_of_one_channel(components):
    params = _mixture_params(*_random_mixture(200, channels=1, components=components))
    total = _total_mass(DiscretizedMixtureOfLogistics(num_mixtures=components), _all_values(), params)
    torch.testing.assert_close(total, torch.ones(200), atol=1e-6, rtol=0)


def test_the_channel_coupled_mixture_sums_to_one_over_all_256_squared_colours():
    params = _mixture_params(*_random_mixture(6, channels=2, components=3))
    total = _total_mass(DiscretizedMixtureOfLogistics(num_mixtures=3), _all_values(channels=2), params)
    torch.testing.assert_close(total, torch.ones(6), atol=1e-6, rtol=0)


def test_the_rgb_mixture_sums_out_channel_by_channel():
    """Summed over its last channel, the 3-channel mixture is the 2-channel mixture of the same components'
    first two channels (which sums to 1 over its whole grid, above): for every red value and a random green."""
    logits, means, log_scales, coefficients = _random_mixture(5, channels=3, components=3)
    rgb = _mixture_params(logits, means, log_scales, coefficients)
    rg = _mixture_params(logits, means[..., :2], log_scales[..., :2], coefficients[..., :1])  # pair (1, 0) only
    likelihood = DiscretizedMixtureOfLogistics(num_mixtures=3)
    red_green = torch.stack([ALL_VALUES, torch.randint(0, 256, (256,))], dim=1)  # [256, 2]
    colours = torch.cat([red_green.repeat_interleave(256, 0), ALL_VALUES.repeat(256)[:, None]], dim=1)  # [65536, 3]
    # The 5 parameter sets in the sample dim, the same for every row of the batch: [5, rows, P, 1, 1].
    rgb = rgb[:, None, :, None, None].expand(-1, 65536, -1, 1, 1)
    rg = rg[:, None, :, None, None].expand(-1, 256, -1, 1, 1)
    log_p3 = likelihood.log_prob((colours / 255).view(-1, 3, 1, 1), rgb, 3)  # [5, 65536]
    log_p2 = likelihood.log_prob((red_green / 255).view(-1, 2, 1, 1), rg, 3)  # [5, 256]
    torch.testing.assert_close(torch.logsumexp(log_p3.view(5, 256, 256), dim=2).exp(), log_p2.exp(),
                               atol=1e-10, rtol=1e-8)


def test_the_rgb_mixture_is_pixelcnn_plus_plus():
    """Against the formula written out: per component, red, then green shifted by tanh(a0) red, then blue by
    tanh(a1) red + tanh(a2) green (all on the [-1, 1] scale), each the sigmoid difference over its bin."""
    # Moderate parameters, where the plain sigmoid difference below neither underflows nor cancels.
    logits, coefficients = 3 * torch.randn(64, 5), 2 * torch.randn(64, 5, 3)
    means, log_scales = 2.4 * torch.rand(64, 5, 3) - 1.2, 3 * torch.rand(64, 5, 3) - 3
    k = torch.randint(0, 256, (64, 3))
    k[:8] = torch.tensor([0, 255, 17])  # the edge bins too
    signed = 2 * k / 255 - 1  # [N, 3]

    def mass(value, centre, mean, log_scale):
        upper = torch.where(value == 255, torch.inf, (centre + 1 / 255 - mean) / log_scale.exp())
        lower = torch.where(value == 0, -torch.inf, (centre - 1 / 255 - mean) / log_scale.exp())
        return torch.sigmoid(upper) - torch.sigmoid(lower)

    alpha = torch.tanh(coefficients)  # [N, M, 3]
    shifted = [means[..., 0],
               means[..., 1] + alpha[..., 0] * signed[:, None, 0],
               means[..., 2] + alpha[..., 1] * signed[:, None, 0] + alpha[..., 2] * signed[:, None, 1]]
    per_component = math.prod(mass(k[:, None, c], signed[:, None, c], shifted[c], log_scales[..., c]) for c in range(3))
    expected = (torch.softmax(logits, -1) * per_component).sum(-1).log()
    ours = DiscretizedMixtureOfLogistics(num_mixtures=5).log_prob((k / 255).view(64, 3, 1, 1),
                                                                  _mixture_params(logits, means, log_scales,
                                                                                  coefficients).view(64, -1, 1, 1), 3)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=1e-10)


def test_the_categorical_sums_to_one_and_zero_logits_are_8_bits():
    total = _total_mass(Categorical(), _all_values(), 5 * torch.randn(50, 256))
    torch.testing.assert_close(total, torch.ones(50), atol=1e-6, rtol=0)
    x = torch.randint(0, 256, (4, 3, 2, 2)) / 255
    log_p = Categorical().log_prob(x, torch.zeros(4, 256 * 3, 2, 2), 3)
    torch.testing.assert_close(log_p / (12 * math.log(2)), torch.full((4,), -8.0))


# -- shapes, and the contract ----------------------------------------------------------------

LIKELIHOODS_8BIT = [
    lambda: DiscretizedLogistic((3, 4, 5)),
    lambda: DiscretizedMixtureOfLogistics((3, 4, 5), num_mixtures=2),
    lambda: DiscretizedMixtureOfLogistics((1, 4, 5), num_mixtures=3),
    lambda: Categorical((3, 4, 5)),
    lambda: Gaussian((3, 4, 5), sigma=0.1, dequantize="uniform"),
    lambda: PredictedGaussian((3, 4, 5), dequantize="uniform"),
]


@pytest.mark.parametrize("make", LIKELIHOODS_8BIT, ids=["logistic", "mixture_rgb", "mixture_grey", "categorical",
                                                       "gaussian_dequantized", "predicted_gaussian_dequantized"])
def test_log_prob_keeps_the_sample_and_batch_dims_and_the_mean_is_an_image(make):
    likelihood = make()
    event = likelihood.event_shape
    x = torch.randint(0, 256, (2, *event)) / 255
    params = torch.randn(2, *likelihood.param_shape(event))
    assert likelihood.log_prob(x, params, 3).shape == (2,)
    assert likelihood.log_prob(x, torch.randn(7, *params.shape), 3).shape == (7, 2)
    mean = likelihood.mean(5 * params, 3)
    assert likelihood.data_kind == "discrete" and mean.shape == x.shape
    if not isinstance(likelihood, Gaussian | PredictedGaussian):  # a Gaussian's mean is not bounded
        assert 0 <= mean.min() and mean.max() <= 1


def test_the_mixture_param_shape_and_split_agree():
    likelihood = DiscretizedMixtureOfLogistics(num_mixtures=10)
    assert likelihood.param_shape((3, 8, 8)) == (100, 8, 8) and likelihood.param_shape((1, 28, 28)) == (30, 28, 28)
    for channels in (1, 2, 3, 4):
        params = torch.randn(6, 5, *likelihood.param_shape((channels, 2, 3)))
        logits, means, log_scales, coefficients = likelihood.split(params, 3)
        pairs = channels * (channels - 1) // 2
        assert logits.shape == (6, 5, 10, 2, 3) and means.shape == log_scales.shape == (6, 5, 10, channels, 2, 3)
        assert coefficients.shape == (6, 5, 10, pairs, 2, 3)
    with pytest.raises(ValueError, match="31 parameter channels"):
        likelihood.split(torch.randn(2, 31, 2, 3), 3)


def test_the_means_are_the_distributions_means():
    """Categorical: the expected value / 255. Logistic: its centre, as an intensity, clamped. Mixture: the
    weights times each component's means, green coupled to the component's mean red."""
    logits = torch.randn(2, 256 * 1, 1, 1)
    torch.testing.assert_close(Categorical().mean(logits, 3),
                               (torch.softmax(logits.view(2, 256), -1) @ (ALL_VALUES / 255.0)).view(2, 1, 1, 1))
    params = torch.tensor([[-0.5, -3.0], [1.5, 0.0]]).view(2, 2, 1, 1)  # (mean, log-scale) on [-1, 1]
    torch.testing.assert_close(DiscretizedLogistic().mean(params, 3).flatten(), torch.tensor([0.25, 1.0]))
    logits, mu = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[[-0.5, 0.2], [0.4, -0.6]]])  # [1, M=2, C=2]
    alpha = torch.tensor([[[0.5], [-1.0]]])
    mixture = DiscretizedMixtureOfLogistics(num_mixtures=2).mean(
        _mixture_params(logits, mu, torch.zeros(1, 2, 2), alpha).view(1, -1, 1, 1), 3).flatten()
    green = mu[0, :, 1] + torch.tanh(alpha[0, :, 0]) * mu[0, :, 0]
    expected = torch.stack([0.25 * mu[0, 0, 0] + 0.75 * mu[0, 1, 0], 0.25 * green[0] + 0.75 * green[1]])
    torch.testing.assert_close(mixture, (expected + 1) / 2)


# -- sharp, broad, and one component -----------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 128, 254, 255])
def test_a_sharp_logistic_centred_on_a_bin_puts_all_its_mass_there(value):
    x = torch.full((1, 1), value / 255)
    centre = 2 * value / 255 - 1
    sharp = DiscretizedLogistic(min_log_scale=-12.0)
    log_p = sharp.log_prob(x, torch.tensor([[centre, -12.0]]), 1)
    torch.testing.assert_close(log_p, torch.zeros(1), atol=1e-12, rtol=0)
    # The default bound (-7, as in PixelCNN++) holds a scale below it at exp(-7): an interior bin then
    # gets sigmoid(e^7 / 255) - sigmoid(-e^7 / 255), about 97%, whatever the decoder asks for.
    at_bound = DiscretizedLogistic().log_prob(x, torch.tensor([[centre, -7.0]]), 1)
    torch.testing.assert_close(DiscretizedLogistic().log_prob(x, torch.tensor([[centre, -40.0]]), 1), at_bound)
    if 0 < value < 255:
        half = math.exp(7) / 255
        torch.testing.assert_close(at_bound.exp(), torch.tensor([math.tanh(half / 2)]))


def test_a_broad_logistic_takes_the_fallback_only_where_the_bin_width_underflows():
    """In float32 the width 2 / (255 s) underflows for log s > ~83: the mass is then the density at the bin's
    centre times the bin's width, finite, continuous with the exact form, and with finite gradients."""
    log_scale = torch.tensor([60.0, 80.0, 82.0, 84.0, 100.0], dtype=torch.float32, requires_grad=True)
    k, mean = torch.tensor([100.0], dtype=torch.float32), torch.tensor([0.3], dtype=torch.float32)
    log_p = logistic_bin_log_mass(k, mean, log_scale)
    # A logistic this broad is flat over [-1, 1]: density 1 / (4 s) there.
    expected = -log_scale.detach().double() - math.log(4) + math.log(2 / 255)
    torch.testing.assert_close(log_p.double(), expected, atol=1e-5, rtol=0)
    log_p.sum().backward()
    assert torch.isfinite(log_scale.grad).all()
    # ... and for ordinary parameters the gradients are finite everywhere, edge bins included.
    mean = torch.linspace(-3, 3, 7).requires_grad_()
    log_scale = torch.linspace(-7, 8, 6).requires_grad_()
    logistic_bin_log_mass(ALL_VALUES.double(), mean[:, None], log_scale[:, None, None]).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


def test_a_one_component_mixture_is_the_discretized_logistic():
    x = torch.randint(0, 256, (4, 1, 3, 3)) / 255
    mean, log_scale = 3 * torch.randn(5, 4, 1, 3, 3), 3 * torch.randn(5, 4, 1, 3, 3) - 3
    logistic = DiscretizedLogistic().log_prob(x, torch.cat([mean, log_scale], dim=2), 3)
    logits = 4 * torch.randn(5, 4, 1, 3, 3)  # one component: its weight is 1 whatever its logit
    mixture = DiscretizedMixtureOfLogistics(num_mixtures=1).log_prob(x, torch.cat([logits, mean, log_scale], 2), 3)
    torch.testing.assert_close(mixture, logistic, atol=1e-12, rtol=0)


# -- dequantised densities -----------------------------------------------------------------

def test_a_dequantised_gaussian_bounds_the_exact_mass_of_its_bins():
    """Five pixels, a fixed mean and sigma. Exact: the mass of bin [k/256, (k+1)/256) by the normal CDF;
    E_u log N((k + u)/256) in closed form (E(y - mu)^2 = (c - mu)^2 + Var y, c the bin's centre, Var y =
    1 / (12 256^2)). The bound holds, and the likelihood's Monte-Carlo values average to it."""
    sigma = 0.003  # about a bin: the density changes much across one, so bound and mass differ
    k = torch.tensor([0.0, 3.0, 128.0, 200.0, 255.0])
    x, mu = (k / 255)[None], ((k + 0.5) / 256 + torch.tensor([-0.006, 0.003, 0.0, 0.008, -0.004]))[None]
    normal = Normal(mu[0], sigma)
    discrete_nll = -(normal.cdf((k + 1) / 256) - normal.cdf(k / 256)).log().sum()
    mean_sq = ((k + 0.5) / 256 - mu[0]) ** 2 + 1 / (12 * 256**2)
    dequantised_nll = (0.5 * math.log(2 * math.pi * sigma**2) + mean_sq / (2 * sigma**2)).sum() + 5 * math.log(256)
    assert discrete_nll < dequantised_nll  # Jensen, strictly

    likelihood = Gaussian(sigma=sigma, dequantize="uniform")
    assert likelihood.data_kind == "discrete" and Gaussian.data_kind == Gaussian().data_kind == "continuous"
    draws = -likelihood.log_prob(x, mu.expand(200_000, 1, 5), 1)  # [S, 1]: a fresh u for each sample
    assert draws.shape == (200_000, 1) and draws.unique().numel() > 199_000
    standard_error = draws.std() / math.sqrt(draws.numel())
    assert abs(draws.mean() - dequantised_nll) < 4 * standard_error, (draws.mean(), dequantised_nll, standard_error)
    assert standard_error < 0.01 * (dequantised_nll - discrete_nll)  # so it tells the bound from the mass


@pytest.mark.parametrize("make", [lambda: Gaussian((2, 3), sigma=0.3, dequantize="uniform"),
                                  lambda: LearnedGaussian((2, 3), sigma=0.2, per_pixel=True, dequantize="uniform"),
                                  lambda: PredictedGaussian((2, 3), dequantize="uniform"),
                                  lambda: ContinuousBernoulli((2, 3), dequantize="uniform")],
                         ids=["gaussian", "learned_gaussian", "predicted_gaussian", "continuous_bernoulli"])
def test_every_density_dequantises_the_same_way_under_the_global_seed(make):
    likelihood = make()
    x = torch.randint(0, 256, (4, 2, 3)) / 255
    params = torch.randn(3, 4, *likelihood.param_shape((2, 3)))
    torch.manual_seed(7)
    log_p = likelihood.log_prob(x, params, 2)
    torch.manual_seed(7)
    y = uniform_dequantize(x, (3,))  # [3, 4, 2, 3]: its own u for each of the 3 samples
    assert (y >= (x * 255).round() / 256).all() and (y < ((x * 255).round() + 1) / 256).all()
    torch.testing.assert_close(log_p, likelihood.log_density(y, params, 2) - 6 * math.log(256))
    assert likelihood.data_kind == "discrete" and not torch.equal(likelihood.log_prob(x, params, 2), log_p)


def test_the_dequantised_gaussian_preset_is_a_per_pixel_learned_gaussian_on_discrete_data():
    model = make_vae("model/likelihood=gaussian_dequantized", "model.latent_dim=2", "model.encoder.hidden_dims=[8]",
                     input_shape=(1, 4, 4))
    assert type(model.likelihood) is LearnedGaussian and model.likelihood.raw_sigma.shape == (1, 4, 4)
    assert model.likelihood.data_kind == "discrete"
    assert make_vae("model/likelihood=gaussian_learned", input_shape=(1, 4, 4)).likelihood.data_kind == "continuous"


# -- bad settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["model/likelihood=discretized_mixture", "model.likelihood.num_mixtures=0"],
     "model.likelihood.num_mixtures=0 must be an integer >= 1"),
    (["model/likelihood=discretized_mixture", "model.likelihood.num_mixtures=2.5"],
     "model.likelihood.num_mixtures=2.5 must be an integer"),
    (["model/likelihood=discretized_logistic", "model.likelihood.min_log_scale=low"],
     "model.likelihood.min_log_scale='low' must be a number"),
    (["model/likelihood=gaussian", "model.likelihood.dequantize=maybe"],
     "model.likelihood.dequantize='maybe' must be one of ['none', 'uniform']"),
    (["model/likelihood=continuous_bernoulli", "model.likelihood.dequantize=true"],
     "model.likelihood.dequantize=True must be one of ['none', 'uniform']"),
])
def test_bad_settings_name_the_config_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        make_vae(*overrides, input_shape=(1, 4, 4))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert isinstance(err.value, VAEUserError)


# -- in the model ------------------------------------------------------------------------------

def _last_linear(net: nn.Module) -> nn.Linear:
    return [m for m in net.modules() if isinstance(m, nn.Linear)][-1]


def test_a_uniform_categorical_vae_tests_at_exactly_8_bits_per_dim(tmp_path):
    """Zero encoder outputs: q(z|x) = N(0, I) = p(z), so every importance weight is p(x|z); zero logits:
    p(x|z) = 256^-D. Through Lightning's test loop: test/nll = D ln 256 and test/bpd = 8."""
    torch.set_default_dtype(torch.float32)  # the model as a run builds it (the fixture restores the default)
    model = make_vae("model/likelihood=categorical", "model.latent_dim=2", "model.encoder.hidden_dims=[8]",
                     "eval.nll_samples=5", input_shape=(3, 4, 4))
    with torch.no_grad():
        for layer in (_last_linear(model.encoder), _last_linear(model.decoder)):
            layer.weight.zero_()
            layer.bias.zero_()
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images.float() / 255, torch.zeros(10)), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    (results,) = trainer.test(model, loader, verbose=False)
    assert results["test/bpd"] == pytest.approx(8.0, abs=1e-6)
    assert results["test/nll"] == pytest.approx(48 * math.log(256), rel=1e-6)
    assert results["test/elbo"] == pytest.approx(-48 * math.log(256), rel=1e-6)  # KL = 0, recon = D ln 256


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a step outside a Trainer
def test_a_mixture_vae_on_colour_images_builds_and_trains():
    torch.set_default_dtype(torch.float32)
    model = make_vae("model/likelihood=discretized_mixture", "model.latent_dim=2", "model.encoder.hidden_dims=[16]",
                     input_shape=(3, 8, 8))
    assert model.decoder(torch.zeros(1, 2)).shape == (1, 100, 8, 8)
    x = torch.randint(0, 256, (5, 3, 8, 8)) / 255
    loss = model.training_step((x, torch.zeros(5)), 0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert _last_linear(model.decoder).weight.grad.abs().sum() > 0
    assert model.reconstruct(x).shape == x.shape and model.sample(3).shape == (3, 3, 8, 8)
