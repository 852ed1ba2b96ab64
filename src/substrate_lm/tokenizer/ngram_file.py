"""Read and write n-gram statistics files (the published ``_n-gramms-2-3.txt`` format).

The published file is one Python literal::

    [{'lang': 'en', 'language_name': 'English',
      'top_ngrams': {2: [('th', 3464625), ...], 3: [('the', ...), ...]}}, ...]

It is parsed with :func:`ast.literal_eval`, which accepts literals only and never runs code. JSON
with the same structure is accepted too (``top_ngrams`` keys as strings, pairs as 2-lists). Every
problem (truncated file, wrong types, code in the file) becomes a one-line
:class:`~substrate_lm.errors.SubstrateError` naming the file and the offending entry.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

from ..errors import SubstrateError
from ..fsutil import atomic_write_text

Stats = list[dict[str, Any]]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def parse_ngram_text(text: str, source: str = "<text>") -> Stats:
    """Parse the text of a statistics file (Python literal or JSON) and validate it.

    Args:
        text: File contents.
        source: Name used in error messages.

    Returns:
        The validated statistics (see :func:`validate_stats`).
    """
    stripped = text.strip()
    if not stripped:
        raise SubstrateError(f"n-gram file {source} is empty; expected a list of per-language statistics")
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        try:
            data = ast.literal_eval(stripped)
        except SyntaxError as exc:
            where = f" at line {exc.lineno}" if exc.lineno else ""
            raise SubstrateError(
                f"n-gram file {source} is not a complete Python literal or JSON{where} ({_one_line(exc.msg)}); "
                "is it truncated? re-copy or regenerate it"
            ) from None
        except (ValueError, TypeError) as exc:
            # literal_eval refuses names, calls, operators...: the file contains code, not data.
            raise SubstrateError(
                f"n-gram file {source} contains something other than literals ({_one_line(exc)}); "
                "only lists, dicts, tuples, strings and integers are allowed and nothing is executed"
            ) from None
        except (RecursionError, MemoryError):
            raise SubstrateError(f"n-gram file {source} is nested too deeply to be statistics") from None
    return validate_stats(data, source)


def validate_stats(data: Any, source: str = "<stats>") -> Stats:
    """Check the structure of parsed statistics and return a normalised copy.

    Normalisation: ``top_ngrams`` keys become ``int``, pairs become ``(str, int)`` tuples, and a
    missing ``language_name`` defaults to the language code. Unknown keys are dropped.

    Args:
        data: Parsed statistics.
        source: Name used in error messages.

    Raises:
        SubstrateError: One line naming the first problem.
    """
    if not isinstance(data, list):
        raise SubstrateError(
            f"n-gram file {source}: top level must be a list of per-language dicts, got {type(data).__name__}"
        )
    out: Stats = []
    seen: set[str] = set()
    for i, entry in enumerate(data):
        where = f"n-gram file {source}: entry {i}"
        if not isinstance(entry, dict):
            raise SubstrateError(f"{where} must be a dict with 'lang' and 'top_ngrams', got {type(entry).__name__}")
        lang = entry.get("lang")
        if not isinstance(lang, str) or not lang:
            raise SubstrateError(f"{where} needs a non-empty string 'lang'")
        where = f"n-gram file {source}: entry {i} ({lang!r})"
        if lang in seen:
            raise SubstrateError(f"{where}: language appears twice; merge its statistics into one entry")
        seen.add(lang)
        name = entry.get("language_name", lang)
        if not isinstance(name, str):
            raise SubstrateError(f"{where}: 'language_name' must be a string")
        top = entry.get("top_ngrams")
        if not isinstance(top, dict):
            raise SubstrateError(f"{where}: 'top_ngrams' must be a dict {{n: [(gram, count), ...]}}")
        norm: dict[int, list[tuple[str, int]]] = {}
        for key, pairs in top.items():
            n = _as_length(key)
            if n is None:
                raise SubstrateError(f"{where}: top_ngrams key {key!r} must be a positive integer n-gram length")
            if n in norm:
                raise SubstrateError(f"{where}: n-gram length {n} appears twice")
            if not isinstance(pairs, (list, tuple)):
                raise SubstrateError(f"{where}: top_ngrams[{n}] must be a list of (gram, count) pairs")
            rows = []
            for j, pair in enumerate(pairs):
                ok = (
                    isinstance(pair, (list, tuple))
                    and len(pair) == 2
                    and isinstance(pair[0], str)
                    and pair[0] != ""
                    and isinstance(pair[1], int)
                    and not isinstance(pair[1], bool)
                    and pair[1] >= 0
                )
                if not ok:
                    raise SubstrateError(
                        f"{where}: top_ngrams[{n}][{j}] must be a (non-empty string, count >= 0) pair, "
                        f"got {_one_line(repr(pair))[:80]}"
                    )
                rows.append((pair[0], pair[1]))
            norm[n] = rows
        out.append({"lang": lang, "language_name": name, "top_ngrams": norm})
    return out


def _as_length(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key > 0 else None
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key) if int(key) > 0 else None
    return None


def read_ngram_file(path: str | os.PathLike) -> Stats:
    """Read and validate a statistics file (Python literal or JSON).

    Args:
        path: File in the published format.

    Returns:
        A list of ``{"lang", "language_name", "top_ngrams": {n: [(gram, count), ...]}}``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SubstrateError(f"n-gram file {p} does not exist; pass the path of the statistics file") from None
    except IsADirectoryError:
        raise SubstrateError(f"n-gram file {p} is a folder; pass the statistics file itself") from None
    except UnicodeDecodeError as exc:
        raise SubstrateError(f"n-gram file {p} is not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_ngram_text(text, str(p))


def write_ngram_file(stats: Stats, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write statistics atomically in the published Python-literal format or as JSON.

    Args:
        stats: Statistics (validated before writing).
        path: Destination; its folder is created.
        fmt: ``"python"`` or ``"json"``; default from the suffix (``.json`` means JSON).

    Returns:
        The written path.
    """
    p = Path(path)
    clean = validate_stats(stats, str(p))
    fmt = fmt or ("json" if p.suffix.lower() == ".json" else "python")
    if fmt == "json":
        text = json.dumps(
            [{**e, "top_ngrams": {str(n): [list(x) for x in v] for n, v in e["top_ngrams"].items()}} for e in clean],
            ensure_ascii=False,
        )
    elif fmt == "python":
        # repr of the normalised structure is exactly the published layout (dicts, int keys, tuples).
        text = repr(clean)
    else:
        raise SubstrateError(f"unknown n-gram file format {fmt!r}; use 'python' or 'json'")
    atomic_write_text(p, text)
    return p

