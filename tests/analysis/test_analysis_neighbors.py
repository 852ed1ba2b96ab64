"""Nearest-neighbour purity on planted clusters, noise, and duplicated entity rows."""

from __future__ import annotations

import numpy as np
import pytest

from substrate_lm.analysis.neighbors import neighbor_purity, purity_layers


def test_planted_clusters_are_pure_and_noise_is_at_chance():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    centroids = rng.normal(size=(4, 16)) * 5
    X = centroids[labels] + rng.normal(size=(200, 16))
    res = neighbor_purity(X, labels, k=5)
    assert res["purity"] > 0.98 and res["k"] == 5
    assert res["chance"] == pytest.approx(49 / 199)
    noise = neighbor_purity(rng.normal(size=(200, 16)), labels, k=5)
    assert abs(noise["purity"] - noise["chance"]) < 0.08


def test_same_entity_rows_are_not_neighbours():
    """Identical rows for all occurrences of an entity (a substrate) with random entity labels:
    counting them would give purity 1; excluding them gives chance."""
    rng = np.random.default_rng(1)
    n_ent, per = 100, 4
    groups = np.repeat(np.arange(n_ent), per)
    ent_label = rng.integers(0, 4, size=n_ent)
    X = rng.integers(0, 2, size=(n_ent, 64)).astype(float)[groups]
    labels = ent_label[groups]
    naive = neighbor_purity(X, labels, k=3)  # no groups: duplicates are the nearest neighbours
    assert naive["purity"] == pytest.approx(1.0)
    res = neighbor_purity(X, labels, k=3, groups=groups)
    assert abs(res["purity"] - res["chance"]) < 0.1


def test_purity_layers_shapes_and_small_k():
    rng = np.random.default_rng(2)
    labels = ["a"] * 3 + ["b"] * 3
    res = purity_layers([rng.normal(size=(6, 4)), rng.normal(size=(6, 8))], labels, k=50)
    assert len(res["purity"]) == 2 and res["k"] == 5  # k lowered to the 5 available neighbours
