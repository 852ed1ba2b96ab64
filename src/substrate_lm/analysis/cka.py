"""Centered kernel alignment (Kornblith et al., 2019) between representations of the same items.

``CKA(X, Y) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)`` with Gram matrices ``K = k(X)``, ``L = k(Y)``
over the N items and the centering matrix ``H``. Linear CKA (``k(X) = X X^T``) is 1 for
``X`` vs itself and invariant to orthogonal transforms and isotropic scaling of either side, and
it compares layers of different widths (a 16-bit substrate against 1024-d hidden states) or of
different models, as long as the rows are the same items in the same order.

The debiased variant replaces HSIC by its unbiased estimator (Song et al., 2012), which removes
the upward bias of CKA at small N relative to the width. The RBF variant uses a Gaussian kernel
whose bandwidth is a fraction of the median pairwise distance.

Grams are computed once per layer and stored normalised, so an L_a x L_b matrix of CKAs costs
``L_a + L_b`` Gram matrices plus cheap dot products.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _as_t(X) -> torch.Tensor:
    return torch.as_tensor(np.asarray(X), dtype=torch.float64)


def linear_gram(X) -> torch.Tensor:
    """``X X^T`` (``[N, N]``, float64)."""
    t = _as_t(X)
    return t @ t.T


def rbf_gram(X, sigma_frac: float = 0.5) -> torch.Tensor:
    """Gaussian-kernel Gram with bandwidth ``sigma_frac * sqrt(median squared distance)``."""
    t = _as_t(X)
    sq = (t * t).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * t @ t.T).clamp_min(0)  # [N, N]
    med = d2[~torch.eye(len(t), dtype=torch.bool)].median() if len(t) > 1 else torch.tensor(1.0)
    sigma2 = (sigma_frac**2) * float(med if med > 0 else 1.0)
    return torch.exp(-d2 / (2 * sigma2))


def center_gram(K: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Double-centre a Gram matrix (``H K H``), or its unbiased-HSIC counterpart when ``debiased``."""
    K = K.clone()
    n = K.shape[0]
    if debiased:
        if n < 4:
            raise ValueError("debiased CKA needs at least 4 items")
        K.fill_diagonal_(0)
        means = K.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
        K = K - means[:, None] - means[None, :]
        K.fill_diagonal_(0)
    else:
        means = K.mean(0)
        means = means - means.mean() / 2
        K = K - means[:, None] - means[None, :]
    return K


def cka_from_grams(K: torch.Tensor, L: torch.Tensor, debiased: bool = False) -> float:
    """CKA of two (uncentred) Gram matrices over the same items."""
    Kc, Lc = center_gram(K, debiased), center_gram(L, debiased)
    num = (Kc * Lc).sum()
    den = torch.sqrt((Kc * Kc).sum() * (Lc * Lc).sum())
    return float(num / den) if den > 0 else float("nan")


def linear_cka(X, Y, debiased: bool = False) -> float:
    """Linear CKA between two representations ``[N, d_x]`` and ``[N, d_y]`` of the same items."""
    return cka_from_grams(linear_gram(X), linear_gram(Y), debiased)


def rbf_cka(X, Y, sigma_frac: float = 0.5, debiased: bool = False) -> float:
    """RBF-kernel CKA between two representations of the same items."""
    return cka_from_grams(rbf_gram(X, sigma_frac), rbf_gram(Y, sigma_frac), debiased)


def _normalised_centred(X, kernel: str, debiased: bool, sigma_frac: float) -> torch.Tensor:
    K = linear_gram(X) if kernel == "linear" else rbf_gram(X, sigma_frac)
    Kc = center_gram(K, debiased)
    norm = Kc.norm()
    # stored as float32: the CKA is a dot product of unit vectors, float32 is plenty
    return (Kc / norm if norm > 0 else Kc).to(torch.float32).flatten()


def cka_matrix(
    arrays_a: Sequence[np.ndarray],
    arrays_b: Sequence[np.ndarray] | None = None,
    kernel: str = "linear",
    debiased: bool = False,
    sigma_frac: float = 0.5,
) -> np.ndarray:
    """CKA between every layer of A and every layer of B (B defaults to A).

    Args:
        arrays_a: per-layer arrays ``[N, d_l]`` of model A.
        arrays_b: per-layer arrays of model B over the same N items (``None``: A against itself).
        kernel: ``"linear"`` or ``"rbf"``.
        debiased: use the unbiased HSIC estimator.
        sigma_frac: RBF bandwidth as a fraction of the median distance.

    Returns:
        float array ``[L_a, L_b]``.
    """
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    ga = [_normalised_centred(X, kernel, debiased, sigma_frac) for X in arrays_a]
    gb = ga if arrays_b is None else [_normalised_centred(X, kernel, debiased, sigma_frac) for X in arrays_b]
    A, B = torch.stack(ga), torch.stack(gb)  # [L_a, N*N], [L_b, N*N]
    return (A @ B.T).double().numpy()  # [L_a, L_b]
