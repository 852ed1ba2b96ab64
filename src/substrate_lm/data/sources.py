"""Corpus sources: where documents come from, as a deterministic stream of text pieces.

A source is given as a spec string ``KIND:LOCATION`` or as a bare path whose kind is detected:

==================  ===========================================================================
``text:PATH``       one UTF-8 text file (``file:`` and ``txt:`` are aliases)
``dir:PATH``        a folder, walked recursively in sorted order; ``.txt .text .md .rst`` are
                    text, ``.jsonl .ndjson .json`` (optionally ``.gz``) are JSON lines,
                    ``.parquet .pq`` are Parquet; hidden and other files are ignored
``glob:PATTERN``    the files matching a glob (``**`` recurses), sorted, kinds by extension
                    (unknown extensions are read as text)
``jsonl:PATH``      JSON lines (or a ``.json`` array) of objects with a text field
``parquet:PATH``    a Parquet file with a text column
``hf:NAME[:CONF]``  a Hugging Face dataset, streamed with ``datasets.load_dataset(NAME, CONF,
                    split=..., streaming=True)``; options after ``?``: ``split`` (default
                    ``train``), ``config``, ``data_files`` (comma-separated), ``data_dir``,
                    ``revision``; e.g. ``hf:json?data_files=a.jsonl`` or
                    ``hf:wikitext:wikitext-103-raw-v1?split=train``
``world:DIR``       the built-in world corpus (``train.jsonl`` / ``val.jsonl`` from
                    :mod:`substrate_lm.world`); its own train/val split is kept
==================  ===========================================================================

Bare paths: a folder holding ``train.jsonl`` and ``val.jsonl`` is a world corpus, any other
folder is ``dir:``, a path with glob characters that does not exist is ``glob:``, a file is
typed by its extension.

What a document is: one JSON object / Parquet row / dataset example; for text files one file by
default (``text_unit="file"``), or one line (``"line"``), or one blank-line separated paragraph
(``"paragraph"``). Empty documents are passed on (and counted, then dropped, by the preparer).

The stream is made of *items* ``(text, split, cont)``: ``split`` is ``"train"``/``"val"`` when
the source fixes it (world corpus) and ``None`` when the preparer decides; ``cont`` is True for a
continuation piece of the previous document (a large text file is read in pieces of at most
:data:`PIECE_CHARS` characters, cut by :func:`find_cut`). The stream is a pure function of the
files, so a resumed preparation can skip the items it already consumed.

Invalid UTF-8 never stops a run: bad bytes become U+FFFD and are counted in
:data:`INVALID_UTF8` (reported in ``stats.json``).
"""

from __future__ import annotations

import codecs
import glob as _glob
import gzip
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, urlencode

from ..errors import SubstrateError
from ..fsutil import special_file_kind

#: Largest piece of text handed to the tokenizer in one string. Larger documents are cut at a
#: newline (or space) boundary so huge single-file corpora still tokenise on all cores.
PIECE_CHARS = 1 << 20

#: Canonical kinds and their aliases.
KINDS = ("text", "dir", "glob", "jsonl", "parquet", "hf", "world")
_ALIASES = {
    "text": "text", "file": "text", "txt": "text",
    "dir": "dir", "folder": "dir",
    "glob": "glob",
    "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl",
    "parquet": "parquet",
    "hf": "hf", "datasets": "hf",
    "world": "world",
}
TEXT_UNITS = ("file", "line", "paragraph")
_HF_OPTIONS = ("split", "config", "data_files", "data_dir", "revision")

_TEXT_EXTS = (".txt", ".text", ".md", ".rst")
_JSONL_EXTS = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
_PARQUET_EXTS = (".parquet", ".pq")

Item = tuple  # (text: str, split: str | None, cont: bool)

# --- invalid UTF-8 accounting -------------------------------------------------------------------

#: ``INVALID_UTF8[0]`` counts undecodable byte sequences replaced by U+FFFD since import.
INVALID_UTF8 = [0]
_ERRORS = "substrate_lm.data.count_replace"


def _count_replace(exc: UnicodeError):
    # called only on bad bytes, so counting costs nothing on clean text
    INVALID_UTF8[0] += 1
    return "\ufffd", exc.end


codecs.register_error(_ERRORS, _count_replace)


# --- cutting long text --------------------------------------------------------------------------


def find_cut(text: str, limit: int) -> int:
    """Where to cut ``text`` so the first piece has at most ``limit`` characters.

    Prefers the position right after a newline that is followed by a non-space character, then a
    position right before a single space between two non-space characters, searching the upper
    half of the window; tokenizers whose merges never cross such a boundary (bvv241, GPT-2 style
    byte-level BPE) give exactly the ids of the uncut text. Falls back to a hard cut at ``limit``
    (e.g. long CJK runs without any whitespace), which can split one n-gram.

    Args:
        text: the text, longer than ``limit``.
        limit: maximum piece length (>= 2).

    Returns:
        The cut index ``q`` with ``0 < q <= limit``.
    """
    lo = limit // 2
    p = text.rfind("\n", lo, limit)
    while p != -1:
        q = p + 1
        if q < len(text) and not text[q].isspace():
            return q
        p = text.rfind("\n", lo, p)
    p = text.rfind(" ", lo, limit)
    while p > 0:
        if not text[p - 1].isspace() and p + 1 < len(text) and not text[p + 1].isspace():
            return p
        p = text.rfind(" ", lo, p)
    return limit


def split_long_text(text: str, limit: int = PIECE_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters at :func:`find_cut` boundaries."""
    pieces = []
    while len(text) > limit:
        q = find_cut(text, limit)
        pieces.append(text[:q])
        text = text[q:]
    pieces.append(text)
    return pieces


# --- file readers -------------------------------------------------------------------------------


def _ext_kind(path: Path, default: str | None) -> str | None:
    name = path.name.lower()
    if name.endswith(_JSONL_EXTS):
        return "jsonl"
    if name.endswith(_PARQUET_EXTS):
        return "parquet"
    if name.endswith(_TEXT_EXTS):
        return "text"
    return default


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors=_ERRORS, newline="")
    return open(path, encoding="utf-8", errors=_ERRORS, newline="")


def _iter_text_file(path: Path, unit: str, piece_chars: int) -> Iterator[Item]:
    with _open_text(path) as f:
        if unit == "file":
            buf, first = "", True
            while True:
                block = f.read(piece_chars)
                if not block:
                    break
                buf += block
                while len(buf) > piece_chars:
                    q = find_cut(buf, piece_chars)
                    yield buf[:q], None, not first
                    buf, first = buf[q:], False
            if buf or first:  # an empty file is one empty document
                yield buf, None, not first
        elif unit == "line":
            for line in f:
                line = line.rstrip("\r\n")
                if line:
                    yield line, None, False
        else:  # paragraph
            lines: list[str] = []
            for line in f:
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield "".join(lines).rstrip("\r\n"), None, False
                    lines = []
            if lines:
                yield "".join(lines).rstrip("\r\n"), None, False


def _field_error(where: str, text_field: str, keys) -> SubstrateError:
    keys = ", ".join(sorted(map(str, keys))[:12]) or "none"
    return SubstrateError(
        f"{where} has no text field {text_field!r} (fields: {keys}); pass --text-field NAME"
    )


def _text_value(value, where: str, text_field: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""  # a null text is an empty document, counted and dropped downstream
    raise SubstrateError(
        f"{where}: field {text_field!r} holds {type(value).__name__}, not text; "
        "pass --text-field NAME of a string field"
    )


def _iter_jsonl_file(path: Path, text_field: str, split: str | None) -> Iterator[Item]:
    with _open_text(path) as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        # a JSON array file (small by nature): load it whole
        with _open_text(path) as f:
            try:
                records = json.load(f)
            except json.JSONDecodeError as exc:
                raise SubstrateError(
                    f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})"
                ) from None
        yield from _records(enumerate(records, 1), path, text_field, split, parsed=True)
        return
    with _open_text(path) as f:
        yield from _records(enumerate(f, 1), path, text_field, split, parsed=False)


def _records(lines, path, text_field, split, parsed) -> Iterator[Item]:
    loads = json.loads
    for lineno, rec in lines:
        if not parsed:
            if not rec.strip():
                continue
            try:
                rec = loads(rec)
            except json.JSONDecodeError as exc:
                raise SubstrateError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise SubstrateError(
                f"{path}:{lineno}: expected a JSON object with a {text_field!r} field, "
                f"got {type(rec).__name__}"
            )
        try:
            value = rec[text_field]
        except KeyError:
            raise _field_error(f"{path}:{lineno}", text_field, rec.keys()) from None
        yield _text_value(value, f"{path}:{lineno}", text_field), split, False


def _iter_parquet_file(path: Path, text_field: str) -> Iterator[Item]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the train extra
        raise SubstrateError(
            "reading Parquet needs pyarrow: pip install 'substrate-lm[train]'"
        ) from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SubstrateError(f"{path}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise _field_error(str(path), text_field, names)
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=[text_field]):
        for value in batch.column(0).to_pylist():
            row += 1
            yield _text_value(value, f"{path} row {row}", text_field), None, False


def _iter_file(path: Path, kind: str, text_field: str, unit: str, piece_chars: int):
    if kind == "jsonl":
        return _iter_jsonl_file(path, text_field, None)
    if kind == "parquet":
        return _iter_parquet_file(path, text_field)
    return _iter_text_file(path, unit, piece_chars)


# --- the source ---------------------------------------------------------------------------------


#: Bytes of a text file read to tell text from binary (NUL bytes) and UTF-8 from other encodings.
SNIFF_BYTES = 1 << 16


def sniff_text(path: Path) -> str | None:
    """Why ``path`` is not UTF-8 text (``"binary: a NUL byte at offset N"``, ``"not UTF-8: ..."``,
    ``"a FIFO (named pipe)"``, ...), or None when its first 64 KiB read as UTF-8 text."""
    special = special_file_kind(path)
    if special:
        return special
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
        else:
            with open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        return f"unreadable ({getattr(exc, 'strerror', None) or exc})"
    nul = head.find(b"\0")
    if nul >= 0:
        return f"binary: a NUL byte at offset {nul}"
    if len(head) == SNIFF_BYTES:  # a character cut by the window is not an error
        head = head[: len(head) - 3] + head[len(head) - 3:].decode("utf-8", "ignore").encode("utf-8")
    text = head.decode("utf-8", "replace")
    bad = text.count("\ufffd") - head.count("\ufffd".encode("utf-8"))
    if bad >= MAX_STRAY_BYTES and bad > 0.01 * len(head):
        try:
            head.decode("utf-8")
            first = 0
        except UnicodeDecodeError as exc:
            first = exc.start
        return f"not UTF-8 ({bad} invalid sequences in its first {len(head):,} bytes, the first at offset {first})"
    return None


#: Invalid UTF-8 sequences a text file may hold (then replaced by U+FFFD and counted) before it
#: counts as another encoding, when they are also over 1% of its first 64 KiB.
MAX_STRAY_BYTES = 8



def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _list_dir(root: Path) -> list[tuple[Path, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            kind = _ext_kind(p, None)
            if kind:
                out.append((p, kind))
    return out


@dataclass(frozen=True)
class DataSource:
    """One corpus source.

    Attributes:
        kind: one of :data:`KINDS`.
        location: path, folder, glob pattern or dataset name.
        text_field: JSON / Parquet / dataset field holding the text.
        text_unit: what a document is in text files: ``"file"``, ``"line"`` or ``"paragraph"``.
        options: ``hf`` options as sorted ``(key, value)`` pairs (``split``, ``config``, ...).
    """

    kind: str
    location: str
    text_field: str = "text"
    text_unit: str = "file"
    options: tuple = field(default=())

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SubstrateError(
                f"unknown source kind {self.kind!r}; use one of {', '.join(k + ':' for k in KINDS)}"
            )
        if self.text_unit not in TEXT_UNITS:
            raise SubstrateError(
                f"unknown text unit {self.text_unit!r}; use one of {', '.join(TEXT_UNITS)}"
            )
        if not self.text_field:
            raise SubstrateError("the text field name is empty; pass --text-field NAME")

    # -- construction --

    @classmethod
    def parse(cls, spec: "str | os.PathLike | DataSource", text_field: str = "text",
              text_unit: str = "file") -> "DataSource":
        """Parse a spec string (see the module docstring) into a :class:`DataSource`.

        Raises:
            SubstrateError: unknown kind, bad ``hf`` option, or a bare path that does not exist.
        """
        if isinstance(spec, DataSource):
            return spec
        spec = os.fspath(spec)
        if not spec.strip():
            raise SubstrateError("empty source spec; pass --source PATH or KIND:LOCATION")
        head, sep, rest = spec.partition(":")
        if sep and len(head) > 1 and head.replace("-", "").replace("_", "").isalnum():
            kind = _ALIASES.get(head.lower())
            if kind is None:
                if not os.path.exists(spec):
                    raise SubstrateError(
                        f"unknown source kind {head!r} in {spec!r}; use "
                        f"{', '.join(k + ':' for k in KINDS)} or a path"
                    )
            else:
                if kind == "hf":
                    return cls._parse_hf(rest, text_field, text_unit)
                if not rest:
                    raise SubstrateError(f"source {spec!r} names no location after '{head}:'")
                return cls(kind, rest, text_field, text_unit)
        return cls(cls._detect(spec), spec, text_field, text_unit)

    @classmethod
    def _parse_hf(cls, rest: str, text_field: str, text_unit: str) -> "DataSource":
        name, _, query = rest.partition("?")
        name, _, config = name.partition(":")
        if not name:
            raise SubstrateError("hf: source names no dataset; use hf:NAME[:CONFIG][?split=train]")
        opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        bad = sorted(set(opts) - set(_HF_OPTIONS))
        if bad:
            raise SubstrateError(
                f"unknown hf: option {bad[0]!r}; use {', '.join(_HF_OPTIONS)}"
            )
        if config:
            opts["config"] = config
        opts.setdefault("split", "train")
        return cls("hf", name, text_field, text_unit, tuple(sorted(opts.items())))

    @staticmethod
    def _detect(path: str) -> str:
        p = Path(path)
        if not p.exists():
            if _is_glob(path):
                return "glob"
            raise SubstrateError(f"corpus not found: {path} (no such file or folder)")
        if p.is_dir():
            if (p / "train.jsonl").is_file() and (p / "val.jsonl").is_file():
                return "world"
            return "dir"
        return _ext_kind(p, "text")

    # -- identity --

    @property
    def spec(self) -> str:
        """Canonical spec string (round-trips through :meth:`parse`)."""
        s = f"{self.kind}:{self.location}"
        if self.options:
            opts = dict(self.options)
            config = opts.pop("config", None)
            if config:
                s += f":{config}"
            if opts:
                s += "?" + urlencode(sorted(opts.items()), safe="/,*")
        return s

    def identity(self) -> dict:
        """What makes two runs read the same documents (recorded in ``meta.json``)."""
        return {"spec": self.spec, "text_field": self.text_field, "text_unit": self.text_unit}

    # -- access --

    def files(self) -> list[tuple[Path, str]]:
        """The files this source reads, in stream order, each with its reader kind.

        Text files found in a folder or by a glob that are binary, not UTF-8 or not regular files
        (a FIFO) are left out and listed by :meth:`skipped`; such a file named on its own is refused.

        Raises:
            SubstrateError: a missing path, a folder / glob without any readable file, or a named
                file that is a FIFO, binary or not UTF-8 text.
        """
        return self._scan()[0]

    def skipped(self) -> list[tuple[Path, str]]:
        """The files of a folder or glob that :meth:`files` left out, each with the reason."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
        cached = self.__dict__.get("_scanned")
        if cached is None:
            found = self._files()
            keep, skipped = [], []
            for path, kind in found:
                why = sniff_text(path) if kind == "text" else special_file_kind(path)
                (skipped if why else keep).append((path, why) if why else (path, kind))
            if skipped and self.kind not in ("dir", "glob"):
                path, why = skipped[0]
                raise SubstrateError(f"{path} is {why}, not UTF-8 text; convert it to UTF-8 or leave it out")
            if not keep and skipped:
                raise SubstrateError(f"every file of {self.location} is binary, not UTF-8 or not a regular file "
                                     f"(e.g. {skipped[0][0]}: {skipped[0][1]}); point --source at text files")
            cached = (keep, skipped)
            object.__setattr__(self, "_scanned", cached)  # a frozen dataclass: the cache is not a field
        return cached

    def _files(self) -> list[tuple[Path, str]]:
        loc = self.location
        if self.kind == "hf":
            return []
        if self.kind == "glob":
            paths = sorted(p for p in _glob.glob(os.path.expanduser(loc), recursive=True)
                           if os.path.isfile(p))
            if not paths:
                raise SubstrateError(f"corpus not found: no files match {loc}")
            return [(Path(p), _ext_kind(Path(p), "text")) for p in paths]
        path = Path(os.path.expanduser(loc))
        if not path.exists():
            raise SubstrateError(f"corpus not found: {loc} (no such file or folder)")
        if self.kind == "dir":
            if not path.is_dir():
                raise SubstrateError(f"dir: source {loc} is a file, not a folder; use text:{loc}")
            found = _list_dir(path)
            if not found:
                raise SubstrateError(
                    f"no .txt/.md/.jsonl/.json/.parquet files under {loc}; point --source at "
                    "the files (e.g. 'glob:DIR/**/*.ext')"
                )
            return found
        if self.kind == "world":
            train, val = path / "train.jsonl", path / "val.jsonl"
            for p in (train, val):
                if not p.is_file():
                    raise SubstrateError(
                        f"world corpus {loc} has no {p.name}; generate it with "
                        "substrate_lm.world.generate_world(DIR)"
                    )
            return [(train, "jsonl"), (val, "jsonl")]
        if path.is_dir():
            raise SubstrateError(f"{self.kind}: source {loc} is a folder; use dir:{loc}")
        return [(path, self.kind)]

    def check(self) -> None:
        """Fail fast (before any work) on a missing or empty file-based source."""
        self.files()

    def iter_items(self, piece_chars: int = PIECE_CHARS) -> Iterator[Item]:
        """Yield the items ``(text, split, cont)`` of this source in a deterministic order."""
        if self.kind == "hf":
            yield from self._iter_hf()
            return
        if self.kind == "world":
            for path, split in zip((p for p, _ in self.files()), ("train", "val")):
                yield from _iter_jsonl_file(path, self.text_field, split)
            return
        for path, kind in self.files():
            yield from _iter_file(path, kind, self.text_field, self.text_unit, piece_chars)

    def _iter_hf(self) -> Iterator[Item]:
        opts = dict(self.options)
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets is in the train extra
            raise SubstrateError(
                "hf: sources need the datasets package: pip install 'substrate-lm[train]'"
            ) from None
        kwargs = {"split": opts.get("split", "train"), "streaming": True}
        for key in ("data_dir", "revision"):
            if opts.get(key):
                kwargs[key] = opts[key]
        if opts.get("data_files"):
            files = [f for f in opts["data_files"].split(",") if f]
            kwargs["data_files"] = files if len(files) > 1 else files[0]
        try:
            ds = datasets.load_dataset(self.location, opts.get("config") or None, **kwargs)
        except Exception as exc:  # hub, network and builder errors come in many types
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SubstrateError(
                f"cannot load Hugging Face dataset {self.spec}: {msg}"
            ) from None
        where = f"dataset {self.location}"
        field_ = self.text_field
        it = iter(ds)
        i = 0
        while True:
            try:
                ex = next(it)
            except StopIteration:
                return
            except Exception as exc:  # a broken stream (network, bad file) mid-way
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SubstrateError(
                    f"reading {self.spec} failed at example {i}: {msg}; re-run to resume"
                ) from None
            try:
                value = ex[field_]
            except KeyError:
                raise _field_error(f"{where} example {i}", field_, ex.keys()) from None
            yield _text_value(value, f"{where} example {i}", field_), None, False
            i += 1


def parse_sources(specs, text_field: str = "text", text_unit: str = "file") -> list[DataSource]:
    """Parse one spec / :class:`DataSource` or a list of them.

    Raises:
        SubstrateError: no sources, or any bad spec.
    """
    if isinstance(specs, (str, os.PathLike, DataSource)):
        specs = [specs]
    out = [DataSource.parse(s, text_field, text_unit) for s in specs]
    if not out:
        raise SubstrateError("no sources given; pass --source PATH (repeatable)")
    return out
