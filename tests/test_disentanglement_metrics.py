"""Disentanglement metrics: each against a case worked out by hand, and the whole set on encoders whose
answer is known: the true factors (disentangled), a rotation of them (entangled), and noise."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from vae_lightning.disentanglement import (
    beta_vae_score,
    dci_completeness,
    dci_disentanglement,
    discrete_mutual_info,
    discretize,
    evaluate_disentanglement,
    factor_vae_score,
    gaussian_total_correlation,
    gaussian_wasserstein_correlation,
    latent_mutual_info,
    mig_from_codes,
    modularity,
    mutual_info_matrix,
    sap_from_codes,
    sap_score_matrix,
    unsupervised_from_codes,
)
from vae_lightning.disentanglement.metrics import beta_vae_features, majority_vote_accuracy, roc_auc

#: Small samples, so the whole set runs in well under a second per encoder.
SMALL = {"num_points": 2000, "num_test": 1000, "dci_train": 1000, "dci_test": 1000, "dci_n_estimators": 10,
         "vote_num_train": 300, "vote_num_eval": 200, "variance_points": 1000}


class GridFactors:
    """Data with known factors whose image is the factor vector itself: uint8 [n, 1, 1, F]."""

    def __init__(self, factor_sizes):
        self.factor_sizes = tuple(factor_sizes)
        self.factor_names = tuple(f"f{k}" for k in range(len(factor_sizes)))
        self.num_factors = len(factor_sizes)

    def sample_factors(self, num, generator):
        return torch.stack([torch.randint(size, (num,), generator=generator) for size in self.factor_sizes], dim=1)

    def sample_with_fixed_factor(self, num, factor, generator, value=None):
        factors = self.sample_factors(num, generator)
        if value is None:
            value = int(torch.randint(self.factor_sizes[factor], (1,), generator=generator))
        factors[:, factor] = value
        return factors

    def images_from_factors(self, factors):
        return factors.to(torch.uint8)[:, None, None, :]


def true_factors(data, noise=0.01, seed=0):
    """An encoder that returns each factor scaled to [0, 1], plus a little noise: z_k = v_k / (size_k - 1)."""
    generator = torch.Generator().manual_seed(seed)
    top = (torch.tensor(data.factor_sizes) - 1).clamp_min(1)

    def represent(images):
        values = images[:, 0, 0, :].double() / top
        return values + noise * torch.randn(values.shape, generator=generator, dtype=torch.float64)

    return represent


def rotated(represent):
    """The same codes centred and mixed by a 4 x 4 rotation that spreads every factor over every latent."""
    hadamard = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64) / 2
    return lambda images: (represent(images) - 0.5) @ hadamard


def noise_codes(latent_dim=4, seed=0):
    """An encoder that ignores the images."""
    generator = torch.Generator().manual_seed(seed)
    return lambda images: torch.randn(len(images), latent_dim, generator=generator, dtype=torch.float64)


def switch_after(num_images, first, then):
    """An encoder that is ``first`` for the first ``num_images`` images it sees and ``then`` after."""
    seen = 0

    def represent(images):
        nonlocal seen
        seen += len(images)
        return first(images) if seen <= num_images else then(images)

    return represent


@pytest.fixture(scope="module")
def data():
    return GridFactors((3, 4, 5, 6))


@pytest.fixture(scope="module")
def scores(data):
    """The whole set on the three encoders, computed once for the tests that compare them."""
    encoders = {"true": true_factors(data), "rotated": rotated(true_factors(data)), "noise": noise_codes()}
    return {name: evaluate_disentanglement(represent, data, torch.Generator().manual_seed(1), SMALL)
            for name, represent in encoders.items()}


# -- the whole set on known encoders ------------------------------------------------------

def test_true_factors_score_near_one(scores):
    # Factors of at most 20 values fall in separate bins, so the top latent knows all of H(v);
    # 0.05 allows for the positive bias of the others' discrete MI at 2000 points.
    true = scores["true"]
    assert true["mig"] > 0.95
    assert true["dci_d"] > 0.95 and true["dci_c"] > 0.95 and true["dci_i"] > 0.95
    assert true["factor_vae"] == 1.0
    assert true["beta_vae"] > 0.95
    assert true["modularity"] > 0.95
    assert true["explicitness"] > 0.95


def test_rotation_lowers_the_scores(scores):
    # The rotation gives every latent an equal share of every factor: the scores that ask for one
    # latent per factor fall to about what noise gets.
    mixed = scores["rotated"]
    assert mixed["mig"] < 0.1
    assert mixed["dci_d"] < 0.1 and mixed["dci_c"] < 0.1
    assert mixed["factor_vae"] < 0.4
    assert mixed["beta_vae"] < 0.6
    assert mixed["modularity"] < 0.6
    # It keeps what the codes know: a classifier on all latents still reads the factors.
    assert mixed["explicitness"] > 0.95


def test_codes_independent_of_the_factors_score_near_zero(scores):
    noise = scores["noise"]
    assert noise["mig"] < 0.05
    assert noise["sap"] < 0.05
    assert noise["dci_d"] < 0.1
    # The majority vote on independent votes is right by chance: 1 / F = 0.25, give or take 3 standard errors.
    assert abs(noise["factor_vae"] - 0.25) < 0.1
    assert noise["beta_vae"] < 0.4
    assert abs(noise["explicitness"] - 0.5) < 0.05


def test_all_keys_are_floats(scores):
    expected = {"mig", "sap", "dci_d", "dci_c", "dci_i", "dci_i_train", "beta_vae", "beta_vae_train", "factor_vae",
                "factor_vae_train", "factor_vae_active", "modularity", "explicitness", "explicitness_train",
                "gaussian_tc", "gaussian_wasserstein_corr", "gaussian_wasserstein_corr_norm", "mutual_info"}
    assert set(scores["true"]) == expected
    assert all(type(value) is float and math.isfinite(value) for value in scores["true"].values())


# -- discrete information and MIG ----------------------------------------------------------

def test_discretize_cuts_each_latent_into_equal_bins():
    codes = np.array([[0.0, 3.0], [0.5, 3.0], [0.74, 3.0], [1.0, 3.0]])
    binned = discretize(codes, num_bins=4)
    assert binned[:, 0].tolist() == [1, 3, 3, 4]  # the maximum lands in the last bin
    assert len(set(binned[:, 1])) == 1  # a constant latent: one bin


def test_discrete_mutual_info_is_sklearns():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(300, 2))
    b = np.stack([a[:, 0] // 2, rng.integers(0, 3, size=300)], axis=1)
    expected = [[mutual_info_score(y, x) for y in b.T] for x in a.T]
    np.testing.assert_allclose(discrete_mutual_info(a, b), expected, atol=1e-12)


def test_mig_by_hand():
    # latent 0 is factor 0; latent 1 agrees with factor 0 on 3 of 4 points and is independent of factor 1,
    # as is latent 0. I(z1; v0) = 2 (3/8) log(3/2) + 2 (1/8) log(1/2); every other pair but (z0, v0) is 0.
    v0 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    v1 = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    z1 = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    codes, factors = np.stack([v0, z1], axis=1).astype(float), np.stack([v0, v1], axis=1)
    i_z1_v0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    np.testing.assert_allclose(mutual_info_matrix(codes, factors), [[math.log(2), 0.0], [i_z1_v0, 0.0]], atol=1e-12)
    # Factor 0's gap is (log 2 - I(z1; v0)) / log 2; factor 1's is 0.
    assert mig_from_codes(codes, factors) == pytest.approx(0.5 * (math.log(2) - i_z1_v0) / math.log(2))


def test_mig_skips_a_factor_of_one_value_and_handles_few_points():
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, 3, 5), np.zeros(5, dtype=int)], axis=1)
    codes = np.stack([factors[:, 0], rng.normal(size=5)], axis=1)
    # 5 points, 20 bins: only factor 0 counts, and latent 0 holds all of it.
    assert mig_from_codes(codes, factors) == pytest.approx(1 - mutual_info_matrix(codes, factors)[1, 0]
                                                           / mutual_info_score(factors[:, 0], factors[:, 0]))
    with pytest.raises(ValueError, match="take more than one value"):
        mig_from_codes(codes, np.zeros((5, 2), dtype=int))
    with pytest.raises(ValueError, match="D >= 2"):
        mig_from_codes(codes[:, :1], factors)
    with pytest.raises(ValueError, match="NaN"):
        mig_from_codes(np.full((5, 2), np.nan), factors)


# -- SAP -----------------------------------------------------------------------------------

def test_sap_by_hand():
    # Every combination of two balanced binary factors and a flip u in 0..3, 25 times: latent 0 is factor 0,
    # latent 1 factor 1, latent 2 factor 0 flipped when u = 0 (right on 3/4 of the points). Within each value
    # of a latent the other factor is exactly balanced, so any classifier of it scores 1/2.
    v0, v1, u = (a.ravel() for a in np.meshgrid([0, 1], [0, 1], [0, 1, 2, 3], indexing="ij"))
    v0, v1, u = np.tile(v0, 25), np.tile(v1, 25), np.tile(u, 25)
    codes = 2.0 * np.stack([v0, v1, v0 ^ (u == 0)], axis=1) - 1
    factors = np.stack([v0, v1], axis=1)
    np.testing.assert_allclose(sap_score_matrix(codes, factors, codes, factors), [[1, 0.5], [0.5, 1], [0.75, 0.5]])
    # Factor 0: 1 - 0.75; factor 1: 1 - 0.5.
    assert sap_from_codes(codes, factors, codes, factors) == pytest.approx(0.375)
    # Scored on the test points: with latent 0 negated there, it gets factor 0 always wrong.
    negated = codes * np.array([-1.0, 1.0, 1.0])
    assert sap_score_matrix(codes, factors, negated, factors)[0, 0] == 0.0


def test_sap_regularises_as_strongly_as_the_reference():
    # C = 0.01 on 12 points: one-vs-rest lines too flat to carve out the middle of a 3-valued factor, so
    # even a latent equal to the factor reads only 2 of its 3 values.
    factors = np.array([[0, 0], [1, 1], [2, 0]] * 4)
    codes = 10.0 * factors
    assert sap_score_matrix(codes, factors, codes, factors)[0, 0] == pytest.approx(2 / 3)


# -- DCI -----------------------------------------------------------------------------------

def test_dci_by_hand():
    # Latent 0 splits its importance between both factors (entropy 1 bit: scores 0), latent 1 serves
    # factor 1 alone (1); they hold 2/5 and 3/5 of the importance. Factor 0 has one latent (1); factor 1
    # spreads 1:3 over the latents, 1 - H2(1/4, 3/4), and holds 4/5 of the importance.
    importance = np.array([[1.0, 1.0], [0.0, 3.0]])
    h = -(1 / 4 * math.log2(1 / 4) + 3 / 4 * math.log2(3 / 4))
    assert dci_disentanglement(importance) == pytest.approx(0.6, abs=1e-9)
    assert dci_completeness(importance) == pytest.approx(0.2 + 0.8 * (1 - h), abs=1e-9)
    assert dci_disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-9)
    assert dci_disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-9)
    # No importance at all: every latent weighs the same and every row is uniform.
    assert dci_disentanglement(np.zeros((2, 2))) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="F >= 2"):
        dci_disentanglement(np.ones((3, 1)))


# -- modularity and explicitness -----------------------------------------------------------

def test_modularity_by_hand():
    # Per latent, 1 - (sum of squares but the largest) / (largest square * (F - 1)): one factor only (1);
    # equal on all three (1 - 0.5 / 0.5 = 0); 0.6, 0.3, 0 (1 - 0.09 / 0.72); no information (0, as the
    # reference).
    mi = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.6, 0.3, 0.0], [0.0, 0.0, 0.0]])
    assert modularity(mi) == pytest.approx((1 + 0 + 0.875 + 0) / 4)


def test_roc_auc_by_hand():
    # Of the 4 (positive, negative) pairs 3 are ordered right; a tie counts half.
    positive = np.array([True, False, True, False])
    assert roc_auc(positive, np.array([0.9, 0.8, 0.3, 0.1])) == pytest.approx(0.75)
    assert roc_auc(positive, np.array([0.9, 0.9, 0.3, 0.1])) == pytest.approx(0.625)


# -- β-VAE and FactorVAE ----------------------------------------------------------------------

def test_beta_vae_features_vanish_on_the_fixed_factor(data):
    represent = true_factors(data, noise=0.0)
    features, labels = beta_vae_features(represent, data, torch.Generator().manual_seed(0), 50, group_size=8)
    assert features.shape == (50, 4) and set(labels) <= {0, 1, 2, 3}
    assert (features[np.arange(50), labels] == 0).all()
    others = np.ones_like(features, dtype=bool)
    others[np.arange(50), labels] = False
    assert (features[others] > 0).all()


def test_majority_vote_by_hand():
    # Latent 0 mostly votes for factor 0 (3 of 5), latent 1 for factor 1 (4 of 5): 7 of 10 votes right.
    votes = np.array([[3, 1], [0, 4], [2, 0]])
    assert majority_vote_accuracy(votes, votes.argmax(axis=0)) == pytest.approx(0.7)


def test_scores_that_fix_a_factor_never_fix_one_of_size_one():
    data = GridFactors((1, 4, 5))
    represent = true_factors(data)
    generator = torch.Generator().manual_seed(0)
    # Latent 0 is constant: pruned, so two latents vote and each is right.
    factor_vae = factor_vae_score(represent, data, generator, num_train=100, num_eval=100, num_variance=500)
    assert factor_vae == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active": 2}
    assert beta_vae_score(represent, data, generator, num_train=100, num_eval=100)["eval_accuracy"] == 1.0
    with pytest.raises(ValueError, match="at least 2 factors"):
        beta_vae_score(represent, GridFactors((1, 4)), generator, num_train=10, num_eval=10)


def test_eval_accuracies_come_from_fresh_groups(data):
    # True factors while the training groups are encoded, noise for the evaluation groups: the
    # classifiers fitted on the first are right on them and at chance on the second.
    generator = torch.Generator().manual_seed(0)
    training = 100 * 2 * 64  # 100 points of 64 pairs
    beta_vae = beta_vae_score(switch_after(training, true_factors(data), noise_codes()), data, generator,
                              num_train=100, num_eval=200)
    assert beta_vae["train_accuracy"] == 1.0 and beta_vae["eval_accuracy"] < 0.5
    training = 1000 + 100 * 64  # the variance estimate and 100 groups of 64
    factor_vae = factor_vae_score(switch_after(training, true_factors(data), noise_codes()), data, generator,
                                  num_train=100, num_eval=200, num_variance=1000)
    assert factor_vae["train_accuracy"] == 1.0 and factor_vae["eval_accuracy"] < 0.5


def test_factor_vae_divides_by_the_global_variances(data):
    # Latents on scales from 0.5 to 100 (none pruned): fixing factor 0 still shrinks latent 0 the most
    # relative to its spread, though its variance stays above the others'.
    scales = torch.tensor([100.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    represent = true_factors(data)
    out = factor_vae_score(lambda images: represent(images) * scales, data, torch.Generator().manual_seed(0),
                           num_train=100, num_eval=100, num_variance=1000)
    assert out["eval_accuracy"] == 1.0


def test_factor_vae_prunes_latents_by_their_standard_deviation():
    # Latent 0 (of the one-value factor) is pure noise: kept at a deviation of 0.1 >= 0.05 even though its
    # variance, 0.01, is below 0.05, pruned at a deviation of 0.01.
    data = GridFactors((1, 4, 5))
    for noise, active in [(0.1, 3), (0.01, 2)]:
        out = factor_vae_score(true_factors(data, noise), data, torch.Generator().manual_seed(0), num_train=50,
                               num_eval=50, num_variance=2000)
        assert out["num_active"] == active


# -- unsupervised --------------------------------------------------------------------------

@pytest.mark.parametrize("rho", [0.0, 0.5, -0.9])
def test_gaussian_correlations_of_a_bivariate_gaussian(rho):
    # TC = -0.5 log(1 - rho^2), whatever the scales; W2^2 to N(0, I) = 4 - 2 (sqrt(1 + rho) + sqrt(1 - rho)).
    scales = np.array([2.0, 0.5])
    cov = np.array([[1.0, rho], [rho, 1.0]])
    assert gaussian_total_correlation(cov * np.outer(scales, scales)) == pytest.approx(-0.5 * math.log(1 - rho**2))
    expected = 4 - 2 * (math.sqrt(1 + rho) + math.sqrt(1 - rho))
    assert gaussian_wasserstein_correlation(cov) == pytest.approx(expected, abs=1e-12)


def test_unsupervised_scores_of_samples():
    rng = np.random.default_rng(0)
    rho = 0.6
    codes = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=20000)
    codes = np.concatenate([codes, np.full((20000, 1), 7.0)], axis=1)  # a constant latent is left out
    out = unsupervised_from_codes(codes)
    assert out["gaussian_tc"] == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.02)
    assert all(math.isfinite(value) for value in out.values())


def test_latent_mutual_info_by_hand():
    # Latents a, a, b with a and b balanced binary and exactly independent: the off-diagonal pairs hold
    # log 2 twice and 0 four times.
    a, b = np.array([0, 0, 1, 1] * 5), np.array([0, 1, 0, 1] * 5)
    assert latent_mutual_info(np.stack([a, a, b], axis=1).astype(float)) == pytest.approx(math.log(2) / 3)


# -- degenerate inputs and settings --------------------------------------------------------

def test_a_factor_of_one_value_and_a_constant_latent_do_not_crash():
    data = GridFactors((3, 1, 4))
    exact = true_factors(data, noise=0.0)  # latent 1, of the one-value factor, is exactly constant
    out = evaluate_disentanglement(exact, data, torch.Generator().manual_seed(0), SMALL)
    assert all(math.isfinite(value) for value in out.values())
    assert out["mig"] > 0.95 and out["factor_vae_active"] == 2.0


def test_settings_are_checked():
    data = GridFactors((3, 4))
    with pytest.raises(ValueError, match=r"unknown disentanglement setting\(s\) \['num_pionts'\].*num_points"):
        evaluate_disentanglement(true_factors(data), data, torch.Generator(), {"num_pionts": 10})
    with pytest.raises(ValueError, match="dci_n_estimators=0 must be an integer >= 1"):
        evaluate_disentanglement(true_factors(data), data, torch.Generator(), {"dci_n_estimators": 0})
