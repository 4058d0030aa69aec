"""Pictures of what each latent captures on data with known factors: a latent x factor mutual-information
heatmap, and latent traversals titled with the factor each latent captures most."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from ..images import DPI, _row_ticks, _show, tile

#: A latent whose largest normalised MI with any factor is below this is labelled as capturing none.
CAPTURE_THRESHOLD = 0.05


def normalised_mi(mi: torch.Tensor, factor_entropy: torch.Tensor) -> torch.Tensor:
    """I(z_d; v_k) / H(v_k): the fraction of each factor's entropy a latent holds, [D, F] -> [D, F] in [0, 1].
    A factor with one value (H = 0) gets 0."""
    entropy = factor_entropy.to(mi.dtype)
    return torch.where(entropy > 0, mi / entropy.clamp_min(1e-12), torch.zeros_like(mi))


def captured_factors(mi_normalised: torch.Tensor, factor_names: Sequence[str]) -> list[tuple[str | None, float]]:
    """For each latent d, the factor it captures most and its normalised MI; None below CAPTURE_THRESHOLD."""
    best, which = mi_normalised.max(dim=1)
    return [(factor_names[int(k)] if float(v) >= CAPTURE_THRESHOLD else None, float(v)) for v, k in zip(best, which)]


def plot_mi_heatmap(mi_normalised: torch.Tensor, factor_names: Sequence[str], path: Path, where: str) -> Path:
    """The [D, F] matrix of I(z_d; v_k) / H(v_k) as a heatmap, one row per latent, one column per factor."""
    import matplotlib.pyplot as plt

    values = mi_normalised.float().cpu().numpy()
    num_latents, num_factors = values.shape
    fig, ax = plt.subplots(figsize=(1.2 * num_factors + 2.5, 0.35 * num_latents + 1.8), dpi=DPI)
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=max(1e-6, float(values.max())), aspect="auto")
    for d in range(num_latents):
        for k in range(num_factors):
            ax.text(k, d, f"{values[d, k]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if values[d, k] < 0.6 * values.max() else "black")
    ax.set_xticks(range(num_factors), list(factor_names), rotation=30, ha="right")
    ax.set_yticks(range(num_latents), [f"z{d}" for d in range(num_latents)])
    fig.colorbar(image, ax=ax, label="I(z_d; factor) / H(factor)")
    ax.set_title(f"Mutual information of each latent with each factor\n({where})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_factor_traversals(decode: Callable[[torch.Tensor], torch.Tensor], code: torch.Tensor, quantiles: torch.Tensor,
                           scores: torch.Tensor, captured: list[tuple[str | None, float]], path: Path,
                           where: str) -> Path:
    """Each latent of one input's ``code`` [D] swept over the prior's ``quantiles`` [S, D] (at the N(0, 1)
    ``scores`` [S]) while the others stay put, the latents that capture a factor first; each row is
    labelled with the factor its latent captures (normalised MI) or "none"."""
    import matplotlib.pyplot as plt

    order = sorted(range(len(captured)), key=lambda d: (captured[d][0] is None, -captured[d][1]))
    steps = len(scores)
    z = code.float().cpu().repeat(len(order) * steps, 1)
    for i, d in enumerate(order):
        z[i * steps : (i + 1) * steps, d] = quantiles[:, d]
    images = decode(z)  # [D * S, C, H, W]
    height = images.shape[-2]
    fig, ax = plt.subplots(figsize=(8.0, 0.62 * len(order) + 1.6), dpi=DPI)
    _show(ax, tile(images, steps))
    cell = images.shape[-1]
    ax.set_xticks([2 + i * (cell + 2) + cell / 2 for i in range(steps)],
                  [f"{round(float(v), 1) + 0.0:+.1f}" for v in scores])
    labels = [f"z{d}: {name} ({mi:.2f})" if name else f"z{d}: none ({mi:.2f})"
              for d, (name, mi) in ((d, captured[d]) for d in order)]
    _row_ticks(ax, labels, height)
    ax.set_xlabel("N(0, 1) score: the latent is set to the prior's quantile there (the others stay at the input's code)")
    ax.set_title(f"Latent traversals, labelled by the factor each latent captures (normalised MI)\n({where})",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
