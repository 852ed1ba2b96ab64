"""Look inside a tokenizer: id-ordered strings, layout detection, ranges, pieces, chars/token.

Works on any HF fast tokenizer; the range names (monogram, special, reserved, ngram, unused) are
reported when the vocabulary follows a known bvv241 layout.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Sequence

from .encode import backend_of, encode_corpus, sanitize_text, unk_id_of
from .layout import LAYOUTS, MONOGRAM, NGRAM, SPECIAL, VocabLayout


def vocab_strings(tokenizer) -> list[str]:
    """Id-ordered vocabulary strings, raw as stored (``'Ġthe'`` stays ``'Ġthe'``).

    The length is the highest id + 1 over the model vocabulary and added tokens, i.e. the number
    of embedding rows a model needs (65,536 for bvv241-2-3). Ids that hold no string (holes in
    some vocabularies) give ``""``.
    """
    backend = backend_of(tokenizer)
    vocab = backend.get_vocab(with_added_tokens=True)
    size = max(vocab.values(), default=-1) + 1
    out = [""] * size
    for token, i in vocab.items():
        out[i] = token
    return out


def detect_layout(tokenizer, layouts: Iterable[VocabLayout] = LAYOUTS.values()) -> VocabLayout | None:
    """The bvv241 layout a tokenizer follows, or ``None``.

    A layout matches when the vocabulary size agrees, monograms sit at their code points
    (sampled across scripts) and the named special tokens sit at their ids.
    """
    backend = backend_of(tokenizer)
    size = backend.get_vocab_size(with_added_tokens=True)
    for layout in layouts:
        if size != layout.vocab_size:
            continue
        probes = [cp for cp in (0x41, 0x3B1, 0x416, 0x5D0, 0x627, 0x915, 0x4E00, 0xAC00, 0xFF01) if layout.holds_char(chr(cp))]
        if all(backend.token_to_id(chr(cp)) == cp for cp in probes) and all(
            backend.token_to_id(t) == layout.special_id(t) for t in layout.special_tokens
        ):
            return layout
    return None


def token_table(tokenizer, text: str, layout: VocabLayout | None = None) -> list[dict]:
    """Per-token rows for ``text``: ``{"id", "piece", "kind", "span"}``.

    ``kind`` is the layout range (or ``"token"`` when no bvv241 layout is known); ``span`` is the
    character span in ``text``.
    """
    backend = backend_of(tokenizer)
    layout = layout or detect_layout(tokenizer)
    enc = backend.encode(sanitize_text(text), add_special_tokens=False)
    rows = []
    for i, piece, span in zip(enc.ids, enc.tokens, enc.offsets):
        kind = layout.kind_of(i, piece) if layout else "token"
        rows.append({"id": i, "piece": piece, "kind": kind, "span": tuple(span)})
    return rows


def tokenizer_summary(tokenizer, sample: Sequence[str] = ()) -> dict:
    """Facts about a tokenizer, and its efficiency on sample texts.

    Returns:
        ``{"class", "vocab_size", "layout", "ranges": {kind: count}, "ngram_lengths": {n: count},
        "merges", "specials": {role: [token, id]}, "pre_tokenizer", "decoder", "post_processor"}``,
        plus ``"sample": {"documents", "characters", "tokens", "chars_per_token", "unk_tokens"}``
        when ``sample`` is given.
    """
    backend = backend_of(tokenizer)
    layout = detect_layout(tokenizer)
    strings = vocab_strings(tokenizer)
    data = json.loads(backend.to_str())
    model = data.get("model", {})
    kinds: Counter = Counter()
    lengths: Counter = Counter()
    if layout:
        for i, s in enumerate(strings):
            kind = layout.kind_of(i, s)
            kinds[kind] += 1
            if kind == NGRAM:
                lengths[len(s)] += 1
    specials = {}
    for role in ("bos_token", "eos_token", "unk_token", "pad_token"):
        tok = getattr(tokenizer, role, None)
        if tok is not None:
            specials[role] = [str(tok), backend.token_to_id(str(tok))]
    summary = {
        "class": type(tokenizer).__name__,
        "vocab_size": len(strings),
        "layout": layout.name if layout else None,
        "ranges": {k: kinds[k] for k in (MONOGRAM, SPECIAL, "reserved", NGRAM, "unused") if kinds[k]},
        "ngram_lengths": dict(sorted(lengths.items())),
        "merges": len(model.get("merges", [])),
        "specials": specials,
        "pre_tokenizer": (data.get("pre_tokenizer") or {}).get("type"),
        "decoder": (data.get("decoder") or {}).get("type"),
        "post_processor": (data.get("post_processor") or {}).get("type"),
    }
    if sample:
        unk = unk_id_of(tokenizer)
        ids = list(encode_corpus(tokenizer, sample))
        n_tokens = sum(map(len, ids))
        n_chars = sum(map(len, sample))
        summary["sample"] = {
            "documents": len(sample),
            "characters": n_chars,
            "tokens": n_tokens,
            "chars_per_token": round(n_chars / n_tokens, 3) if n_tokens else 0.0,
            "unk_tokens": sum(x.count(unk) for x in ids) if unk is not None else 0,
        }
    return summary
