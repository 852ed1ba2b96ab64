"""``float``: random unique codes, PCA to the width, rows L2-normalised (the N_FLOAT models).

The cards describe "assign each token a random unique code -> convert to vector -> PCA projection
to n_embed -> L2 normalize". The source code width is not published; here the codes are the
collision-free random binary codes of :mod:`.bits` at ``source_width`` columns (default
``max(1024, width)``, untiled so the code has full rank), drawn from their own random stream so a
``float`` table is not a rotation of the ``bits`` table of the same seed. PCA keeps the top
``width`` axes (with ``width == source_width`` it is a pure centring + rotation), see :mod:`.pca`.
"""

from __future__ import annotations

from typing import Any

from ..errors import SubstrateError
from .bits import random_bit_codes
from .pca import pca_unit_rows
from .registry import check_options


def build(
    vocab_size: int,
    vocab: list[str] | None,
    width: int,
    seed: int,
    font: str | None = None,
    source_width: int | None = None,
    **options: Any,
) -> tuple[Any, dict[str, Any]]:
    """Build the ``float`` table: float32 unit rows ``[V, width]`` and its meta."""
    check_options("float", options, ["source_width"])
    src = max(1024, width) if source_width is None else int(source_width)
    if src < width:
        raise SubstrateError(f"source_width {src} is below the width {width}; PCA cannot add dimensions")
    codes = random_bit_codes(vocab_size, src, seed, stream="float")  # [V, src] uint8
    table, info = pca_unit_rows(codes, width)  # [V, width] float32
    return table, {"source_width": src, **info}
