"""The VampPrior and the two-stochastic-layer VAE, against exact answers.

VampPrior: its log-density is the mixture of the posteriors at the pseudo-inputs (a loop with
torch.distributions), its sampler draws from that mixture, the Monte-Carlo KL the objective takes with
one pseudo-input is unbiased, gradients reach the pseudo-inputs and the encoder through it, the
encoder's weights are saved once, and a checkpoint gives back the same density.

Two layers: in a two-layer linear Gaussian model, where log p(x) is known, the joint densities of the
parts are the closed-form Gaussians, the exact conditionals make every importance weight equal p(x),
and with other conditionals L_K rises with K towards log p(x); the preset builds, composes with
+experiment=burda and trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from conftest import compose_run, make_vae
from vae_lightning import VAE, load_model
from vae_lightning.errors import VAEUserError
from vae_lightning.evaluation import LatentActivity, active_units_per_layer
from vae_lightning.hierarchy import TwoLayerDecoder, TwoLayerGaussian, TwoLayerPosterior, TwoLayerPrior
from vae_lightning.likelihoods import Gaussian
from vae_lightning.nets import MLPEncoder
from vae_lightning.objectives import ELBO, IWAE, log_importance_weights
from vae_lightning.posteriors import DiagonalGaussian, DiagonalGaussianPosterior
from vae_lightning.posteriors.full_covariance import FullCovariancePosterior
from vae_lightning.priors.vamp import VampPrior

SMALL_VAMP = ("model/prior=vamp", "model.prior.num_pseudo_inputs=7", "model.latent_dim=4",
              "model.encoder.hidden_dims=[16]")


def _vamp(family=DiagonalGaussianPosterior, num_pseudo_inputs=5, latent_dim=3, input_shape=(1, 4, 4)):
    """A VampPrior over a small tanh encoder; the encoder's weights scaled up so the components differ."""
    posterior = family(latent_dim=latent_dim)
    encoder = MLPEncoder(input_shape, posterior.num_params, hidden_dims=[8], activation="tanh")
    with torch.no_grad():
        for p in encoder.parameters():
            p.mul_(3.0)
    return VampPrior(latent_dim, input_shape, encoder, posterior, num_pseudo_inputs=num_pseudo_inputs)


def _component(prior: VampPrior, m: int):
    """q(z | u_m) as a torch.distributions object, from the encoder's raw output for pseudo-input m."""
    encoder, posterior = prior._networks
    u = torch.sigmoid(prior.pseudo_input_logits[m : m + 1])  # [1, *input_shape]
    params = encoder(u)[0]  # [P]
    if isinstance(posterior, DiagonalGaussianPosterior):
        loc, logvar = params.chunk(2)
        return Independent(Normal(loc, (0.5 * logvar).exp()), 1)
    q = posterior(params[None])
    return MultivariateNormal(q.loc[0], scale_tril=q.scale_tril[0])


# -- the VampPrior ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("family", [DiagonalGaussianPosterior, FullCovariancePosterior])
def test_the_vamp_prior_is_the_mixture_of_the_posteriors_at_its_pseudo_inputs(family):
    prior = _vamp(family)
    z = 2 * torch.randn(6, 4, 3)
    # Brute force: an explicit loop over the M components, each a torch.distributions object.
    log_components = torch.stack([_component(prior, m).log_prob(z) for m in range(5)])  # [M, 6, 4]
    brute = torch.logsumexp(log_components, dim=0) - math.log(5)
    assert prior.log_prob(z).shape == (6, 4)
    torch.testing.assert_close(prior.log_prob(z), brute, atol=1e-10, rtol=0)
    prior.max_elements = 7  # z in chunks of one row: the same values
    torch.testing.assert_close(prior.log_prob(z), brute, atol=1e-10, rtol=0)
    assert (torch.softmax(log_components, dim=0).max(0).values < 0.9).any()  # several components count

    # Samples: a component uniformly at random, then its posterior. The mixture's mean and variance:
    means = torch.stack([_component(prior, m).mean for m in range(5)])  # [M, D]
    variances = torch.stack([_component(prior, m).variance for m in range(5)])
    draws = prior.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (200_000, 3)
    mean, variance = means.mean(0), (variances + means**2).mean(0) - means.mean(0) ** 2
    torch.testing.assert_close(draws.mean(0), mean, atol=4 * (variance / 200_000).sqrt().max().item(), rtol=0)
    torch.testing.assert_close(draws.var(0), variance, atol=0, rtol=0.03)
    assert torch.equal(prior.sample(4, generator=torch.Generator().manual_seed(2)),
                       prior.sample(4, generator=torch.Generator().manual_seed(2)))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("num_samples", [1, 5])
def test_the_monte_carlo_kl_against_a_one_pseudo_input_vamp_prior_is_unbiased(num_samples):
    prior = _vamp(num_pseudo_inputs=1)
    q = DiagonalGaussian(torch.tensor([[0.5, -0.3, 1.0], [-1.0, 0.0, 0.2]]), torch.tensor([[-1.0, 0.0, -0.5]] * 2))
    # Brute force: the average of log q - log p over a million draws of q; and, with M = 1, the exact KL
    # between two Gaussians.
    z = q.rsample(1_000_000)
    ratio = q.log_prob(z) - prior.log_prob(z)
    brute, brute_se = ratio.mean(0), ratio.std(0) / math.sqrt(z.shape[0])
    exact = kl_divergence(Independent(Normal(q.loc, (0.5 * q.logvar).exp()), 1), _component(prior, 0))
    assert ((brute - exact).abs() < 4 * brute_se).all(), (brute, exact)
    # The objective's estimate from its own K samples, repeated: its mean must agree.
    reps = 200_000
    objective = ELBO(num_samples=num_samples)
    assert objective.check(q, prior) == "monte_carlo"
    big_q = DiagonalGaussian(q.loc.repeat(reps, 1), q.logvar.repeat(reps, 1))
    terms = objective(torch.zeros(2 * reps, 1), big_q, lambda z: torch.zeros(*z.shape[:-1], 1), prior,
                      Gaussian(sigma=1.0))
    estimates = terms.kl.view(reps, 2)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(reps)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    assert (exact > 0.1).all()  # a KL far from 0, so agreeing means something


def test_gradients_reach_the_pseudo_inputs_and_the_encoder_through_the_vamp_prior():
    vae = make_vae(*SMALL_VAMP)
    vae.prior.log_prob(torch.randn(5, 2, 4)).sum().backward()
    grad = vae.prior.pseudo_input_logits.grad
    assert grad is not None and (grad.flatten(1).norm(dim=1) > 0).all()  # every pseudo-input
    for name, p in vae.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in vae.decoder.parameters())


def test_the_vamp_prior_refuses_a_posterior_without_a_closed_form_density():
    class SamplesOnly(DiagonalGaussian):  # like a flow: a density only through rsample_and_log_prob
        def log_prob(self, z):
            raise NotImplementedError

    class SamplesOnlyPosterior(DiagonalGaussianPosterior):
        def forward(self, params):
            return SamplesOnly(*params.chunk(2, dim=-1))

    posterior = SamplesOnlyPosterior(latent_dim=3)
    encoder = MLPEncoder((1, 4, 4), posterior.num_params, hidden_dims=[8])
    with pytest.raises(VAEUserError, match="needs a posterior whose log_prob.*SamplesOnly"):
        VampPrior(3, (1, 4, 4), encoder, posterior, num_pseudo_inputs=3)


def test_the_vamp_prior_builds_from_the_config_trains_a_step_and_saves_the_encoder_once():
    torch.manual_seed(0)
    vae = make_vae(*SMALL_VAMP)
    assert vae.kl_estimator == "monte_carlo" and vae.prior.num_pseudo_inputs == 7
    assert vae.prior.pseudo_inputs.shape == (7, 1, 28, 28) and 0 < vae.prior.pseudo_inputs.min() < 1
    # The state dict holds the encoder once: the prior adds its pseudo-inputs and nothing else.
    state = vae.state_dict()
    assert [k for k in state if k.startswith("prior.")] == ["prior.pseudo_input_logits"]
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in vae.parameters())
    # One optimiser step moves the pseudo-inputs and the encoder.
    x = (torch.rand(16, 1, 28, 28) > 0.5).float()
    optimizer = vae.configure_optimizers()
    before = vae.prior.pseudo_input_logits.detach().clone()
    terms = vae(x)
    terms.loss.mean().backward()
    assert all(torch.isfinite(t).all() for t in (terms.loss, terms.kl, terms.elbo))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())
    optimizer.step()
    assert not torch.equal(before, vae.prior.pseudo_input_logits)
    # init=gray: every pseudo-input near 0.5, a little apart; a wrong option names its key.
    gray = make_vae(*SMALL_VAMP, "model.prior.init=gray").prior.pseudo_inputs
    assert (gray - 0.5).abs().max() < 0.02 and gray.std() > 0
    with pytest.raises(VAEUserError, match=r"model\.prior\.init='zeros' must be one of \['uniform', 'gray'\]"):
        make_vae(*SMALL_VAMP, "model.prior.init=zeros")


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_a_vamp_checkpoint_gives_back_the_same_prior(tmp_path):
    torch.manual_seed(0)
    vae = make_vae(*SMALL_VAMP)
    x = (torch.rand(32, 1, 28, 28) > 0.5).float()
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(vae, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=16))
    trainer.save_checkpoint(tmp_path / "vamp.ckpt")
    z = torch.randn(6, 3, 4)
    expected = vae.prior.log_prob(z).detach()

    torch.manual_seed(123)  # other initial weights and pseudo-inputs, which the checkpoint must replace
    assert not torch.allclose(make_vae(*SMALL_VAMP).prior.log_prob(z), expected)
    loaded = load_model(tmp_path / "vamp.ckpt")
    assert isinstance(loaded.prior, VampPrior)
    torch.testing.assert_close(loaded.prior.log_prob(z), expected, atol=0, rtol=0)


# -- two stochastic layers: parts and shapes ------------------------------------------------------------

def _two_layer_parts(lower_dim=3, top_dim=2, hidden_dims=(5,), data_shape=(6,)):
    posterior = TwoLayerPosterior(top_dim, lower_dim=lower_dim, hidden_dims=list(hidden_dims))
    prior = TwoLayerPrior(top_dim, posterior, hidden_dims=list(hidden_dims))
    decoder = TwoLayerDecoder(top_dim, data_shape, posterior, hidden_dims=list(hidden_dims))
    return posterior, prior, decoder


def test_the_two_layer_parts_keep_the_contracts():
    torch.manual_seed(0)
    posterior, prior, decoder = _two_layer_parts()
    assert posterior.latent_dim == prior.latent_dim == 5 and posterior.layer_dims == (3, 2)
    assert posterior.num_params == 6
    q = posterior(torch.randn(4, 6))
    assert isinstance(q, TwoLayerGaussian) and q.mean.shape == (4, 5)
    z = q.rsample(7)
    assert z.shape == (7, 4, 5) and q.log_prob(z).shape == (7, 4)
    assert q.log_prob(z[:, None]).shape == (7, 1, 4)  # leading dims broadcast
    # rsample_and_log_prob: the samples of rsample for the same generator, and their density.
    z_a = q.rsample(3, generator=torch.Generator().manual_seed(1))
    z_b, log_q = q.rsample_and_log_prob(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z_a, z_b)
    torch.testing.assert_close(log_q, q.log_prob(z_b))
    # No closed-form KL: the objective estimates it.
    assert q.kl(prior) is None and ELBO().check(q, prior) == "monte_carlo"
    # The prior: densities of [..., D], ancestral samples, reproducible with a generator.
    assert prior.log_prob(z).shape == (7, 4)
    draws = prior.sample(11, generator=torch.Generator().manual_seed(2))
    assert draws.shape == (11, 5)
    assert torch.equal(draws, prior.sample(11, generator=torch.Generator().manual_seed(2)))
    # The decoder reads z1 only.
    out = decoder(z)
    assert out.shape == (7, 4, 6)
    z_other = z.clone()
    z_other[..., 3:] = torch.randn(7, 4, 2)
    assert torch.equal(decoder(z_other), out)
    # Per-layer means and active units.
    mean_z1, mean_z2 = q.layer_means
    assert torch.equal(mean_z1, q.lower.loc) and mean_z2.shape == (4, 2)
    assert active_units_per_layer(torch.tensor([0.5, 0.0, 0.02, 0.005, 1.0]), (3, 2)) == [2, 1]


def test_the_two_layer_prior_and_decoder_ask_for_the_two_layer_posterior():
    with pytest.raises(VAEUserError, match=r"model\.prior\._target_=.*TwoLayerPrior.*two-layer posterior"):
        make_vae("model/prior=two_layer")
    with pytest.raises(VAEUserError, match=r"model\.decoder\._target_=.*TwoLayerDecoder.*two-layer posterior"):
        make_vae("model=two_layer", "model/posterior=diagonal_gaussian")


# -- two stochastic layers: a linear Gaussian model with exact answers ---------------------------------

@dataclass
class TwoLayerLinearGaussian:
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, s1^2 I), x | z1 ~ N(W z1 + b, s^2 I):

        log p(x) = log N(x; W a + b, W (A A^T + s1^2 I) W^T + s^2 I).

    A has one non-zero entry per column and at most one per row (a scaled, signed partial permutation)
    and W orthogonal columns, so that A A^T, A^T A and W^T W are diagonal: then the exact p(z1|x) and
    p(z2|z1) are diagonal Gaussians, linear in their inputs, and the two-layer posterior holds them exactly.
    """

    A: torch.Tensor  # [d1, d2]
    a: torch.Tensor  # [d1]
    s1: float
    W: torch.Tensor  # [D, d1]
    b: torch.Tensor  # [D]
    s: float

    @classmethod
    def make(cls, data_dim=6, lower_dim=3, top_dim=2, s1=0.6, s=0.5, seed=0) -> "TwoLayerLinearGaussian":
        g = torch.Generator().manual_seed(seed)
        A = torch.zeros(lower_dim, top_dim, dtype=torch.float64)
        rows = torch.randperm(lower_dim, generator=g)[:top_dim]
        A[rows, torch.arange(top_dim)] = torch.linspace(0.8, 1.6, top_dim, dtype=torch.float64) * torch.tensor(
            [1.0, -1.0] * top_dim, dtype=torch.float64)[:top_dim]
        Q, _ = torch.linalg.qr(torch.randn(data_dim, lower_dim, generator=g, dtype=torch.float64))
        W = Q * torch.linspace(0.7, 1.8, lower_dim, dtype=torch.float64)
        return cls(A, 0.5 * torch.randn(lower_dim, generator=g, dtype=torch.float64), s1, W,
                   torch.randn(data_dim, generator=g, dtype=torch.float64), s)

    @property
    def lower_cov(self) -> torch.Tensor:
        """The covariance of z1 under the prior: A A^T + s1^2 I: [d1, d1]."""
        return self.A @ self.A.T + self.s1**2 * torch.eye(self.A.shape[0], dtype=self.A.dtype)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.lower_cov @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=x.dtype)
        return MultivariateNormal(self.W @ self.a + self.b, cov).log_prob(x)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z2 = torch.randn(n, self.A.shape[1], generator=g, dtype=torch.float64)
        z1 = z2 @ self.A.T + self.a + self.s1 * torch.randn(n, self.A.shape[0], generator=g, dtype=torch.float64)
        return z1 @ self.W.T + self.b + self.s * torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)

    def exact_lower(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(z1|x) = N(F x + f, diag v): (F [d1, D], f [d1], v [d1])."""
        precision = torch.linalg.inv(self.lower_cov) + self.W.T @ self.W / self.s**2  # diagonal here
        cov = torch.linalg.inv(precision)
        F = cov @ self.W.T / self.s**2
        f = cov @ (torch.linalg.solve(self.lower_cov, self.a) - self.W.T @ self.b / self.s**2)
        return F, f, torch.diagonal(cov)

    def exact_upper(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(z2|z1) = N(G z1 + g, diag v) (x adds nothing once z1 is known): (G [d2, d1], g [d2], v [d2])."""
        precision = torch.eye(self.A.shape[1], dtype=self.A.dtype) + self.A.T @ self.A / self.s1**2  # diagonal
        cov = torch.linalg.inv(precision)
        G = cov @ self.A.T / self.s1**2
        return G, -G @ self.a, torch.diagonal(cov)


def _set_gaussian_layer(net: torch.nn.Sequential, weight, bias, variance) -> None:
    """A linear Gaussian layer (``hidden_dims=[]``): mean = weight h + bias, a constant variance."""
    (linear,) = net
    with torch.no_grad():
        linear.weight.copy_(torch.cat([weight, torch.zeros_like(weight)]))
        linear.bias.copy_(torch.cat([bias, variance.log()]))


def _linear_two_layer_vae(model: TwoLayerLinearGaussian, num_samples: int = 1) -> VAE:
    """A VAE of the two-layer parts with linear maps: the generative ones exactly the model's, the
    inference ones its exact conditionals."""
    (data_dim, lower_dim), top_dim = model.W.shape, model.A.shape[1]
    posterior = TwoLayerPosterior(top_dim, lower_dim=lower_dim, hidden_dims=[])
    prior = TwoLayerPrior(top_dim, posterior, hidden_dims=[])
    decoder = TwoLayerDecoder(top_dim, [data_dim], posterior, hidden_dims=[])
    encoder = torch.nn.Sequential(torch.nn.Linear(data_dim, 2 * lower_dim))
    _set_gaussian_layer(encoder, *model.exact_lower())
    _set_gaussian_layer(posterior.upper.net, *model.exact_upper())
    _set_gaussian_layer(prior.lower.net, model.A, model.a, torch.full((lower_dim,), model.s1**2, dtype=torch.float64))
    with torch.no_grad():
        decoder.net[0].weight.copy_(model.W)
        decoder.net[0].bias.copy_(model.b)
    return VAE(encoder=encoder, decoder=decoder, posterior=posterior, prior=prior,
               likelihood=Gaussian([data_dim], sigma=model.s), objective=IWAE(num_samples), input_shape=(data_dim,))


@pytest.mark.usefixtures("float64")
def test_the_two_layer_densities_are_the_closed_form_joint_gaussians():
    """With linear conditionals (random weights, constant variances) q(z1, z2 | x) and p(z1, z2) are joint
    Gaussians with closed-form means and covariances: the parts' log-densities must be theirs."""
    d1, d2 = 3, 2
    posterior, prior, _ = _two_layer_parts(lower_dim=d1, top_dim=d2, hidden_dims=())
    G, g, v2 = torch.randn(d2, d1), torch.randn(d2), torch.rand(d2) + 0.2  # q(z2|z1) = N(G z1 + g, diag v2)
    A, a, v1 = torch.randn(d1, d2), torch.randn(d1), torch.rand(d1) + 0.2  # p(z1|z2) = N(A z2 + a, diag v1)
    _set_gaussian_layer(posterior.upper.net, G, g, v2)
    _set_gaussian_layer(prior.lower.net, A, a, v1)
    params = torch.randn(4, 2 * d1)  # q(z1|x) = N(m, diag exp(logvar)) for 4 examples
    q = posterior(params)
    z = 1.5 * torch.randn(6, 4, d1 + d2)

    m, var = params[:, :d1], params[:, d1:].exp()  # [B, d1]
    V = torch.diag_embed(var)  # [B, d1, d1]
    q_mean = torch.cat([m, m @ G.T + g], dim=-1)
    q_cov = torch.cat([torch.cat([V, V @ G.T], -1), torch.cat([G @ V, G @ V @ G.T + torch.diag(v2)], -1)], -2)
    torch.testing.assert_close(q.log_prob(z), MultivariateNormal(q_mean, q_cov).log_prob(z), atol=1e-10, rtol=0)
    _, log_q = q.rsample_and_log_prob(5)
    assert log_q.shape == (5, 4)

    p_mean = torch.cat([a, torch.zeros(d2)])
    p_cov = torch.cat([torch.cat([A @ A.T + torch.diag(v1), A], -1), torch.cat([A.T, torch.eye(d2)], -1)], -2)
    torch.testing.assert_close(prior.log_prob(z), MultivariateNormal(p_mean, p_cov).log_prob(z), atol=1e-10, rtol=0)
    # Ancestral samples have the joint's moments.
    draws = prior.sample(400_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), p_mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), p_cov, atol=0.05, rtol=0.02)


@pytest.mark.usefixtures("float64")
def test_at_the_exact_conditionals_every_importance_weight_is_p_x():
    model = TwoLayerLinearGaussian.make()
    vae = _linear_two_layer_vae(model)
    x = model.sample_x(5)
    q = vae.encode(x)
    z, log_q = q.rsample_and_log_prob(7)  # [7, 5, 5], [7, 5]
    log_w = log_importance_weights(x, z, q, vae.decoder, vae.prior, vae.likelihood, log_q)
    torch.testing.assert_close(log_w, model.log_px(x).expand(7, -1), atol=1e-10, rtol=0)
    torch.testing.assert_close(vae.log_px(x, num_samples=10), model.log_px(x), atol=1e-10, rtol=0)
    terms = vae(x)
    torch.testing.assert_close(terms.elbo, model.log_px(x), atol=1e-10, rtol=0)


@pytest.mark.usefixtures("float64")
def test_away_from_the_exact_conditionals_the_two_layer_iwae_bound_rises_with_k_towards_log_p_x():
    model = TwoLayerLinearGaussian.make()
    vae = _linear_two_layer_vae(model)
    # An inference network off the exact conditionals: shifted means and wider variances for z1 and z2,
    # and a wrong slope for z2 (wider than exact keeps the importance weights' variance finite).
    with torch.no_grad():
        vae.encoder[0].bias += torch.tensor([0.15] * 3 + [0.5] * 3)
        vae.posterior.upper.net[0].weight[:2] += 0.15 * torch.randn(2, 3)
        vae.posterior.upper.net[0].bias[2:] += 0.5
    x = model.sample_x(4)
    log_px = model.log_px(x)
    torch.manual_seed(0)
    bounds, errors = [], []
    for k, reps in ((1, 20_000), (10, 4_000), (100, 1_000), (1000, 100)):  # L_K averaged over many draws
        vae.objective = IWAE(k)
        values = vae(x.repeat(reps, 1)).iwae.view(reps, -1)  # [reps, B]
        bounds.append(values.mean(0))
        errors.append(values.std(0) / math.sqrt(reps))
    for lower, upper, e_lower, e_upper in zip(bounds[:3], bounds[1:3], errors, errors[1:]):  # K = 1, 10, 100
        assert (upper - lower > 4 * torch.sqrt(e_lower**2 + e_upper**2)).all(), (lower, upper)
    assert (log_px - bounds[0] > 0.5).all()  # far from log p(x) at K = 1, so rising means something
    # L_K stays below log p(x) and reaches it: at K = 1000 within its sampling error and a bias of 0.01.
    gap = log_px - bounds[-1]
    assert (gap > -4 * errors[-1]).all() and (gap < 0.01 + 4 * errors[-1]).all(), (gap, errors[-1])


# -- two stochastic layers: the preset --------------------------------------------------------------------

def test_the_two_layer_preset_builds_and_trains_a_step_with_every_parameter():
    torch.manual_seed(0)
    small = ("model=two_layer", "model.encoder.hidden_dims=[16]", "model.posterior.lower_dim=6", "model.latent_dim=3",
             "model.posterior.hidden_dims=[8]", "model.prior.hidden_dims=[8]", "objective=iwae",
             "objective.num_samples=3")
    vae = make_vae(*small)
    assert vae.latent_dim == 9 and vae.kl_estimator == "monte_carlo"
    assert isinstance(vae.decoder, TwoLayerDecoder) and isinstance(vae.prior, TwoLayerPrior)
    x = (torch.rand(8, 1, 28, 28) > 0.5).float()
    optimizer = vae.configure_optimizers()
    terms = vae(x)
    assert all(torch.isfinite(t).all() for t in (terms.loss, terms.kl, terms.elbo, terms.iwae))
    terms.loss.mean().backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    optimizer.step()
    log_px = vae.log_px(x, num_samples=20)
    assert log_px.shape == (8,) and torch.isfinite(log_px).all()
    # val/active_units counts both layers; by layer it splits as z1 (first 6) and z2 (last 3).
    activity = LatentActivity(vae.latent_dim)
    activity.update(vae.encode(x).mean)
    result = activity.compute()
    assert sum(active_units_per_layer(result["variance"], vae.posterior.layer_dims)) == result["active_units"]


def test_one_activation_switch_sets_every_network_of_the_two_layer_model():
    """model.encoder.activation sets the q(z2|z1) and p(z1|z2) networks too, as it sets the decoder's."""
    default = make_vae("model=two_layer")
    relu = make_vae("model=two_layer", "model.encoder.activation=relu")
    for vae, kind in ((default, torch.nn.Tanh), (relu, torch.nn.ReLU)):
        for name in ("encoder", "decoder", "posterior", "prior"):
            activations = {type(m) for m in getattr(vae, name).modules() if isinstance(m, (torch.nn.Tanh, torch.nn.ReLU))}
            assert activations == {kind}, (name, activations)


def test_burda_with_model_two_layer_composes_to_100_plus_50_and_trains(fake_mnist, tmp_path):
    from vae_lightning.run import resolve, train

    config = compose_run("+experiment=burda", "model=two_layer", "logger=none", "callbacks=none",
                         f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}", "data.val_size=100",
                         "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                         "trainer.limit_test_batches=2", "objective.num_samples=5", "eval.nll_samples=10",
                         "+trainer.enable_progress_bar=false")
    assert config.model.posterior.lower_dim == 100 and config.model.latent_dim == 50
    vae = VAE.from_config(resolve(config), (1, 28, 28))
    assert vae.latent_dim == 150 and vae.posterior.layer_dims == (100, 50)
    assert isinstance(vae.prior, TwoLayerPrior) and isinstance(vae.decoder, TwoLayerDecoder)
    assert make_vae("model=two_layer").posterior.layer_dims == (100, 50)  # the preset alone: the same sizes
    metrics = train(config)
    assert metrics["steps"] == 3 and metrics["kl_estimator"] == "monte_carlo"
    assert all(math.isfinite(metrics[k]) for k in ("test/elbo", "test/iwae", "test/nll"))


def test_a_two_layer_model_logs_its_active_units_per_layer(fake_mnist, tmp_path):
    from vae_lightning.data import MNISTDataModule

    vae = make_vae("model=two_layer", "model.encoder.hidden_dims=[16]")
    dm = MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100, download=False)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(vae, dm)
    logged = trainer.callback_metrics
    z1, z2 = logged["val/active_units/z1"], logged["val/active_units/z2"]
    assert 0 <= z1 <= 100 and 0 <= z2 <= 50 and z1 + z2 == logged["val/active_units"]
    assert "val/active_units/z1" not in _one_layer_metrics(fake_mnist, tmp_path)  # only where there are layers


def _one_layer_metrics(fake_mnist, tmp_path):
    from vae_lightning.data import MNISTDataModule

    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(make_vae("model.encoder.hidden_dims=[16]"),
                MNISTDataModule(data_dir=fake_mnist, val_size=100, batch_size=100, download=False))
    return trainer.callback_metrics


def test_the_vamp_prior_of_diagonal_gaussians_is_exact_in_float32_near_narrow_components():
    """The matrix-product form of the diagonal mixture, in float32 inputs, against the direct float64
    mixture, where z sits on components with sigma = 0.01 (the cancellation the float64 sums avoid)."""
    from vae_lightning.priors.vamp import _diagonal_mixture_log_prob

    torch.manual_seed(0)
    loc, logvar = 3 * torch.randn(40, 6, dtype=torch.float64), torch.full((40, 6), 2 * math.log(0.01), dtype=torch.float64)
    z = loc[:7] + 0.01 * torch.randn(7, 6, dtype=torch.float64)
    direct = Normal(loc, (0.5 * logvar).exp()).log_prob(z[:, None]).sum(-1).logsumexp(-1) - math.log(40)
    fast = _diagonal_mixture_log_prob(z.float(), loc.float(), logvar.float())
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), direct, atol=2e-3, rtol=0)  # float32 inputs' own rounding
