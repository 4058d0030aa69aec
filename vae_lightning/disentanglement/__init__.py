"""Disentanglement metrics of representations of data with known factors (disentanglement_lib's set), the
callback that logs them during training and after the test, and their pictures."""

from .callback import DisentanglementMetrics, measure
from .metrics import (
    DEFAULT_SETTINGS, beta_vae_score, dci_completeness, dci_disentanglement, dci_from_codes,
    dci_importance, discrete_entropy, discrete_mutual_info, discretize, encode_factors, evaluate_disentanglement,
    explicitness_from_codes, factor_vae_score, gaussian_total_correlation, gaussian_wasserstein_correlation,
    latent_mutual_info, mig_from_codes, modularity, modularity_from_codes, mutual_info_matrix, resolve_settings,
    sample_codes, sap_from_codes, sap_from_matrix, sap_score_matrix, unsupervised_from_codes,
)

__all__ = [
    "DEFAULT_SETTINGS", "DisentanglementMetrics", "measure", "beta_vae_score", "dci_completeness", "dci_disentanglement",
    "dci_from_codes", "dci_importance", "discrete_entropy", "discrete_mutual_info", "discretize", "encode_factors",
    "evaluate_disentanglement", "explicitness_from_codes", "factor_vae_score", "gaussian_total_correlation",
    "gaussian_wasserstein_correlation", "latent_mutual_info", "mig_from_codes", "modularity",
    "modularity_from_codes", "mutual_info_matrix", "resolve_settings", "sample_codes", "sap_from_codes",
    "sap_from_matrix", "sap_score_matrix", "unsupervised_from_codes",
]
