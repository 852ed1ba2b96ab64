"""Tokenise corpora into resumable uint16 token shards.

Layout of a prepared directory::

    meta.json            format, tokenizer identity, preparation settings (written first)
    manifest.json        progress: finished shards, stream position, pending tails (the commit)
    train-00000.bin ...  uint16 little-endian token ids, ``shard_tokens`` each (last one shorter)
    val-00000.bin ...
    stats.json           documents, characters, tokens, chars/token, <unk> count/share per split

Sources follow each other in the stream, so each source's validation tokens are one contiguous
range of the ``val`` stream; ``manifest.json`` records, per source, its ``tokens`` (eos included),
``characters`` and ``documents`` there (``splits.val.sources``, in source order; the ranges are the
running sums, see :meth:`~substrate_lm.data.TokenShards.source_ranges`). A folder prepared before
this record existed lacks it (and so does one resumed from such a folder's unfinished manifest).

The token stream of a split is its documents in source order, each followed by the eos id.
The split is decided per *unit* of text: a document, or each piece (at most ``piece_chars``
characters, cut at whitespace) of a longer one. A unit goes to ``val`` when
``blake2b(key=seed, text) / 2**64 < val_fraction`` (a world corpus keeps its own split), so the
validation text is about ``val_fraction`` of the *characters* even for a few long books, and the
split depends on the text and the seed only: not on order, batching, or on how often the run was
interrupted. Where a document changes split between two pieces, each side gets a document
boundary (eos) there. A corpus too small for the hash to pick any unit (e.g. three short
documents at 1%) still gets a validation split: at the end, the last units of the training
stream, as many as reach ``val_fraction`` of the characters (at least one, never all of
``train``), are moved to ``val`` (``stats.json`` reports how many as ``val_from_train_tail``).

Plain text is encoded as text: a literal ``</s>``, ``<s>`` or ``[INST]`` in a document becomes
its characters, never a control token; the only special ids in the shards are the eos ids the
preparer places.

Shard boundaries fall every ``shard_tokens`` tokens of a split's stream, so the shards are a pure
function of (sources, tokenizer, seed, val_fraction, shard_tokens, piece_chars).

Resuming: whenever a shard is finished the run commits: the shard (already renamed into place),
the unfinished remainder ("tail") of each split under a new generation name, then
``manifest.json`` with the number of stream items consumed, all written atomically. A killed run
restarts from the last manifest: it skips the consumed items without tokenising them, reloads the
tails and redoes the interrupted shard, which comes out byte-identical. ``complete: true`` in the
manifest marks a finished directory; :class:`~substrate_lm.data.TokenShards` reads only those.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import SubstrateError
from ..fsutil import TMP_PREFIX, atomic_write_bytes, atomic_write_json, check_not_dangling, read_json
from ..tokenizer import unk_report
from . import sources as _sources
from .encoding import batch_encoder, cut_is_exact, load_tokenizer_any, tokenizer_identity
from .sources import PIECE_CHARS, DataSource, parse_sources, split_long_text

FORMAT = "substrate-lm/token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
#: Default shard size: 2**26 tokens = 128 MiB per file; a killed run loses at most this much work.
DEFAULT_SHARD_TOKENS = 1 << 26
#: Text handed to the tokenizer per batch; big enough to keep every core busy.
BATCH_CHARS = 1 << 22
#: Piece size for tokenizers that cutting at whitespace does not change.
EXACT_PIECE_CHARS = 1 << 14
BATCH_ITEMS = 1 << 14
#: Also commit (tails + manifest) after this many seconds without a finished shard.
COMMIT_SECONDS = 300.0
#: Pieces containing <unk> that are re-examined to name the unknown characters in stats.json.
UNK_SAMPLE_PIECES = 10_000
#: Newest training items (documents or pieces) remembered for the non-empty validation guarantee.
MAX_TRAIN_SEGMENTS = 256
#: The remedy named when a record of an existing output folder cannot be read.
_REDO = "pass --overwrite to redo the directory"

_SHARD_RE = re.compile(r"^(train|val)-(\d{5,})\.bin$")
_TAIL_RE = re.compile(r"^(train|val)\.tail-(\d+)\.bin$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``."""
    return f"{split}-{index:05d}.bin"


def document_split(text: str, seed: int = 0, val_fraction: float = 0.01) -> str:
    """The split (``"train"`` or ``"val"``) that preparation assigns to a document.

    A keyed 64-bit blake2b hash of the UTF-8 text compared with ``val_fraction * 2**64``:
    deterministic, order-independent, and exact duplicates always land in the same split.
    """
    if val_fraction <= 0.0:
        return "train"
    h = hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=8, key=int(seed).to_bytes(8, "little")
    ).digest()
    return "val" if int.from_bytes(h, "little") < int(val_fraction * 2.0**64) else "train"


def _new_counts() -> dict:
    return {"documents": 0, "characters": 0, "text_tokens": 0, "eos_tokens": 0, "unk_tokens": 0}


def _summary(c: dict) -> dict:
    """Derived figures of a counter dict (see ``stats.json``)."""
    text_tokens = c["text_tokens"]
    out = {
        "documents": c["documents"],
        "characters": c["characters"],
        "tokens": text_tokens + c["eos_tokens"],
        "text_tokens": text_tokens,
        "eos_tokens": c["eos_tokens"],
        "chars_per_token": round(c["characters"] / text_tokens, 6) if text_tokens else None,
        "unk_tokens": c["unk_tokens"],
        "unk_share": round(c["unk_tokens"] / text_tokens, 9) if text_tokens else 0.0,
    }
    for k in ("empty_documents",):
        if k in c:
            out[k] = c[k]
    return out


def _disk_guard(fn, *args):
    """Run a write; turn a full disk into one clear line (the last commit stays valid)."""
    try:
        return fn(*args)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SubstrateError(
                f"disk full while writing {args[0]}; free space and re-run the same command "
                "to resume from the last finished shard"
            ) from None
        raise


def _sha256(arr: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(memoryview(np.ascontiguousarray(arr)).cast("B")).hexdigest()


def _owned_files(out: Path) -> list[Path]:
    """Every file of a prepared directory that preparation owns (for --overwrite/cleanup)."""
    found = []
    if not out.is_dir():
        return found
    for p in out.iterdir():
        n = p.name
        if p.is_dir() and not p.is_symlink():
            continue  # preparation writes files only; a folder with such a name is not ours
        if (n in ("meta.json", "manifest.json", "stats.json") or _SHARD_RE.fullmatch(n)
                or _TAIL_RE.fullmatch(n) or n.startswith(TMP_PREFIX)):
            found.append(p)
    return found


def _is_tail_name(name, split: str | None = None) -> bool:
    """Whether ``name`` is a tail file name preparation writes (a plain name, no folders)."""
    m = _TAIL_RE.fullmatch(name) if isinstance(name, str) else None
    return bool(m) and "/" not in name and "\\" not in name and (
        split is None or name.startswith(f"{split}."))


def _diff_keys(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


class _Preparer:
    """One preparation run (state of the stream, the split buffers and the counters)."""

    def __init__(self, srcs: list[DataSource], encoder: tuple, tok_info: dict, out: Path,
                 config: dict, progress: bool, piece_chars: int, batch_chars: int):
        self.srcs, self.tok_info, self.out = srcs, tok_info, out
        self.config = config
        self.seed, self.val_fraction = config["seed"], config["val_fraction"]
        self.shard_tokens = config["shard_tokens"]
        self.eos = tok_info["eos_id"]
        self.unk = tok_info["unk_id"]
        self.progress = progress
        self.piece_chars, self.batch_chars = piece_chars, batch_chars
        self.encode, self.backend = encoder
        self._eos_arr = np.array([self.eos], dtype=np.uint16)
        self.reset()

    # -- state --

    def reset(self) -> None:
        self.position = 0
        self.open_split: str | None = None
        self.open_source: int | None = None  # source of the open document
        # per source: [tokens, characters, documents] in the val stream (None: not tracked, the
        # run resumed from a manifest of an older version)
        self.src_val: list[list[int]] | None = [[0, 0, 0] for _ in self.srcs]
        self.generation = 0
        self.shards = {s: [] for s in SPLITS}
        self.buffers = {s: [] for s in SPLITS}
        self.buffered = {s: 0 for s in SPLITS}
        self.counts = {s: _new_counts() for s in SPLITS}
        self.src_counts = [dict(_new_counts(), empty_documents=0) for _ in self.srcs]
        self.invalid_utf8 = 0
        self.lone_surrogates = 0
        self.seconds = 0.0
        self.tail_files: list[str] = []
        # the newest training items [start token in the train stream, characters, unk tokens,
        # 1 if it starts a document] (for the non-empty validation guarantee); whether any item
        # came with a fixed split (a world corpus: then its split is kept as it is)
        self.train_segments: list[list[int]] = []
        self.hinted = False
        self.moved_to_val = 0
        self.tokens_seen = 0
        self._invalid_at_end = 0
        self.unknown_chars: dict[str, int] = {}
        self.unk_pieces_seen = 0

    def manifest(self, complete: bool, tails: dict) -> dict:
        splits = {s: {"shards": self.shards[s], "tail": tails.get(s), "counts": self.counts[s]}
                  for s in SPLITS}
        if self.src_val is not None:
            splits["val"]["sources"] = self._val_sources()
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "complete": complete,
            "position": self.position,
            "open_split": self.open_split,
            "open_source": self.open_source,
            "generation": self.generation,
            "splits": splits,
            "sources": self.src_counts,
            "invalid_utf8": self.invalid_utf8,
            "lone_surrogates": self.lone_surrogates,
            "unknown_chars": self.unknown_chars,
            "unk_pieces_seen": self.unk_pieces_seen,
            "train_segments": self.train_segments,
            "hinted": self.hinted,
            "seconds": round(self.seconds, 3),
        }

    def _val_sources(self) -> list[dict]:
        return [{"spec": src.spec, "tokens": t, "characters": c, "documents": d}
                for src, (t, c, d) in zip(self.srcs, self.src_val)]

    def load_manifest(self, m: dict) -> str | None:
        """Restore the state of a manifest; return why it cannot be used, or None."""
        try:
            if m.get("format") != FORMAT or m.get("version") != FORMAT_VERSION:
                return "unknown manifest format"
            if len(m["sources"]) != len(self.srcs):
                return "source count changed"
            buffers = {}
            for s in SPLITS:
                sp = m["splits"][s]
                for i, sh in enumerate(sp["shards"]):
                    p = self.out / sh["file"]
                    if sh["file"] != shard_name(s, i) or not p.is_file():
                        return f"missing shard {sh['file']}"
                    if p.stat().st_size != 2 * sh["tokens"]:
                        return f"shard {sh['file']} has the wrong size"
                tail = sp["tail"]
                if tail:
                    tp = self.out / str(tail["file"])
                    # only a tail name of ours, directly in --out: a doctored manifest must not
                    # make a later commit delete (or this read) a file anywhere else
                    if not _is_tail_name(tail["file"], s) or tp.is_symlink() or not tp.is_file():
                        return f"bad tail file {tail['file']!r}"
                    arr = np.fromfile(tp, dtype="<u2")
                    if arr.size != tail["tokens"] or _sha256(arr) != tail["sha256"]:
                        return f"tail {tail['file']} is damaged"
                    buffers[s] = arr.astype(np.uint16, copy=False)
            self.position = int(m["position"])
            self.open_split = m["open_split"]
            self.generation = int(m["generation"])
            self.shards = {s: list(m["splits"][s]["shards"]) for s in SPLITS}
            self.counts = {s: dict(m["splits"][s]["counts"]) for s in SPLITS}
            self.src_counts = [dict(c) for c in m["sources"]]
            self.invalid_utf8 = int(m.get("invalid_utf8", 0))
            self.lone_surrogates = int(m.get("lone_surrogates", 0))
            self.seconds = float(m.get("seconds", 0.0))
            self.unknown_chars = dict(m.get("unknown_chars", {}))
            self.unk_pieces_seen = int(m.get("unk_pieces_seen", 0))
            segs = m.get("train_segments", [])
            if not (isinstance(segs, list) and all(
                    isinstance(g, list) and len(g) in (4, 5) and all(isinstance(v, int) for v in g)
                    for g in segs)):
                return "bad train_segments"
            # 4 entries: written before the segments named their source (-1: unknown)
            self.train_segments = [list(g) + [-1] * (5 - len(g)) for g in segs]
            self.open_source = m.get("open_source")
            self.src_val = self._load_val_sources(m["splits"]["val"].get("sources"))
            if self.src_val is not None and (
                    any(g[4] < 0 for g in self.train_segments)
                    or (self.open_split is not None and not isinstance(self.open_source, int))):
                self.src_val = None
            self.hinted = bool(m.get("hinted", False))
            for s in SPLITS:
                arr = buffers.get(s)
                self.buffers[s] = [arr] if arr is not None and arr.size else []
                self.buffered[s] = 0 if arr is None else int(arr.size)
            self.tail_files = [m["splits"][s]["tail"]["file"] for s in SPLITS
                               if m["splits"][s]["tail"]]
            return None
        except (KeyError, TypeError, ValueError, OSError) as exc:
            return f"unreadable manifest ({type(exc).__name__}: {exc})"

    def _load_val_sources(self, entries) -> list[list[int]] | None:
        """The per-source val record of a manifest, or None where it is absent (older version)."""
        if not (isinstance(entries, list) and len(entries) == len(self.srcs)):
            return None
        keys = ("tokens", "characters", "documents")
        if not all(isinstance(e, dict) and all(isinstance(e.get(k), int) for k in keys) for e in entries):
            return None
        return [[e[k] for k in keys] for e in entries]

    # -- writing --

    def _write_shard(self, split: str, arr: np.ndarray) -> None:
        name = shard_name(split, len(self.shards[split]))
        _disk_guard(atomic_write_bytes, self.out / name, arr.astype("<u2", copy=False), False)
        self.shards[split].append({"file": name, "tokens": int(arr.size), "sha256": _sha256(arr)})

    def _cut_shards(self, split: str) -> bool:
        if self.buffered[split] < self.shard_tokens:
            return False
        buf = np.concatenate(self.buffers[split])
        start = 0
        while buf.size - start >= self.shard_tokens:
            self._write_shard(split, buf[start:start + self.shard_tokens])
            start += self.shard_tokens
        rest = buf[start:]
        self.buffers[split] = [rest] if rest.size else []
        self.buffered[split] = int(rest.size)
        return True

    def commit(self, complete: bool = False) -> None:
        """Persist tails (new generation) then the manifest; drop the previous tails."""
        tails = {}
        if not complete:
            self.generation += 1
            for s in SPLITS:
                if self.buffered[s]:
                    arr = np.concatenate(self.buffers[s])
                    self.buffers[s] = [arr]
                    name = f"{s}.tail-{self.generation}.bin"
                    _disk_guard(atomic_write_bytes, self.out / name, arr.astype("<u2", copy=False), False)
                    tails[s] = {"file": name, "tokens": int(arr.size), "sha256": _sha256(arr)}
        _disk_guard(atomic_write_json, self.out / "manifest.json", self.manifest(complete, tails))
        # only after the manifest stops pointing at them may the old tails go
        for name in self.tail_files:
            if not _is_tail_name(name):
                continue  # never ours to delete (load_manifest refuses such names already)
            try:
                (self.out / name).unlink()
            except FileNotFoundError:
                pass
        self.tail_files = [t["file"] for t in tails.values()]

    # -- the stream --

    def _stream(self) -> Iterator[tuple]:
        """Items ``(source_index, text, split, cont, invalid_utf8)`` of all sources in order.

        Bad UTF-8 is attributed to the item whose reading decoded it; reads happen in the same
        pattern on every run, so resumed and uninterrupted runs count the same.
        """
        ctr = _sources.INVALID_UTF8
        pending = 0
        for si, src in enumerate(self.srcs):
            it = src.iter_items(self.piece_chars)
            while True:
                before = ctr[0]
                try:
                    text, split, cont = next(it)
                except StopIteration:
                    pending += ctr[0] - before
                    break
                yield si, text, split, cont, ctr[0] - before + pending
                pending = 0
        self._invalid_at_end = pending

    def _batches(self, items: Iterator[tuple]) -> Iterator[list]:
        batch, chars = [], 0
        for item in items:
            batch.append(item)
            chars += len(item[1])
            if chars >= self.batch_chars or len(batch) >= BATCH_ITEMS:
                yield batch
                batch, chars = [], 0
        if batch:
            yield batch

    def _encode(self, pieces: list[str]) -> list[list[int]]:
        try:
            return self.encode(pieces)
        except TypeError:
            # The Rust side rejects lone surrogates (possible in JSON '\ud800' escapes). They are
            # counted and each becomes one <unk> id between the encoded parts around it (U+FFFD
            # where the tokenizer has no unk). The ids are placed here rather than by writing
            # "<unk>" into the text: text never turns into special tokens (plain-text encoding).
            self.lone_surrogates += sum(len(_SURROGATE_RE.findall(p)) for p in pieces)
            out = []
            for piece in pieces:
                parts = _SURROGATE_RE.split(piece)
                if len(parts) == 1:
                    out.append(self.encode([piece])[0])
                elif self.unk is None:
                    out.append(self.encode([_SURROGATE_RE.sub("\ufffd", piece)])[0])
                else:
                    ids: list[int] = []
                    for k, part_ids in enumerate(self.encode(parts)):
                        if k:
                            ids.append(self.unk)
                        ids.extend(part_ids)
                    out.append(ids)
            return out

    def _name_unknowns(self, pieces: list[str]) -> None:
        """Count which characters became <unk> (first UNK_SAMPLE_PIECES pieces with any)."""
        room = UNK_SAMPLE_PIECES - self.unk_pieces_seen
        if room <= 0 or not pieces:
            return
        pieces = pieces[:room]
        self.unk_pieces_seen += len(pieces)
        rep = unk_report(self.backend, pieces, top=1 << 30)
        for entry in rep["unknown_chars"]:
            self.unknown_chars[entry["char"]] = self.unknown_chars.get(entry["char"], 0) + entry["count"]

    def process(self, batch: list) -> bool:
        """Tokenise one batch of items into the split buffers; True when a shard was cut.

        Python walks the items once to decide splits and eos positions; token counting and
        assembly of the per-split streams are vectorised.
        """
        n_items = len(batch)
        pc = self.piece_chars
        if any(len(item[1]) > pc for item in batch):  # rare: cut long documents into pieces
            # each piece becomes an item of its own (a continuation of its document), so the
            # split is decided per piece: by characters, not by documents
            expanded = []
            for item in batch:
                si, text, hint, cont, bad = item
                if len(text) > pc:
                    parts = split_long_text(text, pc)
                    expanded.append((si, parts[0], hint, cont, bad))
                    expanded.extend((si, part, hint, True, 0) for part in parts[1:])
                else:
                    expanded.append(item)
            batch = expanded
        n = len(batch)
        texts = [item[1] for item in batch]
        pieces, first = texts, None
        ids = self._encode(pieces)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)  # token boundaries of the pieces
        np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint16,
                           count=int(offsets[-1]))  # [tokens of the batch]
        del ids
        if first is not None:
            offsets = offsets[np.asarray(first, dtype=np.int64)]  # -> item boundaries [n+1]
        item_len = np.diff(offsets)  # [n]
        if self.unk is not None:
            unk_cum = np.zeros(flat.size + 1, dtype=np.int64)
            np.cumsum(flat == self.unk, out=unk_cum[1:])
            item_unk = unk_cum[offsets[1:]] - unk_cum[offsets[:-1]]  # [n]
        else:
            item_unk = np.zeros(n, dtype=np.int64)

        # splits as indices 0 (train) / 1 (val); the open document's eos is placed lazily, when
        # the next document starts, because a document may continue into the next batch
        open_ = None if self.open_split is None else SPLITS.index(self.open_split)
        starts = offsets[:-1].tolist()
        labels = [0] * n
        eos_at, eos_lab = [], []
        docs, eos_n = [0, 0], [0, 0]
        src_counts = self.src_counts
        seed, frac = self.seed, self.val_fraction
        item_len_l = item_len.tolist()
        item_unk_l = item_unk.tolist()
        segs = self.train_segments
        pos = self._train_stream_len()  # tokens in the train stream before the next item
        sv = self.src_val  # per-source val counts: eos and documents here, tokens/chars below
        osrc = self.open_source
        for k, (si, text, hint, cont, bad) in enumerate(batch):
            if bad:
                self.invalid_utf8 += bad
            if hint is not None:
                self.hinted = True
            new_segment = False
            if cont and open_ is not None:
                if hint is None and frac > 0.0:
                    # every piece of a long document is a unit of its own: the split follows the
                    # characters, not the number of documents
                    unit = 1 if document_split(text, seed, frac) == "val" else 0
                    if unit != open_:
                        eos_at.append(starts[k])
                        eos_lab.append(open_)
                        eos_n[open_] += 1
                        pos += open_ == 0
                        if sv is not None and open_ == 1:
                            sv[osrc][0] += 1
                        open_ = unit
                        docs[open_] += 1
                        if sv is not None and open_ == 1:
                            sv[si][2] += 1
                        new_segment = True
                labels[k] = open_
            else:
                if open_ is not None:  # close the previous document
                    eos_at.append(starts[k])
                    eos_lab.append(open_)
                    eos_n[open_] += 1
                    pos += open_ == 0
                    if sv is not None and open_ == 1:
                        sv[osrc][0] += 1
                    open_ = osrc = None
                if not text:  # no tokens, no characters: only counted
                    src_counts[si]["empty_documents"] += 1
                    continue
                if hint is not None:
                    open_ = SPLITS.index(hint)
                else:
                    open_ = 1 if frac > 0.0 and document_split(text, seed, frac) == "val" else 0
                labels[k] = open_
                docs[open_] += 1
                src_counts[si]["documents"] += 1
                if sv is not None and open_ == 1:
                    sv[si][2] += 1
                osrc = si
                new_segment = True
            if open_ == 0:  # one entry per training item: [start, chars, unk, starts a document, source]
                segs.append([pos, len(text), item_unk_l[k], int(new_segment), si])
                pos += item_len_l[k]
        if len(segs) > MAX_TRAIN_SEGMENTS:
            del segs[:-MAX_TRAIN_SEGMENTS]
        self.open_split = None if open_ is None else SPLITS[open_]
        self.open_source = None if open_ is None else osrc

        lab = np.asarray(labels, dtype=np.int8)  # [n]
        chars = np.fromiter(map(len, texts), dtype=np.int64, count=n)  # [n]
        src = np.fromiter((item[0] for item in batch), dtype=np.int64, count=n)  # [n]
        for field, w in (("characters", chars), ("text_tokens", item_len), ("unk_tokens", item_unk)):
            by_split = np.bincount(lab, weights=w, minlength=2)
            by_src = np.bincount(src, weights=w, minlength=len(self.srcs))
            for i, s in enumerate(SPLITS):
                self.counts[s][field] += int(round(by_split[i]))
            for i in np.flatnonzero(by_src):
                self.src_counts[i][field] += int(round(by_src[i]))
        if sv is not None and lab.any():
            val = lab == 1
            for col, w in ((0, item_len), (1, chars)):
                by_src = np.bincount(src[val], weights=w[val], minlength=len(self.srcs))
                for i in np.flatnonzero(by_src):
                    sv[i][col] += int(round(by_src[i]))
        for i, s in enumerate(SPLITS):
            self.counts[s]["documents"] += docs[i]
            self.counts[s]["eos_tokens"] += eos_n[i]
        self._name_unknowns([texts[k] for k in np.flatnonzero(item_unk)])

        tok_lab = np.repeat(lab, item_len)  # split of every token
        if eos_at:
            flat = np.insert(flat, eos_at, self.eos)
            tok_lab = np.insert(tok_lab, eos_at, np.asarray(eos_lab, dtype=np.int8))
        if tok_lab.any():
            parts = [flat[tok_lab == i] for i in range(len(SPLITS))]
        else:  # all train (e.g. val_fraction 0): no masking needed
            parts = [flat, flat[:0]]
        cut = False
        for s, arr in zip(SPLITS, parts):
            if arr.size:
                self.buffers[s].append(arr)
                self.buffered[s] += int(arr.size)
                cut = self._cut_shards(s) or cut
        self.position += n_items
        self.tokens_seen += int(item_len.sum())
        return cut

    def _train_stream_len(self) -> int:
        return sum(int(sh["tokens"]) for sh in self.shards["train"]) + self.buffered["train"]

    def _ensure_val(self) -> None:
        """Move the end of the training stream to an empty ``val`` split (see the module docstring).

        Only training items still in the unwritten buffer can move: the last ones, as many as
        needed to reach ``val_fraction`` of the characters (at least one), never all of ``train``.
        Where the cut falls inside a document, each side gets a document boundary (eos).
        """
        if (self.val_fraction <= 0.0 or self.hinted or self.counts["val"]["documents"]
                or self.buffered["val"]):
            return
        segs = self.train_segments
        written = sum(int(sh["tokens"]) for sh in self.shards["train"])
        train_chars = self.counts["train"]["characters"]
        target = self.val_fraction * train_chars
        k = chars = unk = doc_starts = 0
        for start, c, u, is_start, _src in reversed(segs):
            if start < written or train_chars - (chars + c) <= 0:
                break
            k, chars, unk, doc_starts = k + 1, chars + c, unk + u, doc_starts + is_start
            if chars >= target:
                break
        if k == 0:
            return
        cut_in_doc = not segs[-k][3]
        docs_moved = doc_starts + cut_in_doc  # documents that end in the moved part
        buf = np.concatenate(self.buffers["train"]) if self.buffers["train"] else self._eos_arr[:0]
        if self.src_val is not None:
            sv, moved_segs = self.src_val, segs[-k:]
            if any(g[4] < 0 for g in moved_segs):
                self.src_val = None
            else:
                # a segment's tokens run to the next one's start (its closing eos included)
                ends = [g[0] for g in moved_segs[1:]] + [written + buf.size]
                for g, end in zip(moved_segs, ends):
                    sv[g[4]][0] += end - g[0]
                    sv[g[4]][1] += g[1]
                    sv[g[4]][2] += g[3]
                sv[moved_segs[0][4]][2] += int(cut_in_doc)
        moved, kept = buf[segs[-k][0] - written:], buf[:segs[-k][0] - written]
        if cut_in_doc:
            kept = np.concatenate([kept, self._eos_arr])  # the kept part of that document ends here
        self.buffers["train"] = [kept] if kept.size else []
        self.buffered["train"] = int(kept.size)
        self.buffers["val"].append(moved)
        self.buffered["val"] += int(moved.size)
        tr, va = self.counts["train"], self.counts["val"]
        tr["documents"] -= doc_starts
        tr["characters"] -= chars
        tr["text_tokens"] -= int(moved.size) - docs_moved
        tr["eos_tokens"] += int(cut_in_doc) - docs_moved
        tr["unk_tokens"] -= unk
        va["documents"] += docs_moved
        va["characters"] += chars
        va["text_tokens"] += int(moved.size) - docs_moved
        va["eos_tokens"] += docs_moved
        va["unk_tokens"] += unk
        del segs[-k:]
        self.moved_to_val = k

    def finish(self) -> None:
        self.invalid_utf8 += self._invalid_at_end
        if self.open_split is not None:
            if self.open_split == "val" and self.src_val is not None:
                self.src_val[self.open_source][0] += 1
            self.buffers[self.open_split].append(self._eos_arr)
            self.buffered[self.open_split] += 1
            self.counts[self.open_split]["eos_tokens"] += 1
            self.open_split = None
        self._ensure_val()
        for s in SPLITS:
            self._cut_shards(s)
            if self.buffered[s]:
                self._write_shard(s, np.concatenate(self.buffers[s]))
                self.buffers[s], self.buffered[s] = [], 0

    def stats(self) -> dict:
        total = _new_counts()
        for s in SPLITS:
            for k in total:
                total[k] += self.counts[s][k]
        total["empty_documents"] = sum(c["empty_documents"] for c in self.src_counts)
        out = _summary(total)
        out["invalid_utf8"] = self.invalid_utf8
        out["skipped_files"] = getattr(self, "skipped_files", 0)
        out["lone_surrogates"] = self.lone_surrogates
        top = sorted(self.unknown_chars.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        out["unknown_chars"] = [
            {"char": c, "codepoint": ", ".join(f"U+{ord(x):04X}" for x in c), "count": n}
            for c, n in top
        ]
        out["splits"] = {}
        for s in SPLITS:
            d = _summary(self.counts[s])
            d["shards"] = len(self.shards[s])
            out["splits"][s] = d
        if self.src_val is not None:
            out["splits"]["val"]["sources"] = self._val_sources()
        out["sources"] = [dict(spec=src.spec, **_summary(c))
                          for src, c in zip(self.srcs, self.src_counts)]
        t = self.tok_info
        out["tokenizer"] = {k: t[k] for k in ("name", "vocab_size", "eos_id", "eos_token",
                                              "unk_id", "unk_token", "fingerprint")}
        out["seed"] = self.seed
        out["val_fraction"] = self.val_fraction
        out["val_from_train_tail"] = self.moved_to_val
        out["shard_tokens"] = self.shard_tokens
        out["seconds"] = round(self.seconds, 3)
        return out

    # -- main loop --

    def run(self) -> dict:
        t0 = time.perf_counter()
        seconds0 = self.seconds
        chars_done = sum(c["characters"] for c in self.counts.values())
        self.tokens_seen = sum(c["text_tokens"] for c in self.counts.values())
        bar = None

        def open_bar():
            # opened with the first batch: a source that fails at once prints only its error
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is in the train extra
                return None
            return tqdm(total=None, initial=chars_done, unit="char", unit_scale=True,
                        desc=f"prepare {self.out.name}", file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.5)

        items = itertools.islice(self._stream(), self.position, None)
        last_commit = time.monotonic()
        try:
            for batch in _prefetch(self._batches(items)):
                if bar is None and self.progress and any(item[1] for item in batch):
                    bar = open_bar()
                cut = self.process(batch)
                if bar is not None:
                    bar.update(sum(len(item[1]) for item in batch))
                    bar.set_postfix_str(f"{self.tokens_seen:,} tokens", refresh=False)
                if cut or time.monotonic() - last_commit > COMMIT_SECONDS:
                    self.seconds = seconds0 + time.perf_counter() - t0
                    self.commit()
                    last_commit = time.monotonic()
        except BaseException:
            if bar is not None:
                bar.leave = False  # on a terminal the error replaces the bar
            raise
        finally:
            if bar is not None:
                bar.close()
        if sum(c["documents"] for c in self.counts.values()) == 0:
            raise SubstrateError(
                "no documents: the sources ("
                + ", ".join(s.spec for s in self.srcs)
                + ") hold no text; check --source and --text-field"
            )
        self.finish()
        self.seconds = seconds0 + time.perf_counter() - t0
        stats = self.stats()
        _disk_guard(atomic_write_json, self.out / "stats.json", stats)
        self.commit(complete=True)
        return stats


def _prefetch(batches: Iterator[list], depth: int = 2) -> Iterator[list]:
    """Read and parse the next batches on a thread while the current one is tokenised.

    The Rust encoder releases the GIL, so JSON parsing and file reading overlap with encoding.
    Errors raised while reading are re-raised in the consumer at the point they occurred.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        # never block forever: the consumer may have stopped listening
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for b in batches:
                if not put(("ok", b)):
                    return
            put(("ok", done))
        except BaseException as exc:  # handed to the consumer
            put(("err", exc))

    t = threading.Thread(target=worker, name="substrate-data-reader", daemon=True)
    t.start()
    try:
        while True:
            kind, val = q.get()
            if kind == "err":
                raise val
            if val is done:
                return
            yield val
    finally:
        stop.set()
        # unblock a worker waiting on a full queue
        try:
            while True:
                q.get_nowait()
        except queue.Empty:
            pass
        t.join(timeout=5)


def prepare_data(
    sources: "str | os.PathLike | DataSource | Iterable",
    tokenizer,
    out_dir: "str | os.PathLike",
    val_fraction: float = 0.01,
    seed: int = 0,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    *,
    text_field: str = "text",
    text_unit: str = "file",
    overwrite: bool = False,
    progress: bool = True,
    piece_chars: int | None = None,
    batch_chars: int = BATCH_CHARS,
) -> dict:
    """Tokenise ``sources`` into uint16 token shards in ``out_dir`` (resumable).

    Args:
        sources: spec string(s) or :class:`DataSource` object(s) (see
            :mod:`substrate_lm.data.sources`).
        tokenizer: a fast tokenizer object, or a tokenizer directory / hub id.
        out_dir: output directory (created). A finished directory with the same settings is
            left alone and its stats returned; an unfinished one is resumed.
        val_fraction: share of documents hashed into the ``val`` split (0 <= f < 1).
        seed: key of the split hash (non-negative int).
        shard_tokens: tokens per shard file.
        text_field: JSON / Parquet / dataset field holding the text.
        text_unit: what a document is in text files: ``"file"``, ``"line"``, ``"paragraph"``.
        overwrite: replace a directory prepared with another tokenizer or other settings.
        progress: show a progress bar and messages on stderr.
        piece_chars: longest string handed to the tokenizer; longer documents are cut at
            whitespace (see :func:`substrate_lm.data.sources.find_cut`). Default: 16,384 when
            :func:`~substrate_lm.data.encoding.cut_is_exact` holds for the tokenizer (short
            pieces encode several times faster with merge-heavy BPE), else 1,048,576 (a cut
            may then change the ids at that one boundary).
        batch_chars: characters tokenised per Rust batch call.

    Returns:
        The statistics dict also written to ``out_dir/stats.json``.

    Raises:
        SubstrateError: missing corpus, empty input, unknown source kind, tokenizer with more
            than 65,536 ids, a directory prepared differently (without ``overwrite``), full disk.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise SubstrateError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if int(seed) < 0 or int(seed) >= 2**63:
        raise SubstrateError(f"--seed must be a non-negative integer, got {seed}")
    if int(shard_tokens) < 1:
        raise SubstrateError(f"--shard-tokens must be positive, got {shard_tokens}")
    if piece_chars is not None and int(piece_chars) < 2:
        raise SubstrateError(f"piece_chars must be >= 2, got {piece_chars}")
    srcs = parse_sources(sources, text_field, text_unit)
    for src in srcs:
        src.check()
    skipped = [item for src in srcs for item in src.skipped()]
    if skipped:  # said even without progress output: these files are not in the data
        path, why = skipped[0]
        print(f"warning: skipped {len(skipped)} file(s) that are binary, not UTF-8 or not regular files "
              f"(e.g. {path}: {why})", file=sys.stderr)
    tok, name = load_tokenizer_any(tokenizer)
    tok_info = tokenizer_identity(tok, name)
    encoder = batch_encoder(tok)
    if piece_chars is None:
        piece_chars = EXACT_PIECE_CHARS if cut_is_exact(encoder[0]) else PIECE_CHARS
    config = {
        "sources": [s.identity() for s in srcs],
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "shard_tokens": int(shard_tokens),
        "split_rule": "per document or piece of <= piece_chars: blake2b-64(key=seed, utf8 text) "
                      "< val_fraction * 2**64; an empty val takes the last train documents up to "
                      "val_fraction of the characters; world corpora keep theirs",
        "piece_chars": int(piece_chars),
        # special-token strings in documents are encoded as their characters (never control ids)
        "plain_text": True,
    }
    out = Path(os.path.expanduser(os.fspath(out_dir)))
    check_not_dangling(out, "--out")
    if out.exists() and not out.is_dir():
        raise SubstrateError(f"--out {out} is a file; pass a folder")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dtype": "uint16",
        "byte_order": "little",
        "tokenizer": tok_info,
        "config": config,
    }
    log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)

    old = None
    if (out / "meta.json").is_file():
        if overwrite:
            log(f"overwriting {out}")
            for p in _owned_files(out):
                p.unlink()
        else:
            old = read_json(out / "meta.json", missing=None, fix=_REDO)
            old_tok = old.get("tokenizer", {})
            if old_tok.get("fingerprint") != tok_info["fingerprint"]:
                raise SubstrateError(
                    f"{out} was prepared with another tokenizer ({old_tok.get('name')}, vocab "
                    f"{old_tok.get('vocab_size')}); pass --overwrite to replace it or choose "
                    "another --out"
                )
            if old.get("config") != config:
                diff = ", ".join(_diff_keys(old.get("config", {}), config))
                raise SubstrateError(
                    f"{out} was prepared with other settings (differ: {diff}); pass --overwrite "
                    "to replace it or choose another --out"
                )

    if old is None and out.is_dir() and not overwrite:
        foreign = sorted(p.name for p in out.iterdir()
                         if not (p.is_dir() and not p.is_symlink()) and p not in _owned_files(out))
        if foreign:
            raise SubstrateError(
                f"--out {out} already holds files that data prepare did not write (e.g. "
                f"{foreign[0]}); choose a new or empty folder, or pass --overwrite to write the "
                "shards beside them (they are kept)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    prep = _Preparer(srcs, encoder, tok_info, out, config, progress, int(piece_chars),
                     int(batch_chars))
    prep.skipped_files = len(skipped)
    manifest = read_json(out / "manifest.json", missing=None, fix=_REDO) if old is not None else None
    if manifest is not None:
        if manifest.get("complete"):
            why = prep.load_manifest(manifest)
            stats = read_json(out / "stats.json", missing=None, fix=_REDO)
            if why is None and stats is not None:
                log(f"{out} is already prepared; nothing to do")
                return stats
            log(f"{out}: finished directory is damaged ({why or 'no stats.json'}); redoing it")
            prep.reset()
        else:
            why = prep.load_manifest(manifest)
            if why is None:
                done = sum(len(v) for v in prep.shards.values())
                log(f"resuming {out}: {done} shard(s) done, skipping {prep.position:,} items")
            else:
                log(f"{out}: cannot resume ({why}); starting over")
                prep.reset()
    if old is None:
        # a foreign or half-made directory: clear only what preparation owns, then claim it
        for p in _owned_files(out):
            p.unlink()
        _disk_guard(atomic_write_json, out / "meta.json", meta)
    # debris of an interrupted run: temp files, shards and tails the manifest does not list
    keep = {sh["file"] for s in SPLITS for sh in prep.shards[s]} | set(prep.tail_files)
    keep |= {"meta.json", "manifest.json"}
    for p in _owned_files(out):
        if p.name not in keep:
            p.unlink()
    if os.environ.get("TOKENIZERS_PARALLELISM", "").strip().lower() in ("0", "false", "no", "off"):
        log("note: TOKENIZERS_PARALLELISM is off, so tokenising uses one core")
    try:
        return prep.run()
    except SubstrateError:
        if not (out / "manifest.json").exists():
            # nothing was committed: leave no half-claimed directory behind
            for p in _owned_files(out):
                p.unlink()
            if created:
                try:
                    out.rmdir()
                except OSError:
                    pass
        raise
