"""float and trainable kinds, and the PCA step shared with glyph."""

from __future__ import annotations

import numpy as np
import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.substrates import build_substrate, verify_substrate
from substrate_lm.substrates.bits import random_bit_codes
from substrate_lm.substrates.pca import pca_unit_rows


@pytest.mark.parametrize("width", [16, 256, 1024])
def test_float_rows_unit_norm_and_distinct(width):
    sub = build_substrate("float", 8192, width, seed=0)
    t = sub.table.numpy()
    assert t.shape == (8192, width) and t.dtype == np.float32
    norms = np.linalg.norm(t.astype(np.float64), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert len(np.unique(t, axis=0)) == 8192
    assert not np.all((t == 0) | (t == 1))
    report = verify_substrate(sub)
    assert report["ok"], report["problems"]
    assert report["unit_norm"] and not report["binary"]
    assert sub.meta["source_width"] == 1024


def test_float_full_width_pca_is_a_rotation_of_the_centred_codes():
    # width == source width: pairwise angles of the centred codes survive the PCA exactly
    sub = build_substrate("float", 512, 64, seed=1, source_width=64)
    codes = random_bit_codes(512, 64, 1, stream="float").astype(np.float64)
    centred = codes - codes.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    t = sub.table.numpy().astype(np.float64)
    assert np.allclose(t @ t.T, centred @ centred.T, atol=1e-5)


def test_float_determinism_seed_and_errors():
    a = build_substrate("float", 2048, 64, seed=0)
    assert a.fingerprint == build_substrate("float", 2048, 64, seed=0).fingerprint
    assert a.fingerprint != build_substrate("float", 2048, 64, seed=1).fingerprint
    with pytest.raises(SubstrateError, match="source_width"):
        build_substrate("float", 2048, 64, source_width=32)


def test_pca_matches_sklearn():
    sk = pytest.importorskip("sklearn.decomposition", reason="scikit-learn (the optional analysis extra) is not installed")
    from sklearn.preprocessing import normalize

    rng = np.random.default_rng(0)
    x = (rng.random((1500, 64)) < 0.3).astype(np.uint8)
    ours, info = pca_unit_rows(x, 24)
    ref = normalize(sk.PCA(24, svd_solver="full").fit_transform(x.astype(np.float64)))
    assert np.abs(ours - ref).max() < 1e-5  # same axes, same signs (svd_flip rule)
    assert 0 < info["pca_explained_variance"] < 1


def test_trainable_init():
    sub = build_substrate("trainable", 4096, 64, seed=0)
    t = sub.table.numpy()
    assert abs(float(t.std()) - 0.02) < 0.001 and abs(float(t.mean())) < 0.001
    assert sub.fingerprint == build_substrate("trainable", 4096, 64, seed=0).fingerprint
    assert sub.fingerprint != build_substrate("trainable", 4096, 64, seed=1).fingerprint
    assert abs(float(build_substrate("trainable", 512, 8, std=1.0).table.std()) - 1.0) < 0.1
    assert verify_substrate(sub)["ok"]
    with pytest.raises(SubstrateError, match="std"):
        build_substrate("trainable", 16, 8, std=0)
