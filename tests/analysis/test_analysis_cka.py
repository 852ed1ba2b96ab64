"""CKA: 1 on itself, invariant to rotation and isotropic scale, low for unrelated representations."""

from __future__ import annotations

import numpy as np
import pytest

from substrate_lm.analysis.cka import cka_matrix, linear_cka, rbf_cka


def _orthogonal(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("debiased", [False, True])
def test_self_rotation_and_scale(debiased):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 24)) @ rng.normal(size=(24, 24))  # anisotropic features
    assert linear_cka(X, X, debiased) == pytest.approx(1.0, abs=1e-9)
    Q = _orthogonal(24, rng)
    assert np.allclose(Q.T @ Q, np.eye(24))
    assert linear_cka(X, X @ Q, debiased) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(X, 7.5 * X @ Q + 3.0, debiased) == pytest.approx(1.0, abs=1e-9)  # + offset: centred
    Y = rng.normal(size=(120, 10))
    assert linear_cka(X, Y, debiased) == pytest.approx(linear_cka(X @ Q * 0.1, Y @ _orthogonal(10, rng), debiased), abs=1e-9)
    # not invariant to an anisotropic scaling (sanity: the metric is not constant)
    S = np.diag(np.r_[np.full(12, 10.0), np.full(12, 0.1)])
    assert linear_cka(X, X @ S, debiased) < 0.99


def test_unrelated_and_different_widths():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(300, 20)), rng.normal(size=(300, 50))
    biased, unbiased = linear_cka(X, Y), linear_cka(X, Y, debiased=True)
    assert biased < 0.3 and abs(unbiased) < 0.05 and biased > unbiased
    # a linear readout of X in a wider space is still close to X
    assert linear_cka(X, X @ rng.normal(size=(20, 50))) > 0.6


def test_rbf_cka_self_and_rotation():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 6))
    assert rbf_cka(X, X) == pytest.approx(1.0, abs=1e-9)
    assert rbf_cka(X, 3 * X @ _orthogonal(6, rng)) == pytest.approx(1.0, abs=1e-6)
    assert rbf_cka(X, rng.normal(size=(80, 6))) < 0.5


def test_matrix_matches_pairwise_values():
    rng = np.random.default_rng(3)
    layers = [rng.normal(size=(60, d)) for d in (4, 8, 16)]
    layers.append(layers[1] @ _orthogonal(8, rng))
    M = cka_matrix(layers)
    assert M.shape == (4, 4)
    assert np.allclose(np.diag(M), 1.0, atol=1e-5)
    assert np.allclose(M, M.T, atol=1e-6)
    assert M[1, 3] == pytest.approx(1.0, abs=1e-5)
    assert M[0, 2] == pytest.approx(linear_cka(layers[0], layers[2]), abs=1e-5)
    AB = cka_matrix(layers[:2], layers[2:])
    assert AB.shape == (2, 2) and AB[1, 1] == pytest.approx(1.0, abs=1e-5)
