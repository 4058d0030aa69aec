"""The linear Gaussian model of DESIGN.md section 1, where every quantity has a closed form.

p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D):
    log p(x)   = log N(x; b, W W^T + s^2 I)
    p(z|x)     = N(M^-1 W^T (x - b), s^2 M^-1),   M = W^T W + s^2 I
With orthogonal columns in W, M is diagonal and so is the exact posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import MultivariateNormal

from vae_lightning.objectives import ELBO, IWAE, log_importance_weights
from vae_lightning.posteriors import DiagonalGaussian
from vae_lightning.priors import StandardNormal


@dataclass
class LinearGaussian:
    W: torch.Tensor  # [D, d]
    b: torch.Tensor  # [D]
    s: float

    @classmethod
    def make(cls, data_dim=6, latent_dim=3, s=0.5, orthogonal=True, seed=0) -> "LinearGaussian":
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        if orthogonal:
            Q, _ = torch.linalg.qr(A)
            scales = torch.linspace(0.5, 2.0, latent_dim, dtype=torch.float64)
            W = Q * scales  # orthogonal columns of lengths `scales`
        else:
            W = A
        b = torch.randn(data_dim, generator=g, dtype=torch.float64)
        return cls(W, b, s)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W.T + self.b  # [..., d] -> [..., D]

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return self.decode(z) + self.s * torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=x.dtype)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean [B, d] and covariance [d, d]."""
        M = self.W.T @ self.W + self.s**2 * torch.eye(self.W.shape[1], dtype=x.dtype)
        Minv = torch.linalg.inv(M)
        return (x - self.b) @ self.W @ Minv.T, self.s**2 * Minv

    def expected_log_px_given_z_full(self, x, mu, cov) -> torch.Tensor:
        """E_{q=N(mu, cov)}[log N(x; W z + b, s^2 I)] for a full covariance cov [B, d, d] or [d, d]: [B]."""
        D = self.W.shape[0]
        resid = x - self.decode(mu)
        trace = torch.einsum("ij,...jk,ik->...", self.W, cov, self.W).expand(x.shape[0])  # tr(W cov W^T)
        return -0.5 * (D * torch.log(torch.tensor(2 * torch.pi * self.s**2, dtype=x.dtype))
                       + (resid.pow(2).sum(-1) + trace) / self.s**2)

    def expected_log_px_given_z(self, x, mu, logvar) -> torch.Tensor:
        """E_{q=N(mu, diag exp(logvar))}[log N(x; W z + b, s^2 I)], in closed form: [B]."""
        D = self.W.shape[0]
        resid = x - self.decode(mu)
        trace = (self.W.pow(2) * logvar.exp()[:, None, :]).sum(dim=(-1, -2))  # tr(W diag(var) W^T)
        return -0.5 * (D * torch.log(torch.tensor(2 * torch.pi * self.s**2, dtype=x.dtype))
                       + (resid.pow(2).sum(-1) + trace) / self.s**2)


# -- a diagonal q(z|x) against N(0, I), as (mu, logvar) -------------------------------------

def gaussian_kl(mu, logvar):
    """KL(N(mu, diag exp(logvar)) || N(0, I)) as the posterior/prior pair computes it: [B, D] -> [B]."""
    return DiagonalGaussian(mu, logvar).kl(StandardNormal(mu.shape[-1]))


def reparameterize(mu, logvar, num_samples):
    return DiagonalGaussian(mu, logvar).rsample(num_samples)


def elbo_terms(x, mu, logvar, decode, likelihood, num_samples=1, beta=1.0, objective="elbo", with_iwae=False,
               **kwargs):
    """The terms of the ELBO (or IWAE) objective for a diagonal q against N(0, I)."""
    cls = IWAE if objective == "iwae" else ELBO
    return cls(num_samples, beta, **kwargs)(x, DiagonalGaussian(mu, logvar), decode, StandardNormal(mu.shape[-1]),
                                            likelihood, with_iwae=with_iwae)


def log_weights(x, z, mu, logvar, decode, likelihood):
    return log_importance_weights(x, z, DiagonalGaussian(mu, logvar), decode, StandardNormal(mu.shape[-1]), likelihood)
