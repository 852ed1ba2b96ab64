"""Is a model's table the one its config says it is? Regenerate it from its kind and seed.

A fingerprint recorded next to a table only proves the table was not changed *after* the
fingerprint was written: whoever edits the table can write its new fingerprint too, and flip
``substrate_frozen`` or null the fingerprint to dodge the check. Every frozen kind is a pure
function of its recorded recipe (kind, vocabulary, width, seed, options, font), so
:func:`table_provenance_problem` rebuilds the table from ``substrate_meta`` and compares, whatever
the flags say:

* any table must carry a fingerprint, and match it (a trainable table its trained fingerprint);
* a table whose kind is a frozen substrate (``bits``, ``token-id``, ``float``, ``glyph``) must be the
  one its kind and seed regenerate: the same fingerprint, or for the PCA kinds (``float``,
  ``glyph``) the same values within rounding (another BLAS/LAPACK build may round the PCA
  differently in the last bits, see :mod:`.pca`);
* ``substrate_meta.kind``, when recorded, must agree with ``substrate_kind`` (a bits table relabelled
  ``trainable`` is refused).

Cost, measured on the 2-core box: regenerating the paper's 65,536 x 1024 ``bits`` table takes
about 0.5 s, a ``float`` table of that size about 3.7 s (PCA), a ``token-id`` table 10 ms. Each
recipe's fingerprint is remembered for the rest of the process, so a second load of a model with
the same substrate (evaluation of several models, the demo) costs nothing.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SubstrateError
from .registry import KINDS, TRAINABLE_KINDS, UNIT_NORM_KINDS, build_substrate, fingerprint, vocab_digest

#: Options each kind's builder takes, read back from ``substrate_meta``.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "bits": ("tile_period",),
    "token-id": ("bit_order",),
    "float": ("source_width",),
    "glyph": ("cell", "augment", "augment_seed"),
}
#: Kinds whose table does not depend on the seed.
_SEEDLESS = ("token-id", "glyph")

#: recipe key -> fingerprint of the regenerated table, for the life of the process.
_CACHE: dict[str, str] = {}

REMEDY = "re-export the model from an intact checkpoint (or rebuild it with init)"


def _recipe(kind: str, meta: dict, vocab_size: int, width: int) -> tuple[int, dict[str, Any]] | str:
    """``(seed, options)`` to rebuild the table, or a problem string."""
    seed = meta.get("seed")
    if kind in _SEEDLESS:
        seed = 0 if not isinstance(seed, int) else seed
    elif not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return (f"config.json records no substrate_meta seed for its {kind} table, so it cannot be checked "
                f"against the table its kind and seed regenerate; {REMEDY}")
    options = {k: meta[k] for k in _OPTIONS.get(kind, ()) if meta.get(k) is not None}
    if kind == "glyph":
        renderer = str(meta.get("renderer") or "")
        if renderer.startswith("pil-freetype-"):
            options["layout"] = renderer[len("pil-freetype-"):]
    return int(seed), options


def _key(kind, vocab_size, width, seed, options, vocab_sha, font_sha) -> str:
    return json.dumps([kind, vocab_size, width, seed, options, vocab_sha, font_sha], sort_keys=True, default=str)


def table_provenance_problem(config: dict, table: torch.Tensor | np.ndarray | None, *,
                             vocab: Sequence[str] | None = None, font: str | None = None,
                             table_fingerprint: str | None = None, atol: float | None = None) -> str | None:
    """What is wrong with a model's table given its ``config.json`` (None: nothing).

    Args:
        config: the model's config as a dict (``substrate_kind``, ``substrate_fingerprint``,
            ``substrate_meta``, ``vocab_size``, ``n_embed``).
        table: the table as loaded ``[V, n_embed]`` (None: only ``table_fingerprint`` is compared).
        vocab: the id-ordered token strings (a glyph table renders them); None for other kinds.
        font: Unifont file for a glyph table (default: as :func:`~.glyph.resolve_font` finds it).
        table_fingerprint: the table's fingerprint when the caller has it already.
        atol: how far a PCA kind's values may be from the regenerated ones (default: 1e-4 for a
            float32 table, 1e-2 for one stored in half precision).

    Returns:
        one line naming the problem and the fix, or None.
    """
    kind = config.get("substrate_kind")
    if kind not in KINDS:
        return f"config.json names an unknown substrate_kind {kind!r}; {REMEDY}"
    recorded = config.get("substrate_fingerprint")
    if not isinstance(recorded, str) or not recorded:
        what = "its trained fingerprint" if kind in TRAINABLE_KINDS else "the fingerprint of its kind and seed"
        return (f"config.json records no substrate_fingerprint; a {kind} table must carry {what}: {REMEDY}")
    meta = config.get("substrate_meta") or {}
    if not isinstance(meta, dict):
        return f"config.json's substrate_meta is not a mapping; {REMEDY}"
    if meta.get("kind") not in (None, kind):
        return (f"config.json says the table is {kind} but its substrate_meta says it was built as "
                f"{meta.get('kind')}; the config was edited: {REMEDY}")
    if table is not None and table_fingerprint is None:
        table_fingerprint = fingerprint(table)
    if table_fingerprint is not None and table_fingerprint != recorded:
        return (f"the table's fingerprint {table_fingerprint[:23]}... does not match the recorded "
                f"{recorded[:23]}... (an edited or damaged table); {REMEDY}")
    if kind in TRAINABLE_KINDS:
        return None
    vocab_size, width = config.get("vocab_size"), config.get("n_embed")
    if not isinstance(vocab_size, int) or not isinstance(width, int):
        return f"config.json has no integer vocab_size / n_embed; {REMEDY}"
    recipe = _recipe(kind, meta, vocab_size, width)
    if isinstance(recipe, str):
        return recipe
    seed, options = recipe
    vocab_sha = None
    if kind == "glyph":
        if vocab is None:
            return ("a glyph table renders its tokens, but no tokenizer was found to check it against; "
                    "keep the tokenizer in the model folder (export with --tokenizer)")
        vocab_sha = vocab_digest(vocab)
        if meta.get("vocab_sha256") and meta["vocab_sha256"] != vocab_sha:
            return ("the glyph table was rendered from another vocabulary than the tokenizer in the folder "
                    f"(substrate_meta.vocab_sha256 differs); {REMEDY}")
    key = _key(kind, vocab_size, width, seed, options, vocab_sha, meta.get("font_sha256"))
    if _CACHE.get(key) == recorded:
        return None
    try:
        if kind == "glyph":
            from .glyph import resolve_font

            info = resolve_font(font)
            if meta.get("font_sha256") and meta["font_sha256"] != "sha256:" + info.sha256:
                return (f"cannot check the glyph table: it was rendered with Unifont {meta.get('font_version')} "
                        f"({str(meta['font_sha256'])[:19]}...) but {info.path} is another version "
                        f"({info.version}); install that version or point SUBSTRATE_LM_UNIFONT at it")
            font = info.path
        sub = build_substrate(kind, vocab if kind == "glyph" else vocab_size, width, seed=seed, font=font,
                              **options)
    except SubstrateError as exc:
        return f"cannot check the {kind} table against the one its kind regenerates: {exc}"
    _CACHE[key] = sub.fingerprint
    if sub.fingerprint == recorded:
        return None
    if kind in UNIT_NORM_KINDS and table is not None:
        t = torch.as_tensor(table)
        tol = atol if atol is not None else 1e-4 if t.dtype in (torch.float32, torch.float64) else 1e-2
        if tuple(t.shape) == tuple(sub.table.shape):
            diff = float((t.detach().to("cpu", torch.float32) - sub.table).abs().max())
            if diff <= tol:
                return None  # the same PCA, rounded by another BLAS/LAPACK build
    return (f"the {kind} table is not the one its kind and seed {seed} regenerate (fingerprint "
            f"{sub.fingerprint[:23]}..., recorded {recorded[:23]}...): the table or its config was edited; "
            f"{REMEDY}")


__all__ = ["table_provenance_problem", "REMEDY"]
