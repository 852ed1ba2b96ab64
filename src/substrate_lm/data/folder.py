"""What a prepared data folder records: the one reader of ``meta.json``, ``stats.json`` and
``manifest.json`` outside the preparation itself.

A folder written by ``substrate-lm data prepare`` (see :mod:`.prepare` for the layout) holds
``meta.json`` (tokenizer identity, settings; written first), ``manifest.json`` (shards, ``complete``)
and ``stats.json`` (written last). Everything else that needs one of them asks here::

    from substrate_lm.data.folder import is_prepared, load_meta, load_stats, chars_per_token
    if is_prepared(path):
        cpt = chars_per_token(load_stats(path), "val")
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SubstrateError
from ..fsutil import read_json

__all__ = ["read_record", "is_prepared", "load_meta", "load_stats", "chars_per_token"]


def read_record(path: str | os.PathLike, *, missing_ok: bool = True) -> dict:
    """One JSON object of a data folder; ``{}`` when missing (``missing_ok``); one-line errors
    for an unreadable or damaged file."""
    if not missing_ok and not Path(path).exists():
        raise SubstrateError(f"{path} not found; prepare the data with `substrate-lm data prepare`")
    return read_json(path, missing={}, kind=dict, fix="prepare the data again")


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds finished token shards (``meta.json`` + a complete manifest)."""
    p = Path(path)
    if not (p / "meta.json").is_file():
        return False
    manifest = read_record(p / "manifest.json") if (p / "manifest.json").is_file() else {}
    return bool(manifest.get("complete", (p / "stats.json").is_file()))


def load_meta(data_dir: str | os.PathLike) -> dict:
    """``meta.json``: tokenizer identity (name, vocab_size, eos_id, fingerprint) and settings;
    ``{}`` when absent."""
    return read_record(Path(data_dir) / "meta.json")


def load_stats(data_dir: str | os.PathLike) -> dict:
    """``stats.json`` of a finished prepared directory; an unfinished or foreign folder is a one-line
    error saying how to finish or make it."""
    path = Path(data_dir) / "stats.json"
    if path.is_file():
        return read_record(path)
    manifest = read_record(Path(data_dir) / "manifest.json")
    try:
        shards = [sh for sp in manifest["splits"].values() for sh in sp["shards"]]
        tokens = sum(sh["tokens"] for sh in shards)
    except (KeyError, TypeError, AttributeError):
        manifest = {}
    if manifest and not manifest.get("complete"):
        raise SubstrateError(
            f"{data_dir} is not finished ({len(shards)} shards, {tokens:,} tokens so far); "
            "re-run the same substrate-lm data prepare command to finish it")
    raise SubstrateError(f"{path} not found: {data_dir} is not a finished prepared directory; run "
                         "substrate-lm data prepare --out DIR")


def chars_per_token(stats: dict, split: str = "val") -> float | None:
    """Characters per token of ``split`` from a ``stats.json`` dict (for bits per character);
    None when it is not recorded."""
    s = (stats.get("splits") or {}).get(split) or stats.get(split) or {}
    value = (s.get("chars_per_token") if isinstance(s, dict) else None) or stats.get("chars_per_token")
    return float(value) if value else None
