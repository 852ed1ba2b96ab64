"""``token-id``: each row is the binary code of its own id (the 16_BIT models).

For ``V`` ids the code has ``k = max(1, ceil(log2 V))`` bits (16 for the 65,536-id bvv241
vocabulary). Bit order is MSB first by default: column 0 is the most significant bit, so id 65
(``'A'``) is ``0000000001000001``. ``bit_order="lsb"`` reverses the columns. A width above ``k``
pads with constant zero columns on the high-order side (in front for MSB first, at the end for
LSB first); a width below ``k`` cannot keep ids apart and fails. The seed is not used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SubstrateError
from .registry import check_options, id_bits

BIT_ORDERS = ("msb", "lsb")


def id_codes(vocab_size: int, width: int, bit_order: str = "msb") -> np.ndarray:
    """uint8 0/1 ``[vocab_size, width]``: the binary code of each id in ``bit_order``."""
    order = str(bit_order).lower().replace("-first", "").replace("_first", "")
    if order not in BIT_ORDERS:
        raise SubstrateError(f"bit order {bit_order!r} is not 'msb' or 'lsb'")
    k = id_bits(vocab_size)
    if width < k:
        raise SubstrateError(
            f"token-id codes of {vocab_size:,} ids need {k} bits but the width is {width}; use width >= {k}"
        )
    ids = np.arange(vocab_size, dtype=np.int64)  # [V]
    shifts = np.arange(k - 1, -1, -1, dtype=np.int64)  # MSB first: column j holds bit k-1-j
    code = ((ids[:, None] >> shifts[None, :]) & 1).astype(np.uint8)  # [V, k]
    pad = np.zeros((vocab_size, width - k), dtype=np.uint8)  # high-order zero bits
    if order == "lsb":
        return np.ascontiguousarray(np.concatenate([code[:, ::-1], pad], axis=1))  # [V, width]
    return np.concatenate([pad, code], axis=1)  # [V, width]


def build(
    vocab_size: int,
    vocab: list[str] | None,
    width: int,
    seed: int,
    font: str | None = None,
    bit_order: str = "msb",
    **options: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Build the ``token-id`` table: float32 0/1 ``[V, width]`` and its meta."""
    check_options("token-id", options, ["bit_order"])
    codes = id_codes(vocab_size, width, bit_order)
    order = "lsb" if str(bit_order).lower().startswith("lsb") else "msb"
    return codes.astype(np.float32), {"bit_order": order, "id_bits": id_bits(vocab_size), "seed_used": False}
