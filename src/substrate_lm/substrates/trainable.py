"""``trainable``: the initial table of the unfrozen baseline (Model_unfrozen).

The baseline's embedding is an ordinary ``nn.Embedding`` trained with the rest of the model. Its
init is not published; this uses ``normal(0, std)`` with ``std = 0.02`` (GPT-2 convention), drawn
from a seeded ``torch.Generator`` so the starting point is reproducible.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SubstrateError
from .registry import check_options


def build(
    vocab_size: int,
    vocab: list[str] | None,
    width: int,
    seed: int,
    font: str | None = None,
    std: float = 0.02,
    **options: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Build the ``trainable`` init: float32 ``[V, width]`` ~ normal(0, std) and its meta."""
    check_options("trainable", options, ["std"])
    std = float(std)
    if not std > 0:
        raise SubstrateError(f"trainable init std must be positive, got {std}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    table = torch.randn(vocab_size, width, generator=gen, dtype=torch.float32).mul_(std)  # [V, width], in place
    return table, {"init": "normal", "std": std}
