"""Substrate files: safetensors with metadata, tables inside model directories, ``embeddings.txt``.

Substrate file (``*.safetensors``): one tensor ``token_embeddings.weight`` (the same name as in a
model's ``model.safetensors``), stored as uint8 for the 0/1 kinds (4x smaller; loading gives
float32) and float32 otherwise. String metadata: ``format`` (``substrate-lm/substrate``), ``kind``,
``width``, ``seed``, ``vocab_size``, ``fingerprint``, ``font_version``, ``font_sha256``,
``package_version``, ``storage_dtype`` and ``meta`` (all builder facts as JSON).

``embeddings.txt`` (the published dump; the Model_1024_BIT card recommends shipping one): for each
token, one line with its id, then one line with its row as a Python list, e.g. ``[0, 1, 1, ...]``.
Binary tables are written as ints, other tables as Python float reprs (exact for float32). Both
directions stream row blocks, so a 65,536 x 1024 dump never needs the text in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import SubstrateError
from ..fsutil import read_json
from .registry import BINARY_KINDS, Substrate, fingerprint

TENSOR_KEY = "token_embeddings.weight"
FILE_FORMAT = "substrate-lm/substrate"
_CHUNK = 4096


# ------------------------------------------------------------------------------ atomic writes


class _AtomicFile:
    """``with _AtomicFile(path) as tmp:`` write ``tmp``; on success fsync + ``os.replace(tmp, path)``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(self.tmp, self.path)


# ------------------------------------------------------------------------------- safetensors


def _as_numpy32(table: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(table, torch.Tensor):
        return table.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return np.ascontiguousarray(table, dtype=np.float32)


def _is_binary(arr: np.ndarray) -> bool:
    return bool(np.all((arr == 0) | (arr == 1)))


def save_substrate(sub: Substrate, path: str | os.PathLike) -> Path:
    """Write a substrate to ``path`` (safetensors, atomically). Returns the path."""
    from safetensors.torch import save_file

    table = sub.table.detach().to("cpu", torch.float32).contiguous()
    binary = sub.kind in BINARY_KINDS and _is_binary(table.numpy())
    stored = table.to(torch.uint8) if binary else table
    meta = dict(sub.meta)
    metadata = {
        "format": FILE_FORMAT,
        "kind": sub.kind,
        "width": str(sub.width),
        "seed": "" if sub.seed is None else str(sub.seed),
        "vocab_size": str(sub.vocab_size),
        "fingerprint": sub.fingerprint,
        "font_version": str(meta.get("font_version") or ""),
        "font_sha256": str(meta.get("font_sha256") or ""),
        "package_version": str(meta.get("package_version") or ""),
        "storage_dtype": "uint8" if binary else "float32",
        "meta": json.dumps(meta, ensure_ascii=True, sort_keys=True),
    }
    path = Path(path)
    with _AtomicFile(path) as tmp:
        save_file({TENSOR_KEY: stored}, str(tmp), metadata=metadata)
    return path


def _read_safetensors(path: Path, key: str | None = None) -> tuple[torch.Tensor, dict[str, str], str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            name = key or next((k for k in keys if k == TENSOR_KEY or k.endswith("." + TENSOR_KEY)), None)
            if name is None or name not in keys:
                raise SubstrateError(f"{path} has no tensor named {TENSOR_KEY!r} (found: {', '.join(keys[:5])})")
            return fh.get_tensor(name), dict(fh.metadata() or {}), name
    except SubstrateError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise SubstrateError(f"cannot read {path} as safetensors: {str(exc).splitlines()[0]}") from None


def load_substrate(path: str | os.PathLike, verify: bool = True) -> Substrate:
    """Load a substrate file written by :func:`save_substrate`.

    Args:
        path: the ``.safetensors`` file.
        verify: recompute the fingerprint and fail if it differs from the recorded one.

    Raises:
        SubstrateError: missing/corrupt file, not a substrate file, fingerprint mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise SubstrateError(f"substrate file {path} not found; build one with `substrate-lm substrate build`")
    tensor, md, _ = _read_safetensors(path)
    if md.get("format") != FILE_FORMAT:
        raise SubstrateError(f"{path} is not a substrate file (no substrate-lm metadata); for a model use its directory")
    table = tensor.to(torch.float32).contiguous()
    meta = json.loads(md.get("meta") or "{}")
    fp = fingerprint(table)
    recorded = md.get("fingerprint", "")
    if verify and recorded and fp != recorded:
        raise SubstrateError(
            f"{path}: table fingerprint {fp[:23]}... does not match the recorded {recorded[:23]}...; "
            f"the file is corrupt or was edited: rebuild it"
        )
    seed = md.get("seed", "")
    return Substrate(
        table=table,
        kind=md.get("kind", meta.get("kind", "")),
        width=int(table.shape[1]),
        seed=int(seed) if seed.isdigit() else None,
        fingerprint=fp,
        meta=meta,
    )


def read_table(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The float32 table and what is recorded about it, from a substrate file or a model directory.

    A model directory needs ``config.json`` (``vocab_size``, ``n_embed``, ``substrate_kind``,
    ``substrate_fingerprint``) and ``model.safetensors`` (or a sharded index) holding
    ``token_embeddings.weight``; no model code is imported.

    Returns:
        (float32 ``[V, width]`` array, info dict with ``source``, ``kind``, ``recorded_fingerprint``,
        ``expected_shape``, ``storage_dtype`` and, for substrate files, ``meta``).
    """
    path = Path(path)
    if path.is_dir():
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise SubstrateError(f"{path} is a directory without config.json; pass a model directory or a substrate file")
        cfg = read_json(cfg_path, fix="copy or export it again")
        if not isinstance(cfg, dict):
            raise SubstrateError(f"{cfg_path} is not a JSON object; copy or export the model again")
        index = path / "model.safetensors.index.json"
        single = path / "model.safetensors"
        if single.is_file():
            tensor, _, name = _read_safetensors(single)
        elif index.is_file():
            weight_map = read_json(index, fix="copy or export it again")
            weight_map = weight_map.get("weight_map", {}) if isinstance(weight_map, dict) else {}
            name = next((k for k in weight_map if k == TENSOR_KEY or k.endswith("." + TENSOR_KEY)), None)
            if name is None:
                raise SubstrateError(f"{index} maps no tensor named {TENSOR_KEY!r}")
            tensor, _, name = _read_safetensors(path / weight_map[name], key=name)
        else:
            raise SubstrateError(f"{path} has no model.safetensors; export the model with save_pretrained first")
        vocab, width = cfg.get("vocab_size"), cfg.get("n_embed")
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in (vocab, width)):
            raise SubstrateError(f"{cfg_path}: vocab_size {vocab!r} / n_embed {width!r} are not positive integers; "
                                 "copy or export the model again")
        info = {
            "source": str(path),
            "source_type": "model",
            "kind": cfg.get("substrate_kind"),
            "frozen": cfg.get("substrate_frozen"),
            "recorded_fingerprint": cfg.get("substrate_fingerprint"),
            "expected_shape": (int(vocab), int(width)) if vocab and width else None,
            "storage_dtype": str(tensor.dtype).replace("torch.", ""),
        }
        return tensor.to(torch.float32).contiguous().numpy(), info
    if not path.is_file():
        raise SubstrateError(f"{path} not found; pass a substrate .safetensors file or a model directory")
    tensor, md, _ = _read_safetensors(path)
    meta = json.loads(md.get("meta") or "{}") if md.get("format") == FILE_FORMAT else {}
    vocab, width = md.get("vocab_size"), md.get("width")
    info = {
        "source": str(path),
        "source_type": "substrate" if md.get("format") == FILE_FORMAT else "safetensors",
        "kind": md.get("kind") or None,
        "recorded_fingerprint": md.get("fingerprint") or None,
        "expected_shape": (int(vocab), int(width)) if vocab and width else None,
        "storage_dtype": str(tensor.dtype).replace("torch.", ""),
        "meta": meta,
    }
    return tensor.to(torch.float32).contiguous().numpy(), info


# ------------------------------------------------------------------------------ embeddings.txt


def _binary_lines(block: np.ndarray) -> np.ndarray:
    """uint8 ``[c, 3W+1]`` ASCII of ``[b, b, ..., b]\\n`` for a 0/1 block ``[c, W]`` (vectorised)."""
    c, w = block.shape
    out = np.empty((c, 3 * w + 1), dtype=np.uint8)
    out[:, 0] = ord("[")
    out[:, 1::3] = block + ord("0")  # digits at 1, 4, 7, ...
    out[:, 2::3] = ord(",")
    out[:, 3::3] = ord(" ")
    out[:, 3 * w - 1] = ord("]")
    out[:, 3 * w] = ord("\n")
    return out


def write_embeddings_txt(
    table: torch.Tensor | np.ndarray | Substrate,
    path: str | os.PathLike,
    binary: bool | None = None,
) -> Path:
    """Write the published ``embeddings.txt`` dump (id line, then the row as a Python list).

    Args:
        table: ``[V, W]`` table (or a :class:`Substrate`).
        path: output file (written atomically).
        binary: write ints; default: when every value is 0 or 1.
    """
    if isinstance(table, Substrate):
        table = table.table
    arr = _as_numpy32(table)
    if arr.ndim != 2:
        raise SubstrateError(f"embeddings.txt needs a 2-D table, got shape {arr.shape}")
    if binary is None:
        binary = _is_binary(arr)
    elif binary and not _is_binary(arr):
        raise SubstrateError("binary=True but the table has values other than 0 and 1")
    path = Path(path)
    with _AtomicFile(path) as tmp, open(tmp, "wb") as fh:
        for s in range(0, arr.shape[0], _CHUNK):
            block = arr[s : s + _CHUNK]
            if binary:
                lines = _binary_lines(block.astype(np.uint8))
                for j, row in enumerate(lines):
                    fh.write(b"%d\n" % (s + j))
                    fh.write(row.tobytes())
            else:
                for j, row in enumerate(block.tolist()):
                    fh.write(b"%d\n" % (s + j))
                    fh.write(("[" + ", ".join(map(repr, row)) + "]\n").encode("ascii"))
    return path


def _parse_row(line: bytes, lineno: int, path: Path) -> np.ndarray:
    n = len(line)
    if n >= 3 and line[0:1] == b"[" and line[-1:] == b"]" and n % 3 == 0:
        raw = np.frombuffer(line, dtype=np.uint8)
        digits = raw[1::3] - ord("0")
        if (
            digits.max(initial=0) <= 1
            and np.all(raw[2:-1:3] == ord(","))
            and np.all(raw[3:-1:3] == ord(" "))
        ):
            return digits.astype(np.uint8)  # fast path: a 0/1 row written as ints
    text = line.decode("ascii", "replace").strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise SubstrateError(f"{path}:{lineno}: expected a row like [0, 1, ...], got {text[:40]!r}")
    body = text[1:-1].strip()
    try:
        return np.array(body.split(",") if body else [], dtype=np.float64)
    except ValueError:
        raise SubstrateError(f"{path}:{lineno}: row has a value that is not a number") from None


def iter_embeddings_txt(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """Stream ``(id, row)`` pairs from an ``embeddings.txt`` dump (rows uint8 for 0/1, else float64)."""
    path = Path(path)
    if not path.is_file():
        raise SubstrateError(f"{path} not found")
    with open(path, "rb") as fh:
        lineno = 0
        while True:
            id_line = fh.readline()
            lineno += 1
            if not id_line:
                return
            if not id_line.strip():
                continue  # tolerate blank lines (e.g. a trailing newline)
            row_line = fh.readline()
            lineno += 1
            try:
                tid = int(id_line)
            except ValueError:
                raise SubstrateError(f"{path}:{lineno - 1}: expected a token id, got {id_line[:40]!r}") from None
            if not row_line.strip():
                raise SubstrateError(f"{path}:{lineno}: token {tid} has no row line")
            yield tid, _parse_row(row_line.rstrip(b"\r\n"), lineno, path)


def read_embeddings_txt(path: str | os.PathLike, width: int | None = None) -> np.ndarray:
    """Read an ``embeddings.txt`` dump into ``[V, W]`` (uint8 when all rows are 0/1, else float32).

    Args:
        path: the dump.
        width: expected row width (default: the first row's).

    Raises:
        SubstrateError: malformed lines, rows of different widths, ids not exactly ``0..V-1``.
    """
    ids: list[int] = []
    rows: list[np.ndarray] = []
    for tid, row in iter_embeddings_txt(path):
        if width is None:
            width = len(row)
        if len(row) != width:
            raise SubstrateError(f"{path}: token {tid} has {len(row)} values, expected {width}")
        ids.append(tid)
        rows.append(row)
    if not rows:
        raise SubstrateError(f"{path} holds no rows")
    order = np.argsort(np.array(ids), kind="stable")
    sorted_ids = np.array(ids)[order]
    if not np.array_equal(sorted_ids, np.arange(len(ids))):
        raise SubstrateError(f"{path}: ids are not each of 0..{len(ids) - 1} exactly once")
    binary = all(r.dtype == np.uint8 for r in rows)
    out = np.empty((len(rows), width), dtype=np.uint8 if binary else np.float32)
    for pos, k in enumerate(order):
        out[pos] = rows[k]
    return out
