"""The disentanglement metrics of disentanglement_lib (Locatello et al. 2019), with its definitions and defaults.

Data and representation. ``data`` is any object with the known-factors contract of
``vae_lightning.data.factors.KnownFactors``: ``factor_sizes`` (F of them), ``sample_factors(num, generator)``
(int64 [num, F], uniform over the grid) and ``images_from_factors(factors)`` (uint8 [n, C, H, W]).
``represent`` maps uint8 images [n, C, H, W] to float codes [n, D], usually the mean of q(z|x).
Codes are encoded ``batch_size`` images at a time under ``torch.no_grad()``; the metrics themselves run
on float64 numpy arrays, with scikit-learn where the reference uses it.

Every metric that the reference computes on one sample of (codes, factors) is a ``*_from_codes``
function of arrays: codes [N, D] and integer factors [N, F] (torch tensors or numpy arrays), so tests
and callers can give exact codes; :func:`sample_codes` draws such a sample. The β-VAE and FactorVAE
scores need images drawn with one factor fixed, so they take ``(represent, data, generator)``; they
draw whole groups from ``sample_factors`` and overwrite the fixed factor with one value per group (what
``sample_with_fixed_factor`` does for one group), so that many groups are encoded in one call.
:func:`evaluate_disentanglement` runs them all on shared samples.

Degenerate inputs, one rule each:

- A factor that takes one value in the training sample says nothing a latent could capture and no
  classifier can be fitted to it: MIG, SAP, DCI, modularity and explicitness leave it out and average
  over the other factors. The β-VAE and FactorVAE scores never fix a factor of size 1 (fixing it
  fixes nothing). A ValueError says so when no factor, or fewer than a metric needs, is left.
- A constant latent falls in one bin, so its mutual information with anything is 0; classifiers see a
  feature that does not vary; FactorVAE prunes it; the Gaussian correlations leave it out (a constant
  is independent of everything).
- NaN or infinite codes are a ValueError: no metric has a meaning for them.

Cost, at the reference's sizes (:data:`DEFAULT_SETTINGS`): encoding 2.9 million images (all but 25,000
for the β-VAE and FactorVAE scores), and DCI's gradient-boosted trees, about 340 s on one CPU core for
dSprites' factor sizes (a 40-class factor alone takes 90 s). Everything else takes about 3 s.
:data:`DEFAULT_SETTINGS` shrunk to 2,000 points, 1,000 held out, DCI on 1,000 codes with 5 stages and 300 / 150
vote groups runs the whole set in about 2 s besides encoding 91,000 images; on noisy true factors DCI and
MIG come out within 0.01 and 0.03 of their values at the reference's sizes. The training callback's sizes
are in conf/experiment/dsprites.yaml.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from ..checks import is_int, is_number

Represent = Callable[[torch.Tensor], torch.Tensor]

#: Images per call of ``represent``.
ENCODE_BATCH = 1024


# -- samples of codes ----------------------------------------------------------------------

@torch.no_grad()
def encode_factors(represent: Represent, data, factors: torch.Tensor, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """Codes of the images of ``factors``: int64 [n, F] -> float64 [n, D] on the CPU."""
    chunks = []
    for start in range(0, len(factors), batch_size):
        codes = represent(data.images_from_factors(factors[start : start + batch_size]))
        if codes.dim() != 2:
            raise ValueError(f"represent must return codes [n, D]; it returned a tensor of shape {tuple(codes.shape)}")
        chunks.append(codes.detach().to("cpu", torch.float64))
    return torch.cat(chunks)


def sample_codes(represent: Represent, data, num: int, generator: torch.Generator,
                 batch_size: int = ENCODE_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` factor draws, uniform over the grid, and the codes of their images:
    (codes float64 [num, D], factors int64 [num, F])."""
    factors = data.sample_factors(num, generator)
    return encode_factors(represent, data, factors, batch_size), factors


def draw_fixed_factors(data, num: int, generator: torch.Generator) -> torch.Tensor:
    """The factor to hold fixed in each of ``num`` groups, uniform over the factors of more than one
    value: int64 [num]."""
    eligible = torch.tensor([k for k, size in enumerate(data.factor_sizes) if size > 1])
    if len(eligible) < 2:
        raise ValueError(f"the β-VAE and FactorVAE scores tell factors apart: they need at least 2 factors "
                         f"that take more than one value; the factor sizes are {tuple(data.factor_sizes)}")
    return eligible[torch.randint(len(eligible), (num,), generator=generator, device=generator.device).cpu()]


# -- arrays and fits -----------------------------------------------------------------------

def as_codes(codes) -> np.ndarray:
    """Codes as float64 [N, D], checked: 2-D, at least one row, finite."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be [N, D] with N >= 1, got shape {codes.shape}")
    if not np.isfinite(codes).all():
        raise ValueError("codes contain NaN or infinite values")
    return codes


def as_factors(factors, num_rows: int) -> np.ndarray:
    """Factors as int64 [N, F], checked against the codes' N."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or len(factors) != num_rows:
        raise ValueError(f"factors must be [N, F] with the codes' N = {num_rows}, got shape {factors.shape}")
    return factors.astype(np.int64)


def as_train_test(codes_train, factors_train, codes_test, factors_test) -> tuple[np.ndarray, ...]:
    """A training and a test sample, checked (:func:`as_codes`, :func:`as_factors`) and of the same D and F."""
    codes_train, codes_test = as_codes(codes_train), as_codes(codes_test)
    factors_train, factors_test = as_factors(factors_train, len(codes_train)), as_factors(factors_test, len(codes_test))
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise ValueError(f"training and test samples differ in width: codes {codes_train.shape[1]} and "
                         f"{codes_test.shape[1]}, factors {factors_train.shape[1]} and {factors_test.shape[1]}")
    return codes_train, factors_train, codes_test, factors_test


def informative_factors(factors: np.ndarray) -> np.ndarray:
    """Which factors take more than one value in the sample: bool [F]."""
    return (factors != factors[:1]).any(axis=0)


def require_informative(factors: np.ndarray, least: int = 1) -> np.ndarray:
    """The columns of ``factors`` [N, F] that take more than one value, or a ValueError when fewer than
    ``least`` are left: bool [F]."""
    keep = informative_factors(factors)
    if keep.sum() < least:
        raise ValueError(f"need at least {least} factor(s) that take more than one value in the sample; "
                         f"{int(keep.sum())} of {factors.shape[1]} do (sample more points?)")
    return keep


def seed_from(generator: torch.Generator) -> int:
    """A seed for scikit-learn's estimators, drawn from ``generator``."""
    return int(torch.randint(2**31 - 1, (), generator=generator, device=generator.device))


def small_fits():
    """The context scikit-learn's fits run in: one BLAS thread. Their products are [N, D] by [D, classes]
    with D ~ 10, too small to share, and on a busy 2-core machine threads that waited for each other made
    logistic regression 5-8 times slower."""
    return threadpool_limits(limits=1, user_api="blas")


def logistic_regression(seed: int) -> OneVsRestClassifier:
    """The reference's ``LogisticRegression()`` (β-VAE score, explicitness): scikit-learn's defaults of
    2019, one binary model per class fitted by liblinear (C = 1). Today's default, one multinomial model
    fitted by L-BFGS, reads explicitness about 0.03 higher on dSprites-like codes."""
    return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=seed))


# -- discrete information ------------------------------------------------------------------

def discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Each latent cut into ``num_bins`` equal-width bins between its minimum and maximum, as the
    reference's histogram discretiser: float [N, D] -> int64 bin indices [N, D] in 1 .. num_bins.
    A constant latent falls in one bin."""
    codes = as_codes(codes)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    binned = np.empty(codes.shape, dtype=np.int64)
    for d, column in enumerate(codes.T):
        # The left edges only, so the maximum lands in the last bin, not one past it.
        binned[:, d] = np.digitize(column, np.histogram_bin_edges(column, num_bins)[:-1])
    return binned


def as_labels(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Any discrete values [N] as labels 0 .. k - 1 [N], and k."""
    unique, labels = np.unique(values, return_inverse=True)
    return labels.ravel(), len(unique)


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two discrete variables from their empirical joint distribution: [N], [N] -> float.
    The same as scikit-learn's ``mutual_info_score``, which the reference calls."""
    (a, size_a), (b, size_b) = as_labels(a), as_labels(b)
    joint = np.bincount(a * size_b + b, minlength=size_a * size_b).reshape(size_a, size_b) / len(a)
    outer = np.outer(joint.sum(1), joint.sum(0))
    seen = joint > 0
    # Round-off can leave a tiny negative value for independent variables.
    return max(0.0, float(np.sum(joint[seen] * (np.log(joint[seen]) - np.log(outer[seen])))))


def discrete_mutual_info(codes_discrete, factors) -> np.ndarray:
    """I(z_d; v_k) in nats for every discretised latent d and factor k: [N, D], [N, F] -> [D, F]."""
    codes_discrete, factors = np.asarray(codes_discrete), np.asarray(factors)
    return np.array([[mutual_info(z, v) for v in factors.T] for z in codes_discrete.T]).reshape(
        codes_discrete.shape[1], factors.shape[1])


def discrete_entropy(factors) -> np.ndarray:
    """H(v_k) in nats of each factor's empirical distribution: [N, F] -> [F]."""
    factors = np.asarray(factors)
    entropies = []
    for column in factors.T:
        p = np.bincount(as_labels(column)[0]) / len(column)
        entropies.append(float(-np.sum(p * np.log(p))))
    return np.array(entropies)


def mutual_info_matrix(codes, factors, num_bins: int = 20) -> np.ndarray:
    """I(z_d; v_k) in nats of each latent, discretised into ``num_bins`` bins, with each factor:
    [N, D], [N, F] -> [D, F]. The matrix MIG and modularity read, and the one to draw as a heat map."""
    codes = as_codes(codes)
    return discrete_mutual_info(discretize(codes, num_bins), as_factors(factors, len(codes)))


# -- MIG -----------------------------------------------------------------------------------

def mig_from_codes(codes, factors, num_bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018): for each factor, the gap between the two latents that
    know most about it, I(z_top1; v_k) - I(z_top2; v_k), as a fraction of H(v_k); averaged over factors.
    1 when each factor is captured by one latent alone, 0 when none or two equally. The reference
    discretises the latents into 20 bins and uses 10,000 points. [N, D], [N, F] -> float."""
    codes = as_codes(codes)
    factors = as_factors(factors, len(codes))
    if codes.shape[1] < 2:
        raise ValueError(f"MIG compares the two most informative latents: it needs D >= 2, got D = {codes.shape[1]}")
    keep = require_informative(factors)
    mi = mutual_info_matrix(codes, factors[:, keep], num_bins)  # [D, F']
    top = np.sort(mi, axis=0)[::-1]  # most informative latent first
    return float(np.mean((top[0] - top[1]) / discrete_entropy(factors[:, keep])))


# -- SAP -----------------------------------------------------------------------------------

def sap_score_matrix(codes_train, factors_train, codes_test, factors_test, seed: int = 0) -> np.ndarray:
    """The test accuracy of predicting each factor from each latent alone: [D, F].

    For discrete factors, as the reference, a linear SVM (``LinearSVC(C=0.01, class_weight="balanced")``)
    fitted on the training points of the one latent, scored on the test points. Every factor must take
    more than one value in the training sample (:func:`sap_from_codes` leaves the others out)."""
    codes_train, factors_train, codes_test, factors_test = as_train_test(codes_train, factors_train, codes_test,
                                                                         factors_test)
    if not informative_factors(factors_train).all():
        raise ValueError("every factor must take more than one value in the training sample to fit a classifier")
    scores = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    with small_fits():
        for d in range(codes_train.shape[1]):
            for k in range(factors_train.shape[1]):
                svm = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                svm.fit(codes_train[:, d : d + 1], factors_train[:, k])
                scores[d, k] = np.mean(svm.predict(codes_test[:, d : d + 1]) == factors_test[:, k])
    return scores


def sap_from_matrix(scores) -> float:
    """The mean over factors of the gap between the best and second-best latent's score: [D, F] -> float."""
    top = np.sort(np.asarray(scores, dtype=np.float64), axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))


def sap_from_codes(codes_train, factors_train, codes_test, factors_test, seed: int = 0) -> float:
    """Separated attribute predictability (Kumar et al. 2018): how much better the best single latent
    predicts each factor than the second best (:func:`sap_score_matrix`, :func:`sap_from_matrix`).
    The reference uses 10,000 training and 5,000 test points. Costs D * sum(factor sizes) small SVMs."""
    codes_train, factors_train, codes_test, factors_test = as_train_test(codes_train, factors_train, codes_test,
                                                                         factors_test)
    if codes_train.shape[1] < 2:
        raise ValueError(f"SAP compares the two best latents: it needs D >= 2, got D = {codes_train.shape[1]}")
    keep = require_informative(factors_train)
    scores = sap_score_matrix(codes_train, factors_train[:, keep], codes_test, factors_test[:, keep], seed)
    return sap_from_matrix(scores)


# -- DCI -----------------------------------------------------------------------------------

def dci_importance(codes_train, factors_train, codes_test, factors_test, n_estimators: int = 100,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One gradient-boosted tree classifier per factor, predicting it from all latents, as the reference
    (scikit-learn's ``GradientBoostingClassifier`` with its defaults but ``n_estimators``): the importance
    of each latent for each factor [D, F] (each column sums to 1 unless the trees never split), and the
    train and test accuracy per factor [F], [F].

    Cost: ``n_estimators`` trees per class of the factor, each on all training points: roughly
    n_train * n_estimators * classes; 90 s on one core for a 40-class factor at 10,000 points and 100
    trees, 0.8 s at 2,000 points and 10 trees. Every factor must take more than one value in the training
    sample (:func:`dci_from_codes` leaves the others out)."""
    codes_train, factors_train, codes_test, factors_test = as_train_test(codes_train, factors_train, codes_test,
                                                                         factors_test)
    if not informative_factors(factors_train).all():
        raise ValueError("every factor must take more than one value in the training sample to fit a classifier")
    num_factors = factors_train.shape[1]
    importance = np.zeros((codes_train.shape[1], num_factors))
    train_accuracy, test_accuracy = np.zeros(num_factors), np.zeros(num_factors)
    with small_fits():
        for k in range(num_factors):
            trees = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
            trees.fit(codes_train, factors_train[:, k])
            importance[:, k] = np.abs(trees.feature_importances_)
            train_accuracy[k] = np.mean(trees.predict(codes_train) == factors_train[:, k])
            test_accuracy[k] = np.mean(trees.predict(codes_test) == factors_test[:, k])
    return importance, train_accuracy, test_accuracy


def normalised_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """Entropy, in log base ``base``, of each row of non-negative weights normalised to sum to 1: [R, K] -> [R].
    The reference adds 1e-11 to every weight first, so an all-zero row is uniform."""
    p = weights + 1e-11
    p = p / p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / math.log(base)


def dci_disentanglement(importance) -> float:
    """Disentanglement (Eastwood & Williams 2018): each latent scores 1 - H_F(its importances over the F
    factors), 1 when it matters for one factor only, and the scores are averaged with weights the latents'
    share of the total importance: [D, F] -> float."""
    importance = np.asarray(importance, dtype=np.float64)
    if importance.shape[1] < 2:
        raise ValueError(f"disentanglement spreads a latent's importance over factors: it needs F >= 2, "
                         f"got F = {importance.shape[1]}")
    per_latent = 1.0 - normalised_entropy(importance, importance.shape[1])  # [D]
    total = importance.sum()
    weights = importance.sum(axis=1) / total if total > 0 else np.full(len(importance), 1 / len(importance))
    return float(np.sum(per_latent * weights))


def dci_completeness(importance) -> float:
    """Completeness (Eastwood & Williams 2018): each factor scores 1 - H_D(its importances over the D
    latents), 1 when one latent captures it, averaged with weights the factors' share of the total
    importance: [D, F] -> float."""
    importance = np.asarray(importance, dtype=np.float64)
    if importance.shape[0] < 2:
        raise ValueError(f"completeness spreads a factor's importance over latents: it needs D >= 2, "
                         f"got D = {importance.shape[0]}")
    per_factor = 1.0 - normalised_entropy(importance.T, importance.shape[0])  # [F]
    total = importance.sum()
    weights = importance.sum(axis=0) / total if total > 0 else np.full(importance.shape[1], 1 / importance.shape[1])
    return float(np.sum(per_factor * weights))


def dci_from_codes(codes_train, factors_train, codes_test, factors_test, n_estimators: int = 100,
                   seed: int = 0) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018) from gradient-boosted trees (:func:`dci_importance`):
    ``disentanglement``, ``completeness``, and ``informativeness`` as the reference reports it, the mean
    test *accuracy* of the classifiers (the paper's informativeness is their error), with
    ``informativeness_train`` their training accuracy. The reference uses 10,000 training and 5,000 test
    points and 100 trees; see :func:`dci_importance` for the cost."""
    codes_train, factors_train, codes_test, factors_test = as_train_test(codes_train, factors_train, codes_test,
                                                                         factors_test)
    keep = require_informative(factors_train, least=2)
    importance, train_accuracy, test_accuracy = dci_importance(
        codes_train, factors_train[:, keep], codes_test, factors_test[:, keep], n_estimators, seed)
    return {"disentanglement": dci_disentanglement(importance), "completeness": dci_completeness(importance),
            "informativeness": float(test_accuracy.mean()), "informativeness_train": float(train_accuracy.mean())}


# -- modularity and explicitness -----------------------------------------------------------

def modularity(mi) -> float:
    """Modularity (Ridgeway & Mozer 2018) from the mutual information matrix [D, F]: each latent scores
    1 - (sum_k I_dk^2 - max_k I_dk^2) / (max_k I_dk^2 (F - 1)), 1 when it carries information about one
    factor only; a latent with no information scores 0, as in the reference. Mean over latents -> float."""
    squared = np.square(np.asarray(mi, dtype=np.float64))
    if squared.shape[1] < 2:
        raise ValueError(f"modularity spreads a latent's information over factors: it needs F >= 2, "
                         f"got F = {squared.shape[1]}")
    top = squared.max(axis=1)  # [D]
    informed = top > 0
    per_latent = np.zeros(len(squared))
    rest = squared[informed].sum(axis=1) - top[informed]
    per_latent[informed] = 1.0 - rest / (top[informed] * (squared.shape[1] - 1))
    return float(per_latent.mean())


def modularity_from_codes(codes, factors, num_bins: int = 20) -> float:
    """:func:`modularity` of the mutual information matrix of ``num_bins``-bin latents (the reference:
    20 bins, 10,000 points), leaving out factors of one value: [N, D], [N, F] -> float."""
    codes = as_codes(codes)
    factors = as_factors(factors, len(codes))
    keep = require_informative(factors, least=2)
    return modularity(mutual_info_matrix(codes, factors[:, keep], num_bins))


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """The area under the ROC curve of ``scores`` [N] for the bool labels ``positive`` [N]: the chance that
    a random positive scores above a random negative, ties counting half (Mann-Whitney U from average
    ranks; the same number as scikit-learn's ``roc_auc_score`` at a fraction of its overhead)."""
    num_positive = positive.sum()
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - num_positive * (num_positive + 1) / 2)
                 / (num_positive * (len(positive) - num_positive)))


def macro_auc(labels: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    """The mean over classes of the one-vs-rest ROC AUC of ``probabilities`` [N, C] for the true ``labels``
    [N] (the reference's multi-label AUC). Classes that all or none of the points have are left out: their
    AUC is undefined."""
    aucs = [roc_auc(labels == c, probabilities[:, i]) for i, c in enumerate(classes)
            if 0 < np.sum(labels == c) < len(labels)]
    return float(np.mean(aucs)) if aucs else float("nan")


def explicitness_from_codes(codes_train, factors_train, codes_test, factors_test, seed: int = 0) -> dict[str, float]:
    """Explicitness (Ridgeway & Mozer 2018): how well a linear classifier reads each factor off all the
    latents. As the reference: latents standardised with the training mean and deviation, one logistic
    regression per factor (:func:`logistic_regression`), scored by the one-vs-rest ROC AUC averaged over
    the factor's classes (:func:`macro_auc`), then over factors: ``{"train", "test"}``. The reference
    uses 10,000 training and 5,000 test points."""
    codes_train, factors_train, codes_test, factors_test = as_train_test(codes_train, factors_train, codes_test,
                                                                         factors_test)
    keep = require_informative(factors_train)
    mean, std = codes_train.mean(axis=0), codes_train.std(axis=0)
    std[std == 0] = 1.0  # a constant latent stays 0 instead of becoming 0 / 0
    x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
    train, test = [], []
    with small_fits():
        for k in np.flatnonzero(keep):
            model = logistic_regression(seed).fit(x_train, factors_train[:, k])
            train.append(macro_auc(factors_train[:, k], model.predict_proba(x_train), model.classes_))
            test.append(macro_auc(factors_test[:, k], model.predict_proba(x_test), model.classes_))
    return {"train": float(np.nanmean(train)), "test": float(np.nanmean(test))}


# -- β-VAE score ---------------------------------------------------------------------------

@torch.no_grad()
def beta_vae_features(represent: Represent, data, generator: torch.Generator, num_points: int, group_size: int = 64,
                      batch_size: int = ENCODE_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """The β-VAE score's examples: for each point a factor k is chosen (:func:`draw_fixed_factors`) and
    ``group_size`` pairs of images drawn that share factor k's value (the rest of each pair independent);
    the point's feature is the mean over the pairs of |z1 - z2|, its label k:
    (features [num_points, D], labels int64 [num_points])."""
    fixed = draw_fixed_factors(data, num_points, generator)
    points_per_call = max(1, batch_size // (2 * group_size))
    features = []
    for start in range(0, num_points, points_per_call):
        k = fixed[start : start + points_per_call]  # [P]
        first, second = data.sample_factors(2 * len(k) * group_size, generator).view(2, len(k), group_size, -1)
        rows = torch.arange(len(k))
        second[rows, :, k] = first[rows, :, k]
        codes = encode_factors(represent, data, torch.cat([first, second]).flatten(0, 1), batch_size)
        codes = codes.view(2, len(k), group_size, -1)  # [2, P, group_size, D]
        features.append((codes[0] - codes[1]).abs().mean(dim=1))  # [P, D]
    return torch.cat(features).numpy(), fixed.numpy()


def beta_vae_score(represent: Represent, data, generator: torch.Generator, group_size: int = 64,
                   num_train: int = 10000, num_eval: int = 5000, batch_size: int = ENCODE_BATCH) -> dict[str, float]:
    """β-VAE score (Higgins et al. 2017): the accuracy of a linear classifier (the reference's logistic
    regression, :func:`logistic_regression`) that tells from :func:`beta_vae_features` which factor
    was held fixed. A latent that captures one factor alone is 0 in the feature exactly when that factor
    is fixed. Reference defaults: 64 pairs per point (its ``batch_size``), 10,000 training and 5,000
    evaluation points, i.e. 1.9 million images to encode. ``{"train_accuracy", "eval_accuracy"}``."""
    x_train, y_train = beta_vae_features(represent, data, generator, num_train, group_size, batch_size)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"num_train={num_train} points held only one factor fixed: sample more")
    x_eval, y_eval = beta_vae_features(represent, data, generator, num_eval, group_size, batch_size)
    with small_fits():
        model = logistic_regression(seed_from(generator)).fit(x_train, y_train)
    return {"train_accuracy": float(model.score(x_train, y_train)), "eval_accuracy": float(model.score(x_eval, y_eval))}


# -- FactorVAE score -----------------------------------------------------------------------

@torch.no_grad()
def factor_vae_votes(represent: Represent, data, generator: torch.Generator, num_points: int,
                     scale: np.ndarray, active: np.ndarray, group_size: int = 64,
                     batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """The FactorVAE score's votes: for each point a factor k is chosen (:func:`draw_fixed_factors`) and
    ``group_size`` images drawn that share its value; the active latent whose variance over the group,
    divided by its global variance ``scale`` [D], is least votes for k. Votes [F, A] for the A latents of
    the mask ``active`` [D]."""
    fixed = draw_fixed_factors(data, num_points, generator)
    points_per_call = max(1, batch_size // group_size)
    votes = np.zeros((len(data.factor_sizes), int(active.sum())), dtype=np.int64)
    for start in range(0, num_points, points_per_call):
        k = fixed[start : start + points_per_call]  # [P]
        factors = data.sample_factors(len(k) * group_size, generator).view(len(k), group_size, -1)
        rows = torch.arange(len(k))
        factors[rows, :, k] = factors[rows, :1, k]  # the first draw's value, for the whole group
        codes = encode_factors(represent, data, factors.flatten(0, 1), batch_size).view(len(k), group_size, -1)
        local = codes.var(dim=1).numpy()  # [P, D], with Bessel's correction as the reference
        np.add.at(votes, (k.numpy(), np.argmin(local[:, active] / scale[active], axis=1)), 1)
    return votes


def majority_vote_accuracy(votes, classifier) -> float:
    """The share of ``votes`` [F, A] that ``classifier`` [A] (the factor each latent stands for) gets right."""
    votes = np.asarray(votes)
    return float(votes[np.asarray(classifier), np.arange(votes.shape[1])].sum() / votes.sum())


def factor_vae_score(represent: Represent, data, generator: torch.Generator, group_size: int = 64,
                     num_train: int = 10000, num_eval: int = 5000, num_variance: int = 10000,
                     prune_threshold: float = 0.05, batch_size: int = ENCODE_BATCH) -> dict[str, float]:
    """FactorVAE score (Kim & Mnih 2018): the accuracy of the majority-vote classifier that maps each
    latent to the factor it most often voted for (:func:`factor_vae_votes`, train votes), on the train
    and the eval votes. Latents are scaled by their global variance over ``num_variance`` points; those
    whose standard deviation is below ``prune_threshold`` are pruned as collapsed (the reference compares
    the standard deviation, sqrt(var) >= 0.05, though it calls it a variance threshold). With no active
    latent both accuracies are 0. Reference defaults: groups of 64 (its ``batch_size``), 10,000 training
    and 5,000 evaluation points, 10,000 for the variances.
    ``{"train_accuracy", "eval_accuracy", "num_active"}``."""
    if min(group_size, num_variance) < 2:
        raise ValueError(f"group_size and num_variance must be >= 2 to estimate variances, got {group_size} "
                         f"and {num_variance}")
    codes, _ = sample_codes(represent, data, num_variance, generator, batch_size)
    scale = codes.var(dim=0).numpy()  # [D]
    active = np.sqrt(scale) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active": 0}
    train_votes = factor_vae_votes(represent, data, generator, num_train, scale, active, group_size, batch_size)
    eval_votes = factor_vae_votes(represent, data, generator, num_eval, scale, active, group_size, batch_size)
    classifier = train_votes.argmax(axis=0)  # [A]
    return {"train_accuracy": majority_vote_accuracy(train_votes, classifier),
            "eval_accuracy": majority_vote_accuracy(eval_votes, classifier), "num_active": int(active.sum())}


# -- unsupervised --------------------------------------------------------------------------

def gaussian_total_correlation(cov) -> float:
    """Total correlation of a Gaussian of covariance ``cov`` [D, D]: the KL divergence from the product of
    its marginals, 0.5 * (sum_d log Σ_dd - log det Σ) nats. +inf for a singular Σ with a positive diagonal."""
    cov = np.asarray(cov, dtype=np.float64)
    sign, logdet = np.linalg.slogdet(cov)
    return float(0.5 * (np.sum(np.log(np.diag(cov))) - logdet)) if sign > 0 else math.inf


def gaussian_wasserstein_correlation(cov) -> float:
    """The squared 2-Wasserstein distance between N(0, Σ) and the product of its marginals N(0, diag Σ):
    tr Σ + tr diag Σ - 2 tr (diag(Σ)^1/2 Σ diag(Σ)^1/2)^1/2, computed from the eigenvalues of the symmetric
    matrix inside the root (the reference takes the root of diag(Σ) Σ, which has the same eigenvalues)."""
    cov = np.asarray(cov, dtype=np.float64)
    scale = np.sqrt(np.diag(cov))
    eigenvalues = np.linalg.eigvalsh(scale[:, None] * cov * scale[None, :]).clip(min=0)
    return float(2 * np.trace(cov) - 2 * np.sum(np.sqrt(eigenvalues)))


def latent_mutual_info(codes, num_bins: int = 20) -> float:
    """The mean mutual information, in nats, between two different latents, each discretised into
    ``num_bins`` bins: [N, D] -> float (the reference's ``mutual_info_score``)."""
    binned = discretize(codes, num_bins)
    num_latents = binned.shape[1]
    if num_latents < 2:
        raise ValueError(f"mutual information between latents needs D >= 2, got D = {num_latents}")
    mi = discrete_mutual_info(binned, binned)
    np.fill_diagonal(mi, 0.0)
    return float(mi.sum() / (num_latents**2 - num_latents))


def unsupervised_from_codes(codes, num_bins: int = 20) -> dict[str, float]:
    """The reference's unsupervised scores of the codes' covariance and mutual information, needing no
    factors: ``gaussian_tc``, ``gaussian_wasserstein_corr`` and its ratio to tr Σ,
    ``gaussian_wasserstein_corr_norm``, from the covariance of the latents that vary (a constant latent
    is independent of the others), and ``mutual_info`` (:func:`latent_mutual_info`). [N, D] -> dict."""
    codes = as_codes(codes)
    if len(codes) < 2:
        raise ValueError("a covariance needs at least 2 codes")
    varying = codes[:, codes.std(axis=0) > 0]
    cov = np.cov(varying, rowvar=False).reshape(varying.shape[1], varying.shape[1])
    wasserstein = gaussian_wasserstein_correlation(cov)
    trace = np.trace(cov)
    return {"gaussian_tc": gaussian_total_correlation(cov), "gaussian_wasserstein_corr": wasserstein,
            "gaussian_wasserstein_corr_norm": float(wasserstein / trace) if trace > 0 else 0.0,
            "mutual_info": latent_mutual_info(codes, num_bins)}


# -- all of them ---------------------------------------------------------------------------

#: The settings of :func:`evaluate_disentanglement`, at the reference's values.
#:   num_points        codes drawn once for MIG, SAP, modularity, explicitness, the unsupervised scores
#:                     and DCI's training set
#:   num_test          held-out codes: the test set of SAP, DCI and explicitness
#:   num_bins          bins per latent for the mutual information (MIG, modularity, mutual_info)
#:   dci_train         at most this many of the num_points codes train DCI's trees
#:   dci_test          at most this many of the num_test codes test them
#:   dci_n_estimators  boosting stages of DCI's trees (the cost grows with it and with dci_train)
#:   vote_group_size   images per group (pairs for β-VAE) with one factor fixed: the reference's batch_size
#:   vote_num_train    groups that train the β-VAE and FactorVAE classifiers
#:   vote_num_eval     groups that score them
#:   variance_points   codes for FactorVAE's global variances
#:   prune_threshold   FactorVAE prunes latents whose standard deviation is below this
#:   batch_size        images per call of represent
#: Images encoded: num_points + num_test + variance_points + 3 vote_group_size (vote_num_train + vote_num_eval).
DEFAULT_SETTINGS: dict[str, int | float] = {
    "num_points": 10000, "num_test": 5000, "num_bins": 20,
    "dci_train": 10000, "dci_test": 5000, "dci_n_estimators": 100,
    "vote_group_size": 64, "vote_num_train": 10000, "vote_num_eval": 5000,
    "variance_points": 10000, "prune_threshold": 0.05, "batch_size": ENCODE_BATCH,
}

def resolve_settings(settings: Mapping[str, int | float] | None) -> dict[str, int | float]:
    """:data:`DEFAULT_SETTINGS` updated by ``settings``, checked: known keys, positive values."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown disentanglement setting(s) {unknown}; the known ones are {sorted(DEFAULT_SETTINGS)}")
    for key, value in settings.items():
        if key == "prune_threshold" and not (is_number(value) and value >= 0):
            raise ValueError(f"disentanglement setting {key}={value!r} must be a number >= 0")
        if key != "prune_threshold" and not (is_int(value) and value >= 1):
            raise ValueError(f"disentanglement setting {key}={value!r} must be an integer >= 1")
    return {**DEFAULT_SETTINGS, **settings}


def evaluate_disentanglement(represent: Represent, data, generator: torch.Generator,
                             settings: Mapping[str, int | float] | None = None) -> dict[str, float]:
    """All the metrics of this module on one representation, as flat floats:

        mig, sap, dci_d, dci_c, dci_i (test accuracy), dci_i_train, beta_vae, beta_vae_train,
        factor_vae, factor_vae_train, factor_vae_active, modularity, explicitness, explicitness_train,
        gaussian_tc, gaussian_wasserstein_corr, gaussian_wasserstein_corr_norm, mutual_info

    (the β-VAE and FactorVAE scores and explicitness are their evaluation/test values). ``settings``
    overrides :data:`DEFAULT_SETTINGS`, the reference's sample sizes, key by key (smaller ones run in
    seconds: see the module's docstring). The metrics on samples of codes share one training and one test sample;
    each leaves out the factors of one value in the training sample (see the module's docstring)."""
    s = resolve_settings(settings)
    batch = s["batch_size"]
    codes, factors = (np.asarray(t) for t in sample_codes(represent, data, s["num_points"], generator, batch))
    codes_test, factors_test = (np.asarray(t) for t in sample_codes(represent, data, s["num_test"], generator, batch))
    dci_train, dci_test = min(s["dci_train"], len(codes)), min(s["dci_test"], len(codes_test))
    dci = dci_from_codes(codes[:dci_train], factors[:dci_train], codes_test[:dci_test], factors_test[:dci_test],
                         s["dci_n_estimators"], seed_from(generator))
    explicitness = explicitness_from_codes(codes, factors, codes_test, factors_test, seed_from(generator))
    votes = dict(group_size=s["vote_group_size"], num_train=s["vote_num_train"], num_eval=s["vote_num_eval"],
                 batch_size=batch)
    beta_vae = beta_vae_score(represent, data, generator, **votes)
    factor_vae = factor_vae_score(represent, data, generator, num_variance=s["variance_points"],
                                  prune_threshold=s["prune_threshold"], **votes)
    return {
        "mig": mig_from_codes(codes, factors, s["num_bins"]),
        "sap": sap_from_codes(codes, factors, codes_test, factors_test, seed_from(generator)),
        "dci_d": dci["disentanglement"], "dci_c": dci["completeness"], "dci_i": dci["informativeness"],
        "dci_i_train": dci["informativeness_train"],
        "beta_vae": beta_vae["eval_accuracy"], "beta_vae_train": beta_vae["train_accuracy"],
        "factor_vae": factor_vae["eval_accuracy"], "factor_vae_train": factor_vae["train_accuracy"],
        "factor_vae_active": float(factor_vae["num_active"]),
        "modularity": modularity_from_codes(codes, factors, s["num_bins"]),
        "explicitness": explicitness["test"], "explicitness_train": explicitness["train"],
        **unsupervised_from_codes(codes, s["num_bins"]),
    }
