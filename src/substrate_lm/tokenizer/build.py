"""Assemble a bvv241 tokenizer: vocabulary, merges, BPE model, Hugging Face wrapper, save.

Construction (published ``_tokenizer-builder-bvv241-2-3.ipynb``; ranges from the layout):

1. select n-grams: per language and length ``n in layout.ns``, the ``top_k`` most frequent ones;
   the union is sorted by (descending length, string);
2. vocabulary: monogram ids hold ``chr(id)``; the special block holds the special tokens in their
   published order, then ``<special_token_{id}>``; the n-gram ranges receive the sorted n-grams in
   order; ids left over hold ``<unused_{id}>``;
3. merges: for each n-gram in that order, every split ``(left, right)`` whose two pieces are both
   in the vocabulary. The merge rank follows the n-gram order, so longer n-grams take priority,
   exactly as published; an n-gram none of whose splits is in the vocabulary gets no merge and can
   never be produced (158 of the 8,177 in bvv241-2-3, e.g. ``'BBC'``), which is kept for exactness;
4. a ``tokenizers`` BPE model over that vocabulary with no normalizer, no pre-tokenizer, no
   post-processor (``encode`` adds no ``<s>`` or ``</s>``, as published and as the model card's
   ``encode("A", add_special_tokens=False) == [65]`` and the published ``encode('hello the test')``
   show; training data code appends ``</s>`` itself) and an empty ``Sequence`` decoder, so pieces
   are concatenated and ``decode(encode(text)) == text`` for text the vocabulary holds. The 23
   named special tokens are registered as special added tokens: ``"<s>"`` in text encodes to
   57345, and ``decode(..., skip_special_tokens=True)`` drops them.

Characters without an id (beyond U+FFFF, private use U+E000-U+F8FF, U+FFFF) become one ``<unk>``
each; see :mod:`substrate_lm.tokenizer.encode` for lone surrogates and the ``<unk>`` report.

Two deliberate filters, neither of which touches the published statistics: an n-gram containing a
character the layout has no monogram for is dropped (BPE could never produce it), and so is one
that equals a special or placeholder string.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ..errors import SubstrateError
from ..fsutil import atomic_write_bytes, clean_debris, disk_error, hold_folder
from .corpus import iter_corpus
from .layout import BVV241_2_3, VocabLayout
from .ngram_file import Stats, read_ngram_file, validate_stats, write_ngram_file
from .stats import ngram_stats_from_pairs

if TYPE_CHECKING:  # transformers is imported lazily: it takes seconds
    from transformers import PreTrainedTokenizerFast


@dataclass
class VocabPlan:
    """The planned vocabulary before it becomes a tokenizer.

    Attributes:
        layout: The layout it follows.
        tokens: Id-ordered vocabulary strings (``len == layout.vocab_size``).
        ngrams: Selected n-grams in assignment order.
        merges: BPE merges in priority order.
        dropped: Reasons -> number of n-grams left out by the filters.
    """

    layout: VocabLayout
    tokens: list[str]
    ngrams: list[str]
    merges: list[tuple[str, str]]
    dropped: dict[str, int] = field(default_factory=dict)


def _filter_langs(stats: Stats, langs: Sequence[str] | None) -> Stats:
    if langs is None:
        return stats
    by_lang = {e["lang"]: e for e in stats}
    missing = [lang for lang in langs if lang not in by_lang]
    if missing:
        raise SubstrateError(
            f"no statistics for language(s) {', '.join(missing)}; available: {', '.join(by_lang) or 'none'}"
        )
    return [by_lang[lang] for lang in dict.fromkeys(langs)]


def _union(stats: Stats, ns: Iterable[int], top_k: int, extra: Iterable[str]) -> set[str]:
    grams: set[str] = set(extra)
    for entry in stats:
        for n in ns:
            pairs = entry["top_ngrams"].get(n, ())
            # Stable sort by count: files are already ranked, ties keep file order.
            ranked = sorted(pairs, key=lambda p: -p[1]) if any(
                a[1] < b[1] for a, b in zip(pairs, pairs[1:])
            ) else pairs
            grams.update(g for g, _ in ranked[:top_k])
    return grams


def select_ngrams(
    stats: Stats,
    layout: VocabLayout = BVV241_2_3,
    langs: Sequence[str] | None = None,
    top_k: int | None = None,
    extra_strings: Iterable[str] = (),
) -> tuple[list[str], dict[str, int]]:
    """Pick the n-grams for a layout: top ``top_k`` per length and language, filtered and sorted.

    Args:
        stats: Statistics in the published format.
        layout: Target layout (gives ``ns``, the default ``top_k`` and the capacity).
        langs: Languages to use (default: all in ``stats``, in file order).
        top_k: N-grams per length and language (default ``layout.top_k``).
        extra_strings: More multi-character strings to include (the ``max`` variant adds the
            strings common to several popular tokenizers).

    Returns:
        ``(ngrams sorted by (-len, string), dropped counts by reason)``.

    Raises:
        SubstrateError: More n-grams than the layout's n-gram ranges hold (the message gives the
            largest ``top_k`` that fits).
    """
    top_k = layout.top_k if top_k is None else int(top_k)
    if top_k < 1:
        raise SubstrateError(f"top_k must be >= 1, got {top_k}")
    stats = _filter_langs(validate_stats(stats), langs)
    extra = list(extra_strings)
    reserved = _reserved_strings(layout)

    def keep(grams: set[str]) -> tuple[list[str], dict[str, int]]:
        dropped = {"too_short": 0, "unreachable_char": 0, "reserved_string": 0}
        out = []
        for g in grams:
            if len(g) < 2:
                dropped["too_short"] += 1
            elif not all(layout.holds_char(c) for c in g):
                dropped["unreachable_char"] += 1
            elif g in reserved:
                dropped["reserved_string"] += 1
            else:
                out.append(g)
        out.sort(key=lambda s: (-len(s), s))
        return out, {k: v for k, v in dropped.items() if v}

    ngrams, dropped = keep(_union(stats, layout.ns, top_k, extra))
    capacity = layout.ngram_capacity
    if len(ngrams) > capacity:
        lo, hi = 0, top_k  # largest k with len(keep(union(k))) <= capacity, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(keep(_union(stats, layout.ns, mid, extra))[0]) <= capacity:
                lo = mid
            else:
                hi = mid - 1
        hint = f"use --top-k {lo} or fewer" if lo else "use fewer languages or extra strings"
        raise SubstrateError(
            f"{len(ngrams)} n-grams do not fit the {capacity} n-gram ids of layout {layout.name}; {hint}"
        )
    return ngrams, dropped


def _reserved_strings(layout: VocabLayout) -> "_Reserved":
    return _Reserved(layout)


class _Reserved:
    """Membership test for special, special-placeholder and unused-placeholder strings."""

    def __init__(self, layout: VocabLayout) -> None:
        lo, hi = layout.special_range
        self.fixed = set(layout.special_tokens)
        self.fixed.update(layout.special_placeholder.format(id=i) for i in range(lo, hi + 1))
        # "<unused_{id}>" exists for any id; test its shape instead of listing every id.
        self.prefix, _, self.suffix = layout.unused_placeholder.partition("{id}")

    def __contains__(self, s: str) -> bool:
        if s in self.fixed:
            return True
        if s.startswith(self.prefix) and s.endswith(self.suffix):
            middle = s[len(self.prefix) : len(s) - len(self.suffix)]
            return middle.isascii() and middle.isdigit()
        return False


def plan_vocabulary(ngrams: Sequence[str], layout: VocabLayout = BVV241_2_3, dropped=None) -> VocabPlan:
    """Lay out the vocabulary and derive the merges for already selected, sorted n-grams.

    Args:
        ngrams: N-grams in assignment order (see :func:`select_ngrams`).
        layout: Target layout.
        dropped: Filter counts to carry along.
    """
    slots = layout.ngram_slots()
    if len(ngrams) > len(slots):
        raise SubstrateError(f"{len(ngrams)} n-grams do not fit the {len(slots)} n-gram ids of layout {layout.name}")
    tokens: list[str | None] = [None] * layout.vocab_size
    for i in layout.monogram_ids():
        tokens[i] = chr(i)
    lo, hi = layout.special_range
    for i in range(lo, hi + 1):
        k = i - lo
        tokens[i] = layout.special_tokens[k] if k < len(layout.special_tokens) else layout.special_placeholder.format(id=i)
    for i, g in zip(slots, ngrams):
        tokens[i] = g
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = layout.unused_placeholder.format(id=i)
    index = {t: i for i, t in enumerate(tokens)}
    if len(index) != len(tokens):
        raise SubstrateError(f"layout {layout.name}: vocabulary strings are not unique; check the n-grams")
    merges = [
        (g[:k], g[k:]) for g in ngrams for k in range(1, len(g)) if g[:k] in index and g[k:] in index
    ]
    return VocabPlan(layout=layout, tokens=tokens, ngrams=list(ngrams), merges=merges, dropped=dict(dropped or {}))


def tokenizer_from_plan(plan: VocabPlan) -> "PreTrainedTokenizerFast":
    """Turn a plan into a ``PreTrainedTokenizerFast`` (BPE, no pre-tokenizer, joining decoder)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    layout = plan.layout
    vocab = {t: i for i, t in enumerate(plan.tokens)}
    backend = Tokenizer(
        models.BPE(vocab=vocab, merges=plan.merges, unk_token=layout.unk_token, fuse_unk=False, byte_fallback=False)
    )
    # An empty decoder sequence concatenates pieces; with no decoder tokenizers would join with spaces.
    backend.decoder = decoders.Sequence([])
    # Named specials are matched as whole tokens in input text ("<s>" -> 57345) and skipped by
    # decode(skip_special_tokens=True); placeholders stay plain, unreachable vocabulary entries.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in layout.special_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=layout.bos_token,
        eos_token=layout.eos_token,
        unk_token=layout.unk_token,
        pad_token=layout.pad_token,
        # The default clean-up would turn " ." into "." and break decode(encode(x)) == x.
        clean_up_tokenization_spaces=False,
    )


def build_from_stats(
    stats: Stats,
    layout: VocabLayout = BVV241_2_3,
    langs: Sequence[str] | None = None,
    top_k: int | None = None,
    extra_strings: Iterable[str] = (),
) -> "PreTrainedTokenizerFast":
    """Build a bvv241 tokenizer from n-gram statistics.

    Args:
        stats: ``[{"lang", "language_name", "top_ngrams": {n: [(gram, count), ...]}}, ...]``.
        layout: Vocabulary layout (``BVV241_2_3``, ``BVV241_MAX`` or your own).
        langs: Languages to take n-grams from (default: all).
        top_k: N-grams per length and language (default ``layout.top_k``, 338 for bvv241-2-3).
        extra_strings: Additional multi-character strings for the n-gram ranges.

    Returns:
        The tokenizer (``vocab_size == layout.vocab_size``).
    """
    ngrams, dropped = select_ngrams(stats, layout, langs, top_k, extra_strings)
    return tokenizer_from_plan(plan_vocabulary(ngrams, layout, dropped))


def build_from_ngram_file(
    path: str | os.PathLike,
    layout: VocabLayout = BVV241_2_3,
    langs: Sequence[str] | None = None,
    top_k: int | None = None,
) -> "PreTrainedTokenizerFast":
    """Build the tokenizer of a published statistics file (``ngrams-2-3.txt`` gives bvv241-2-3).

    Args:
        path: Statistics file (Python literal or JSON).
        layout: Vocabulary layout.
        langs: Languages (default: all in the file).
        top_k: N-grams per length and language (default ``layout.top_k``).
    """
    return build_from_stats(read_ngram_file(path), layout=layout, langs=langs, top_k=top_k)


def build_from_corpus(
    paths: Iterable[str | os.PathLike],
    langs: Sequence[str] | None = None,
    top_k: int | None = None,
    layout: VocabLayout = BVV241_2_3,
    stats_out: str | os.PathLike | None = None,
    stats_top_k: int = 1000,
) -> "PreTrainedTokenizerFast":
    """Build a bvv241-style tokenizer for a corpus: n-gram statistics, then the same construction.

    Args:
        paths: Text files, folders, JSONL files (see :mod:`substrate_lm.tokenizer.corpus`).
        langs: Languages to count (default: every language the documents name).
        top_k: N-grams per length and language in the vocabulary (default ``layout.top_k``).
        layout: Vocabulary layout.
        stats_out: Where to write the statistics (published format) for reuse with
            :func:`build_from_ngram_file`.
        stats_top_k: N-grams kept per length and language in the statistics (at least ``top_k``).
    """
    top_k = layout.top_k if top_k is None else int(top_k)
    stats = ngram_stats_from_pairs(iter_corpus(paths, langs), ns=layout.ns, top_k=max(top_k, stats_top_k), langs=langs)
    if not stats or not any(pairs for e in stats for pairs in e["top_ngrams"].values()):
        raise SubstrateError("the corpus gave no n-grams; check the paths and --langs")
    if stats_out is not None:
        write_ngram_file(stats, stats_out)
    return build_from_stats(stats, layout=layout, top_k=top_k)


_TMP_DIR = ".tmp-tokenizer-"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_tokenizer(tokenizer, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save as a standard HF tokenizer folder, each file written atomically.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` (for the generic class, as built here:
    ``PreTrainedTokenizerFast``, which transformers 4 and 5 both load without rebuilding the
    pipeline; named classes keep their own) and ``special_tokens_map.json``.

    Args:
        tokenizer: A fast HF tokenizer.
        out_dir: Destination folder (created).
        overwrite: Replace an existing ``tokenizer.json`` there.

    Raises:
        SubstrateError: ``out_dir`` is a file or already holds a tokenizer (without ``overwrite``),
            or a write failed (``disk full while writing ...``).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SubstrateError(f"{out} is a file; pass a folder for the tokenizer")
    if (out / "tokenizer.json").exists() and not overwrite:
        raise SubstrateError(f"{out} already holds a tokenizer; choose another folder or pass --overwrite")
    try:
        return _save_tokenizer(tokenizer, out)
    except OSError as exc:  # a full disk, a read-only folder: one line, nothing half-written
        raise disk_error(exc, f"the tokenizer in {out}", fix="run the command again") from None


def _save_tokenizer(tokenizer, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    clean_debris(out, names=_TOKENIZER_FILES, prefixes=(_TMP_DIR,))  # what a killed save left
    with tempfile.TemporaryDirectory(dir=out, prefix=_TMP_DIR) as tmp:
        held = hold_folder(tmp)
        try:
            tokenizer.save_pretrained(tmp)
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        finally:
            if held is not None:
                os.close(held)
    from transformers import PreTrainedTokenizerFast

    config = json.loads(files.get("tokenizer_config.json", b"{}"))
    if type(tokenizer) is PreTrainedTokenizerFast:
        # transformers 5 writes its own class name ("TokenizersBackend"), unknown to transformers 4.
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config["clean_up_tokenization_spaces"] = False
    special = {}
    for role in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(tokenizer, role, None)
        if value is not None:
            config[role] = str(value)
            special[role] = str(value)
    files["tokenizer_config.json"] = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if "tokenizer.json" not in files:
        raise SubstrateError(f"{type(tokenizer).__name__} is not a fast tokenizer; only fast tokenizers can be saved here")
    files["tokenizer.json"] = _without_identity_post_processor(files["tokenizer.json"])
    files["special_tokens_map.json"] = (json.dumps(special, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    # tokenizer.json last: its presence marks a complete folder.
    for name in sorted(files, key=lambda n: n == "tokenizer.json"):
        atomic_write_bytes(out / name, files[name])
    return out


def _without_identity_post_processor(raw: bytes) -> bytes:
    """Store ``post_processor: null`` (the published form) instead of transformers 5's do-nothing
    ``TemplateProcessing("$A")``; any post-processor that adds tokens is kept."""
    data = json.loads(raw)
    post = data.get("post_processor")
    identity = (
        isinstance(post, dict)
        and post.get("type") == "TemplateProcessing"
        and not post.get("special_tokens")
        and post.get("single") == [{"Sequence": {"id": "A", "type_id": 0}}]
    )
    if not identity:
        return raw
    data["post_processor"] = None
    return json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
