"""Read a user's text corpus as ``(lang, text)`` documents for n-gram statistics.

A corpus is any mix of paths:

* ``*.jsonl`` (optionally ``.gz``): one JSON object a line with a ``"text"`` field and an optional
  ``"lang"`` field (the world corpus and most dataset dumps look like this);
* any other file: UTF-8 text, one document a line (``.gz`` is decompressed);
* folders: every ``*.txt``, ``*.text``, ``*.md``, ``*.jsonl`` file inside, recursively, in sorted
  order (hidden files skipped).

The language of a document is, in order: its ``"lang"`` field; the file's stem or any parent
folder name when that is one of the requested languages (``corpus/ru/part1.txt``, ``en.txt``); the
only requested language when exactly one is given. Anything else is an error that says how to fix it.
Documents whose language is not requested are skipped.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import SubstrateError

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl",)


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def corpus_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the list of corpus files (folders: known suffixes only)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and _base_suffix(f) in TEXT_SUFFIXES + JSONL_SUFFIXES
            )
            if not found:
                raise SubstrateError(f"corpus folder {p} holds no .txt, .text, .md or .jsonl files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise SubstrateError(f"corpus path {p} does not exist; pass text files, folders or JSONL files")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _lang_from_path(path: Path, langs: Sequence[str]) -> str | None:
    stem = path.name.split(".")[0]
    for name in (stem, *(parent.name for parent in path.parents)):
        if name in langs:
            return name
    return None


def iter_corpus(paths: Iterable[str | os.PathLike], langs: Sequence[str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(lang, text)`` for every document of the corpus.

    Args:
        paths: Files and folders (see the module docstring).
        langs: Requested languages; documents of other languages are skipped. ``None`` keeps every
            language but then each document must name its language (``"lang"`` field or path).

    Raises:
        SubstrateError: Missing paths, invalid JSONL, non-UTF-8 text, or an undecidable language.
    """
    langs = list(langs) if langs else []
    only = langs[0] if len(langs) == 1 else None
    for path in corpus_files(paths):
        path_lang = _lang_from_path(path, langs) if langs else None
        jsonl = _base_suffix(path) in JSONL_SUFFIXES
        try:
            with _open_text(path) as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    if jsonl:
                        text, lang = parse_jsonl_line(line, path, lineno)
                    else:
                        text, lang = line.rstrip("\n"), None
                    lang = lang or path_lang or only
                    if lang is None:
                        raise SubstrateError(
                            f"cannot tell the language of {path}:{lineno}; add a \"lang\" field, name the file or "
                            "folder after the language (en.txt, ru/...), or pass --langs with one language"
                        )
                    if langs and lang not in langs:
                        continue
                    yield lang, text
        except UnicodeDecodeError as exc:
            raise SubstrateError(f"corpus file {path} is not UTF-8 text (bad byte at offset {exc.start})") from None
        except (OSError, EOFError) as exc:
            raise SubstrateError(f"cannot read corpus file {path}: {exc}") from None


def parse_jsonl_line(line: str, path: Path, lineno: int) -> tuple[str, str | None]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise SubstrateError(f"{path}:{lineno} is not valid JSON ({exc.msg}); each line must be one JSON object") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise SubstrateError(f"{path}:{lineno} needs a string \"text\" field")
    lang = obj.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise SubstrateError(f"{path}:{lineno}: \"lang\" must be a string language code")
    return obj["text"], lang or None
