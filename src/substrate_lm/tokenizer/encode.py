"""Fast corpus encoding and the report of text the vocabulary cannot hold.

Encoding goes through the Rust batch path of ``tokenizers`` (``encode_batch_fast``: no offsets,
all cores via rayon), a batch of texts at a time, the next batch encoding in a worker thread while
the caller consumes the current one; Python only moves lists of ids.

What happens to text a bvv241 vocabulary cannot hold:

* characters beyond U+FFFF (emoji, rare CJK), private-use characters U+E000-U+F8FF (their ids hold
  special tokens and n-grams) and U+FFFF: one ``<unk>`` (57347) per character, by the BPE model's
  unknown token; ``decode`` gives ``"<unk>"`` back (or nothing with ``skip_special_tokens=True``);
* lone surrogates (U+D800-U+DFFF, e.g. from JSON ``"\\ud83d"`` escapes): not valid Unicode, so the
  Rust tokenizer rejects the whole string with a ``TypeError``; :func:`encode_corpus` and
  :func:`unk_report` encode them as one ``<unk>`` each and :func:`sanitize_text` makes a string
  safe for direct ``tokenizer(text)`` calls. They never map to ids 0xD800-0xDFFF, which hold n-grams;
* NUL and other C0/C1 controls are ordinary monograms (id == code point) and round-trip exactly;
  dropping them is the data pipeline's choice, not the tokenizer's.

The literal text ``<unk>`` is the special token itself (57347), so :func:`unk_report` counts it as
well; it reports unknown *tokens*, which for bvv241 equals the number of unknown characters.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from typing import Iterable, Iterator

from ..errors import SubstrateError
from .layout import BVV241_2_3

_SURROGATES = re.compile("[\ud800-\udfff]")


def backend_of(tokenizer):
    """The ``tokenizers.Tokenizer`` behind an HF fast tokenizer (or the argument itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "encode_batch"):
        raise SubstrateError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; load one with a tokenizer.json"
        )
    return backend


def unk_id_of(tokenizer) -> int | None:
    """Id of the unknown token, or ``None`` if the tokenizer has none."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        return int(unk)
    backend = backend_of(tokenizer)
    token = getattr(backend.model, "unk_token", None)
    return backend.token_to_id(token) if token else None


def sanitize_text(text: str, replacement: str = "<unk>") -> str:
    """Replace lone surrogates, which no Rust tokenizer accepts, by ``replacement``.

    With a bvv241 tokenizer the default ``"<unk>"`` encodes as the ``<unk>`` special token, so
    ``tokenizer(sanitize_text(t))`` gives the same ids as :func:`encode_corpus`.
    """
    return _SURROGATES.sub(replacement, text)


def _encode_batch(backend, batch: list[str], add_special_tokens: bool) -> list[list[int]]:
    fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in fast(batch, add_special_tokens=add_special_tokens)]


def _encode_slow(backend, text, add_special_tokens: bool, unk: int | None, index: int) -> list[int]:
    """One text that the batch path rejected: each lone surrogate becomes one unknown token."""
    if not isinstance(text, str):
        raise SubstrateError(f"text #{index} is a {type(text).__name__}, not a string")
    if unk is not None and unk in backend.get_added_tokens_decoder():
        # The unknown token is matched as a whole in text (bvv241: "<unk>"), so substitute it.
        return _encode_batch(backend, [_SURROGATES.sub(backend.id_to_token(unk), text)], add_special_tokens)[0]
    if unk is not None and not (add_special_tokens and backend.post_processor is not None):
        # Encode the pieces between surrogates and put one unknown id in each gap.
        ids: list[int] = []
        for k, part_ids in enumerate(_encode_batch(backend, _SURROGATES.split(text), False)):
            if k:
                ids.append(unk)
            ids.extend(part_ids)
        return ids
    # No usable unknown token: U+FFFD stands in for each surrogate.
    return _encode_batch(backend, [_SURROGATES.sub("\ufffd", text)], add_special_tokens)[0]


def _encode_safe(backend, batch: list, start: int, add_special_tokens: bool, unk: int | None) -> list[list[int]]:
    """A batch through the fast path; texts it rejects go one by one through the slow path."""
    try:
        return _encode_batch(backend, batch, add_special_tokens)
    except TypeError:  # a lone surrogate (or a non-string) somewhere in the batch
        out = []
        for k, text in enumerate(batch):
            try:
                out.append(_encode_batch(backend, [text], add_special_tokens)[0])
            except TypeError:
                out.append(_encode_slow(backend, text, add_special_tokens, unk, start + k))
        return out


def _batches(texts: Iterable[str], size: int) -> Iterator[tuple[int, list[str]]]:
    batch: list[str] = []
    start = 0
    for text in texts:
        batch.append(text)
        if len(batch) >= size:
            yield start, batch
            start += len(batch)
            batch = []
    if batch:
        yield start, batch


def encode_corpus(
    tokenizer,
    texts: Iterable[str],
    batch_size: int = 512,
    add_special_tokens: bool = False,
) -> Iterator[list[int]]:
    """Encode many texts fast, in order, one id list per text.

    Uses the Rust batch path (``encode_batch_fast``, all CPU cores unless
    ``TOKENIZERS_PARALLELISM=false``). The next batch is encoded in a worker thread (the Rust call
    releases the GIL) while the caller consumes the current one, so the caller's own work (writing
    shards, counting) overlaps with tokenization. Memory is bounded by two batches. Lone surrogates
    become one unknown token each instead of an error (see the module docstring).

    Args:
        tokenizer: HF fast tokenizer or ``tokenizers.Tokenizer``.
        texts: Iterable of strings (a generator is fine).
        batch_size: Texts per Rust call.
        add_special_tokens: Apply the tokenizer's post-processor (bvv241 has none: no-op).

    Yields:
        ``list[int]`` per text.
    """
    from concurrent.futures import ThreadPoolExecutor

    if batch_size < 1:
        raise SubstrateError(f"batch_size must be >= 1, got {batch_size}")
    backend = backend_of(tokenizer)
    unk = unk_id_of(tokenizer)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode_corpus") as pool:
        pending = None
        for start, batch in _batches(texts, batch_size):
            future = pool.submit(_encode_safe, backend, batch, start, add_special_tokens, unk)
            if pending is not None:
                yield from pending.result()
            pending = future
        if pending is not None:
            yield from pending.result()


def unknown_characters(text: str, layout=None) -> Counter:
    """Characters of ``text`` that a layout has no id for (default: bvv241-2-3), with counts."""
    if layout is None:
        layout = BVV241_2_3
    return Counter(c for c in text if not layout.holds_char(c))


def unk_report(tokenizer, texts: Iterable[str], batch_size: int = 512, top: int = 20) -> dict:
    """How much of a corpus becomes the unknown token.

    Args:
        tokenizer: HF fast tokenizer or ``tokenizers.Tokenizer``.
        texts: Iterable of strings.
        batch_size: Texts per Rust call.
        top: How many of the most frequent unknown characters to list.

    Returns:
        ``{"documents", "characters", "tokens", "unk_tokens", "unk_share" (unk tokens / tokens),
        "chars_per_token", "unknown_chars": [{"char", "codepoint", "count"}, ...]}``.
    """
    backend = backend_of(tokenizer)
    unk = unk_id_of(tokenizer)
    docs = chars = tokens = unks = 0
    unknown: Counter = Counter()
    # Remember texts containing an unknown token, to name the characters afterwards (rare path).
    pending: list[str] = []

    def name_unknowns() -> None:
        for text in pending:
            lone = _SURROGATES.findall(text)
            unknown.update(lone)
            clean = _SURROGATES.sub("", text) if lone else text
            enc = backend.encode(clean, add_special_tokens=False)
            unknown.update(clean[s:e] for i, (s, e) in zip(enc.ids, enc.offsets) if i == unk)
        pending.clear()

    current: deque[str] = deque()  # texts handed to encode_corpus, not yet matched with ids

    def tee() -> Iterator[str]:
        for t in texts:
            current.append(t)
            yield t

    for ids in encode_corpus(tokenizer, tee(), batch_size=batch_size):
        text = current.popleft()
        docs += 1
        chars += len(text)
        tokens += len(ids)
        if unk is not None:
            n = ids.count(unk)
            if n:
                unks += n
                pending.append(text)
        if len(pending) >= batch_size:
            name_unknowns()
    name_unknowns()
    return {
        "documents": docs,
        "characters": chars,
        "tokens": tokens,
        "unk_tokens": unks,
        "unk_share": unks / tokens if tokens else 0.0,
        "chars_per_token": chars / tokens if tokens else 0.0,
        "unknown_chars": [
            {"char": c, "codepoint": ", ".join(f"U+{ord(x):04X}" for x in c), "count": n}
            for c, n in unknown.most_common(top)
        ],
    }
