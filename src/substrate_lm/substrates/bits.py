"""``bits``: random binary rows that are collision-free by construction (N_BIT models).

Construction for ``V`` ids, a code period ``P`` (= the width, or ``tile_period``) and a seed:

1. ``k = max(1, ceil(log2 V))`` columns carry an injective id code: the ``k``-bit binary of
   ``perm[id]``, where ``perm`` is a seeded random permutation of ``range(2**k)``. Distinct ids get
   distinct codes in these columns, so all rows differ whatever the other columns hold. This is
   why ``P >= k`` is required (``P == k == 16`` with ``V == 65,536`` gives a random permutation of
   all 16-bit codes) and a smaller period fails with a clear error.
2. The other ``P - k`` columns are seeded uniform random bits.
3. The id columns sit at ``k`` seeded random positions among the ``P`` (in random order), i.e. a
   seeded random column permutation of ``[id code | random bits]``.
4. ``tile_period``: the ``P``-column code is repeated ``width / P`` times. The published 1024-bit
   table is 512 random bits tiled twice (see :func:`.registry.paper_options`); the first ``P``
   columns are already unique, so tiling keeps rows distinct.

Every row is marginally a uniform random bit string; jointly the rows are guaranteed distinct.
Values are exactly 0.0 and 1.0 (float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SubstrateError
from .registry import check_options, id_bits, make_rng


def random_bit_codes(vocab_size: int, period: int, seed: int, stream: str = "bits") -> np.ndarray:
    """Collision-free random codes: uint8 0/1 ``[vocab_size, period]`` (steps 1-3 above).

    Args:
        vocab_size: number of rows ``V``.
        period: number of columns ``P``; must be at least ``ceil(log2 V)``.
        seed: non-negative seed.
        stream: random-stream name, so other kinds reusing these codes draw independent streams.
    """
    k = id_bits(vocab_size)
    if period < k:
        raise SubstrateError(
            f"{period} bits cannot give {vocab_size:,} distinct rows (need at least {k} bits, "
            f"2^{k} >= {vocab_size:,}); use a width (or --tile-period) of {k} or more"
        )
    rng = make_rng(seed, stream)
    # 1) injective id code: row i gets the k-bit binary of perm[i]
    perm = rng.permutation(1 << k)[:vocab_size]  # [V]
    shifts = np.arange(k - 1, -1, -1, dtype=np.int64)  # [k]
    id_cols = ((perm[:, None] >> shifts[None, :]) & 1).astype(np.uint8)  # [V, k]
    # 2) uniform random bits everywhere: draw whole bytes and unpack (8x fewer draws than bits)
    nbytes = (period + 7) // 8
    raw = np.frombuffer(rng.bytes(vocab_size * nbytes), dtype=np.uint8).reshape(vocab_size, nbytes)
    code = np.unpackbits(raw, axis=1, count=period)  # [V, P]
    # 3) the id bits overwrite k random columns, in random order; the other columns are iid
    #    uniform, so this equals "concatenate, then permute the columns" without moving V x P bytes
    code[:, rng.permutation(period)[:k]] = id_cols
    return code


def build(
    vocab_size: int,
    vocab: list[str] | None,
    width: int,
    seed: int,
    font: str | None = None,
    tile_period: int | None = None,
    **options: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Build the ``bits`` table: float32 0/1 ``[V, width]`` and its meta."""
    check_options("bits", options, ["tile_period"])
    period = width if tile_period in (None, 0) else int(tile_period)
    if period < 1 or width % period:
        raise SubstrateError(f"tile period {tile_period} must divide the width {width} (e.g. 512 for 1024)")
    code = random_bit_codes(vocab_size, period, seed)  # [V, P] uint8
    if period != width:
        code = np.tile(code, (1, width // period))  # [V, width]
    table = code.astype(np.float32)
    return table, {"tile_period": period if period != width else None, "id_bits": id_bits(vocab_size)}
