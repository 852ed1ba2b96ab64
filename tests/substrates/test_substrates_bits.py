"""bits and token-id: binary, collision-free by construction over the full 65,536 ids, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.substrates import build_substrate, verify_substrate

V = 65536


def _distinct_rows(table: np.ndarray) -> int:
    # independent of the verifier's hashing: lexicographic unique over bit-packed rows
    packed = np.packbits(table.astype(np.uint8), axis=1)
    return len(np.unique(packed, axis=0))


@pytest.mark.parametrize("width", [64, 256, 1024])
def test_bits_full_vocab_binary_and_collision_free(width):
    sub = build_substrate("bits", V, width, seed=0)
    t = sub.table.numpy()
    assert t.shape == (V, width) and t.dtype == np.float32
    assert np.array_equal(np.unique(t), [0.0, 1.0])
    assert _distinct_rows(t) == V
    # the random columns are uniform: the overall density is near one half
    assert abs(float(t.mean()) - 0.5) < 0.01
    report = verify_substrate(sub)
    assert report["ok"], report["problems"]
    assert report["non_binary_entries"] == 0 and report["duplicate_rows"] == 0


def test_bits_1024_paper_table_is_512_bits_tiled_twice():
    sub = build_substrate("bits", V, 1024, seed=0, tile_period=512)
    t = sub.table.numpy()
    assert np.array_equal(t[:, :512], t[:, 512:])
    assert _distinct_rows(t[:, :512]) == V
    assert sub.meta["tile_period"] == 512


def test_bits_width_16_is_a_permutation_of_all_16_bit_codes():
    t = build_substrate("bits", V, 16, seed=3).table.numpy().astype(np.int64)
    values = t @ (1 << np.arange(15, -1, -1))
    assert np.array_equal(np.sort(values), np.arange(V))
    assert not np.array_equal(values, np.arange(V))  # permuted, not the token-id code


def test_bits_collision_free_by_construction_at_the_minimum_width():
    # 1000 ids in 10 bits: random rows would collide with near certainty (birthday bound); the
    # construction never does, whatever the seed
    for seed in range(20):
        t = build_substrate("bits", 1000, 10, seed=seed).table.numpy()
        assert _distinct_rows(t) == 1000


def test_bits_too_narrow_and_bad_tiling_fail_clearly():
    with pytest.raises(SubstrateError, match="at least 16 bits"):
        build_substrate("bits", V, 15)
    with pytest.raises(SubstrateError, match="at least 17 bits"):
        build_substrate("bits", V + 1, 16)
    with pytest.raises(SubstrateError, match="must divide"):
        build_substrate("bits", V, 1024, tile_period=300)
    with pytest.raises(SubstrateError, match="tile"):
        build_substrate("bits", V, 1024, tile_period=8)  # period below 16 bits


def test_bits_determinism_and_seed_sensitivity():
    a = build_substrate("bits", 4096, 64, seed=7)
    b = build_substrate("bits", 4096, 64, seed=7)
    c = build_substrate("bits", 4096, 64, seed=8)
    assert a.fingerprint == b.fingerprint
    assert np.array_equal(a.table.numpy(), b.table.numpy())
    assert c.fingerprint != a.fingerprint
    assert (a.table != c.table).float().mean().item() > 0.4


def test_token_id_full_vocab_msb_first():
    sub = build_substrate("token-id", V, 16)
    t = sub.table.numpy()
    assert t.shape == (V, 16)
    assert np.array_equal(np.unique(t), [0.0, 1.0])
    weights = 1 << np.arange(15, -1, -1)  # MSB first
    assert np.array_equal(t.astype(np.int64) @ weights, np.arange(V))
    assert t[65].tolist() == [0.0] * 9 + [1.0, 0, 0, 0, 0, 0, 1.0]  # 'A' = 0b1000001
    assert _distinct_rows(t) == V
    assert verify_substrate(sub)["ok"]


def test_token_id_lsb_padding_and_errors():
    msb = build_substrate("token-id", V, 16).table.numpy()
    lsb = build_substrate("token-id", V, 16, bit_order="lsb").table.numpy()
    assert np.array_equal(lsb, msb[:, ::-1])
    wide = build_substrate("token-id", 300, 12).table.numpy()  # 9 id bits + 3 zero columns in front
    assert np.all(wide[:, :3] == 0)
    assert np.array_equal(wide[:, 3:], build_substrate("token-id", 300, 9).table.numpy())
    # the seed does not change a token-id table
    assert build_substrate("token-id", 300, 9, seed=1).fingerprint == build_substrate("token-id", 300, 9).fingerprint
    with pytest.raises(SubstrateError, match="need 16 bits"):
        build_substrate("token-id", V, 15)
    with pytest.raises(SubstrateError, match="bit order"):
        build_substrate("token-id", V, 16, bit_order="middle")
