"""Nearest-neighbour purity per layer (cosine similarity).

Purity is the share of an item's k nearest neighbours that carry the same label, averaged over
items. Occurrences of the **same entity** are never counted as neighbours: at the substrate layer
they have identical rows, so counting them would make purity high for trivial reasons. The chance
level is the expected purity of k random neighbours drawn from the same candidate set, i.e. the
mean share of same-label items among each item's candidates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _cosine(X: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    t = t - t.mean(0, keepdim=True)  # centre first: a shared offset would make everything similar
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return t @ t.T  # [N, N]


def neighbor_purity(X: np.ndarray, labels: Sequence, k: int = 5, groups: Sequence | None = None) -> dict:
    """k-nearest-neighbour label purity of one representation.

    Args:
        X: features ``[N, d]``.
        labels: class of each row.
        k: neighbours per item (lowered when fewer candidates exist).
        groups: entity of each row; rows of the same entity are excluded as neighbours.

    Returns:
        dict with ``purity``, ``chance`` and ``k`` (the k actually used).
    """
    labels = np.asarray([str(x) for x in labels])
    n = len(labels)
    groups_arr = np.asarray([str(g) for g in groups]) if groups is not None else np.arange(n).astype(str)
    _, y = np.unique(labels, return_inverse=True)
    _, g = np.unique(groups_arr, return_inverse=True)
    y_t, g_t = torch.as_tensor(y), torch.as_tensor(g)
    sim = _cosine(X)
    excluded = g_t[:, None] == g_t[None, :]  # [N, N], True on the diagonal and same-entity pairs
    sim = sim.masked_fill(excluded, float("-inf"))
    n_cand = (~excluded).sum(1)  # [N]
    if n < 2 or int(n_cand.min()) < 1:  # some item has no candidate neighbour at all
        return {"purity": float("nan"), "chance": float("nan"), "k": 0}
    k_eff = int(max(1, min(k, int(n_cand.min()))))
    nn = sim.topk(k_eff, dim=1).indices  # [N, k]
    same = (y_t[nn] == y_t[:, None]).double()  # [N, k]
    same_label = (y_t[:, None] == y_t[None, :]) & ~excluded
    chance = (same_label.sum(1).double() / n_cand.double()).mean()
    return {"purity": float(same.mean()), "chance": float(chance), "k": k_eff}


def purity_layers(arrays: Sequence[np.ndarray], labels: Sequence, k: int = 5, groups: Sequence | None = None) -> dict:
    """:func:`neighbor_purity` for every layer; per-layer list ``purity`` plus ``chance`` and ``k``."""
    res = [neighbor_purity(X, labels, k, groups) for X in arrays]
    return {
        "purity": [r["purity"] for r in res],
        "chance": res[0]["chance"] if res else float("nan"),
        "k": res[0]["k"] if res else k,
        "metric": "cosine (centred features); same-entity neighbours excluded",
    }
