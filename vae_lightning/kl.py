"""Closed-form KL(q || p) for pairs of posterior and prior that have one, found by their types.

As ``torch.distributions.kl`` does, a pair is registered once, in the file of whichever
part comes second:

    @register_kl(DiagonalGaussian, StandardNormal)
    def _kl(q, p):                 # -> [B, D] when it factorises over dimensions, else [B]
        ...

``analytic_kl(q, p)`` looks the pair up and returns None when there is no closed form: the
objective then estimates the KL by Monte Carlo from its own samples of z. Subclasses inherit
their parents' pairs (q's classes are tried from the most specific, and for each of them p's):
a subclass whose density differs must register its own pair.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

_REGISTRY: dict[tuple[type, type], Callable[[Any, Any], torch.Tensor]] = {}
_FOUND: dict[tuple[type, type], Callable[[Any, Any], torch.Tensor] | None] = {}  # lookups made, by type pair


def register_kl(posterior_type: type, prior_type: type):
    """Decorator: ``fn(q, p)`` is the analytic KL(q || p) of this pair, [B, D] or [B]."""

    def decorator(fn):
        _REGISTRY[posterior_type, prior_type] = fn
        _FOUND.clear()
        return fn

    return decorator


def _lookup(posterior_type: type, prior_type: type) -> Callable | None:
    key = (posterior_type, prior_type)
    if key not in _FOUND:
        _FOUND[key] = next((_REGISTRY[q, p] for q in posterior_type.__mro__ for p in prior_type.__mro__
                            if (q, p) in _REGISTRY), None)
    return _FOUND[key]


def has_analytic_kl(q: Any, p: Any) -> bool:
    return _lookup(type(q), type(p)) is not None


def analytic_kl(q: Any, p: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(kl [B], kl_per_dim [B, D] or None), or None when the pair has no closed form."""
    fn = _lookup(type(q), type(p))
    if fn is None:
        return None
    kl = fn(q, p)
    if kl.dim() == q.mean.dim():  # [B, D]: it factorises over the latent dimensions
        return kl.sum(-1), kl
    return kl, None
