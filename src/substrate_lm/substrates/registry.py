"""The substrate registry: one builder per kind, the :class:`Substrate` record and its fingerprint.

A substrate is the frozen ``token_embeddings`` table of a model. Every kind is a pure function of
``(kind, vocabulary, width, seed, font, options)``; building it twice gives the same bytes (on the
same software stack, see the note on float kinds in :mod:`.pca`), and the table's fingerprint
(``"sha256:<hex>"`` of its float32 little-endian C-contiguous bytes) is what a model config records.

Kinds (one module each):

========== ====================================================== ===========================
kind       table                                                  module
========== ====================================================== ===========================
bits       random 0/1 rows, collision-free by construction        :mod:`.bits`
token-id   the binary code of each id (MSB first by default)      :mod:`.token_id`
float      random unique codes, PCA to the width, unit rows       :mod:`.float_codes`
glyph      Unifont glyph bitmaps (UNI_GLYPH), PCA, unit rows      :mod:`.glyph`
trainable  normal(0, 0.02) init of the unfrozen baseline          :mod:`.trainable`
========== ====================================================== ===========================
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .. import __version__
from ..errors import SubstrateError

# kind -> module (relative to this package) exposing build(vocab, width, seed, font, **options)
_MODULES: dict[str, str] = {
    "bits": ".bits",
    "token-id": ".token_id",
    "float": ".float_codes",
    "glyph": ".glyph",
    "trainable": ".trainable",
}
KINDS: tuple[str, ...] = tuple(_MODULES)
BINARY_KINDS: tuple[str, ...] = ("bits", "token-id")
UNIT_NORM_KINDS: tuple[str, ...] = ("float", "glyph")
# kinds whose rows must all differ (glyph rows of visually identical strings are equal by design)
DISTINCT_KINDS: tuple[str, ...] = ("bits", "token-id", "float")

#: Kinds whose table trains with the model; every other kind is frozen (``requires_grad=False``).
TRAINABLE_KINDS: tuple[str, ...] = ("trainable",)

#: Alternative names of the kinds, accepted wherever a kind or a substrate spec is read.
ALIASES: dict[str, str] = {
    "bit": "bits",
    "random-bits": "bits",
    "token_id": "token-id",
    "tokenid": "token-id",
    "id": "token-id",
    "float_codes": "float",
    "uni-glyph": "glyph",
    "uni_glyph": "glyph",
    "unfrozen": "trainable",
}


def normalize_kind(kind: str) -> str:
    """Map a kind name or alias (``"uni-glyph"``, ``"unfrozen"``, ...) to its canonical name."""
    k = str(kind).strip().lower()
    k = ALIASES.get(k, k)
    if k not in _MODULES:
        raise SubstrateError(f"unknown substrate kind {kind!r}; choose one of {', '.join(KINDS)} "
                             "(aliases: uni-glyph = glyph, unfrozen = trainable)")
    return k


def is_frozen(kind: str) -> bool:
    """Whether a kind's table is frozen in the model (every kind but the trainable baseline)."""
    return normalize_kind(kind) not in TRAINABLE_KINDS


#: Width of the ``token-id`` kind in the papers' 16-bit model (the id's own 16-bit code).
TOKEN_ID_WIDTH = 16

_SPEC_RE = re.compile(r"(\d+)-(bit|float|glyph)")


def parse_spec(spec: str, d_model: int) -> tuple[str, int]:
    """A substrate spec as ``(kind, width)``.

    ``"<width>-bit"`` is random 0/1 codes (``"16-bit"`` is the token id's own code, as in the
    papers), ``"<width>-float"`` and ``"<width>-glyph"`` their kinds at that width; a kind name or
    alias alone (``"bits"``, ``"uni-glyph"``, ``"unfrozen"``, ...) has the width ``d_model``
    (``token-id``: 16). Examples: ``"256-bit"`` -> ("bits", 256); ``"16-bit"`` -> ("token-id", 16);
    ``"glyph"`` -> ("glyph", d_model).

    Raises:
        SubstrateError: an unknown spec.
    """
    s = str(spec).strip().lower()
    m = _SPEC_RE.fullmatch(s)
    if m:
        width, what = int(m.group(1)), m.group(2)
        if what == "bit":
            return ("token-id" if width == TOKEN_ID_WIDTH else "bits"), width
        return what, width
    try:
        kind = normalize_kind(s)
    except SubstrateError:
        raise SubstrateError(
            f"unknown substrate spec {spec!r}; use <width>-bit, <width>-float, <width>-glyph, or a kind: "
            f"{', '.join(KINDS)} (aliases: {', '.join(f'{a} = {k}' for a, k in ALIASES.items())})"
        ) from None
    return kind, (TOKEN_ID_WIDTH if kind == "token-id" else int(d_model))


def paper_options(kind: str, width: int) -> dict[str, Any]:
    """Options that reproduce the published artefact of a paper preset, beyond kind and width.

    The Model_1024_BIT card's example row has period 512 (its first 512 bits repeat in the second
    512), so the paper's 1024-bit table is 512 random bits tiled twice. Nothing is known about
    tiling in the 64/256-bit models, so they get no tiling.
    """
    if normalize_kind(kind) == "bits" and int(width) == 1024:
        return {"tile_period": 512}
    return {}


def fingerprint(table: torch.Tensor | np.ndarray) -> str:
    """``"sha256:<hex>"`` of a table's float32, little-endian, C-contiguous bytes.

    Same semantics as :func:`substrate_lm.modeling.substrate_fingerprint`: a table stored as uint8
    0/1, float16 or float64 has the fingerprint of its float32 values.
    """
    if isinstance(table, torch.Tensor):
        arr = table.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    else:
        arr = np.asarray(table)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    arr = arr.reshape(arr.shape[0], -1)
    h = hashlib.sha256()
    # hash in row blocks of ~64 MiB so a big uint8 table never needs a full float32 copy
    rows = max(1, (64 << 20) // max(1, arr.shape[1] * 4))
    for start in range(0, arr.shape[0], rows):
        block = np.ascontiguousarray(arr[start : start + rows], dtype="<f4")
        h.update(memoryview(block).cast("B"))  # the bytes, without a tobytes() copy
    return "sha256:" + h.hexdigest()


def vocab_digest(vocab: Sequence[str]) -> str:
    """``"sha256:<hex>"`` of the id-ordered vocabulary strings (JSON list, UTF-8)."""
    blob = json.dumps(list(vocab), ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Substrate:
    """A built substrate table and how it was made.

    Attributes:
        table: ``torch.float32`` tensor ``[vocab_size, width]``.
        kind: canonical kind name (one of :data:`KINDS`).
        width: number of columns (``n_embed`` of the model).
        seed: the seed it was built with (unused by ``token-id`` and ``glyph``, still recorded).
        fingerprint: ``"sha256:<hex>"`` of the table (see :func:`fingerprint`).
        meta: JSON-able facts: vocab size and digest, options, font version and hash, package version.
    """

    table: torch.Tensor
    kind: str
    width: int
    seed: int | None
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    def __repr__(self) -> str:  # the default repr would print the whole table
        return (
            f"Substrate(kind={self.kind!r}, shape={tuple(self.table.shape)}, seed={self.seed}, "
            f"fingerprint={self.fingerprint[:19]}...)"
        )


def _check_vocab(vocab: Sequence[str] | int) -> tuple[int, list[str] | None]:
    if isinstance(vocab, (int, np.integer)) and not isinstance(vocab, bool):
        size, strings = int(vocab), None
    elif isinstance(vocab, (str, bytes)):
        raise SubstrateError("vocab must be the id-ordered list of token strings or the vocabulary size")
    else:
        strings = list(vocab)
        bad = next((i for i, s in enumerate(strings) if not isinstance(s, str)), None)
        if bad is not None:
            raise SubstrateError(f"vocab entry {bad} is {type(strings[bad]).__name__}, not str; pass token strings")
        size = len(strings)
    if size < 1:
        raise SubstrateError(f"vocabulary size must be at least 1, got {size}")
    return size, strings


def build_substrate(
    kind: str,
    vocab: Sequence[str] | int,
    width: int,
    seed: int = 0,
    font: str | None = None,
    **options: Any,
) -> Substrate:
    """Build a substrate table.

    Args:
        kind: one of :data:`KINDS` (aliases such as ``"uni-glyph"`` and ``"unfrozen"`` work).
        vocab: id-ordered token strings (needed by ``glyph``) or just the vocabulary size.
        width: number of columns (the model's ``n_embed``).
        seed: non-negative integer seed (ignored by ``token-id`` and ``glyph``).
        font: Unifont file for ``glyph`` (``.otf``/``.ttf``/``.hex``); default: the Debian install.
        **options: kind-specific options, e.g. ``tile_period`` (bits), ``bit_order`` (token-id),
            ``source_width`` (float), ``std`` (trainable), ``augment``/``cell`` (glyph).

    Returns:
        a :class:`Substrate` whose ``table`` is float32 ``[V, width]``.

    Raises:
        SubstrateError: unknown kind, bad width/seed/option, missing font, impossible request
            (e.g. fewer bits than ``ceil(log2 V)`` for a collision-free binary code).
    """
    kind = normalize_kind(kind)
    size, strings = _check_vocab(vocab)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or int(width) < 1:
        raise SubstrateError(f"width must be a positive integer, got {width!r}")
    width = int(width)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise SubstrateError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    module = importlib.import_module(_MODULES[kind], __package__)
    table, kind_meta = module.build(size, strings, width, seed, font=font, **options)
    table = torch.as_tensor(table)
    if table.dtype != torch.float32:
        table = table.to(torch.float32)
    table = table.contiguous()
    if tuple(table.shape) != (size, width):  # a builder bug, not a user error
        raise AssertionError(f"{kind} builder returned shape {tuple(table.shape)}, expected {(size, width)}")
    meta: dict[str, Any] = {
        "kind": kind,
        "vocab_size": size,
        "width": width,
        "seed": seed,
        "vocab_sha256": vocab_digest(strings) if strings is not None else None,
        "package_version": __version__,
    }
    meta.update(kind_meta)
    return Substrate(table=table, kind=kind, width=width, seed=seed, fingerprint=fingerprint(table), meta=meta)


def check_vocab(sub: Substrate, vocab: Sequence[str] | int) -> None:
    """Fail when a substrate does not fit a vocabulary.

    The row count must equal the vocabulary size. A ``glyph`` table also depends on the strings, so
    when it recorded a vocabulary digest the strings must match it too.

    Raises:
        SubstrateError: one line naming the mismatch.
    """
    size = int(vocab) if isinstance(vocab, (int, np.integer)) else len(vocab)
    if sub.vocab_size != size:
        raise SubstrateError(
            f"substrate has {sub.vocab_size:,} rows but the tokenizer has {size:,} ids; "
            f"build the substrate from this tokenizer (substrate-lm substrate build --tokenizer DIR)"
        )
    recorded = sub.meta.get("vocab_sha256")
    if sub.kind == "glyph" and recorded and not isinstance(vocab, (int, np.integer)):
        if vocab_digest(vocab) != recorded:
            raise SubstrateError(
                "glyph substrate was rendered from other token strings than this tokenizer's; rebuild it with --tokenizer DIR"
            )


def check_options(kind: str, options: dict[str, Any], allowed: Sequence[str]) -> None:
    """Raise a one-line error naming options a kind does not take."""
    extra = sorted(set(options) - set(allowed))
    if extra:
        hint = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise SubstrateError(f"substrate kind {kind!r} has no option {', '.join(extra)}; {hint}")


def id_bits(vocab_size: int) -> int:
    """Bits needed for distinct binary codes of ``vocab_size`` ids: ``max(1, ceil(log2 V))``."""
    return max(1, (int(vocab_size) - 1).bit_length())


def make_rng(seed: int, kind: str) -> np.random.Generator:
    """A numpy PCG64 generator for ``(seed, kind)``: kinds never share a random stream."""
    tag = int.from_bytes(hashlib.sha256(kind.encode()).digest()[:4], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag]))


__all__ = [
    "KINDS",
    "ALIASES",
    "TRAINABLE_KINDS",
    "TOKEN_ID_WIDTH",
    "is_frozen",
    "parse_spec",
    "BINARY_KINDS",
    "UNIT_NORM_KINDS",
    "DISTINCT_KINDS",
    "Substrate",
    "build_substrate",
    "fingerprint",
    "normalize_kind",
    "paper_options",
    "vocab_digest",
    "id_bits",
    "make_rng",
    "check_options",
    "check_vocab",
]
