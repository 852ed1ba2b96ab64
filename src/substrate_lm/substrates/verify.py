"""Verification: the Model_1024_BIT card's sanity check, generalised to every kind.

The card checks the table shape, that every value is exactly 0 or 1 and counts the non-binary
entries. :func:`verify_substrate` reports, for any table:

* shape (and whether it matches the recorded vocab size and width),
* binary: all values 0/1, and the count of non-binary entries,
* distinct rows (hash of each row's bytes; exact counts, no V x V comparison),
* row norms (min / mean / max, and whether all rows have unit L2 norm),
* finite values, and the fingerprint against the recorded one.

Which properties are *required* depends on the kind: binary + distinct for ``bits`` and
``token-id``; unit norm + distinct for ``float``; unit norm for ``glyph`` (visually identical
strings share a row by design); finite values for all; the fingerprint whenever one is recorded (a trainable
table's export records the trained table's fingerprint, so it is checked too). For a model
directory the fingerprint is required for every table, a frozen kind's table must be the one its
kind and seed regenerate whatever ``substrate_frozen`` says (:mod:`.provenance`), and the weight
files must match the sha256 recorded in ``config.json`` when it records them (loading requires them).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SubstrateError
from .io import read_table
from .provenance import table_provenance_problem
from .registry import BINARY_KINDS, DISTINCT_KINDS, UNIT_NORM_KINDS, Substrate, fingerprint

UNIT_NORM_TOL = 1e-4


def count_distinct_rows(arr: np.ndarray) -> int:
    """Number of distinct rows of ``arr`` ``[V, W]``, by a 128-bit hash of each row's bytes.

    0/1 tables are bit-packed first (8x fewer bytes to hash). ``-0.0`` and ``0.0`` count as different.
    """
    if arr.dtype == np.uint8 or (arr.size and bool(np.all((arr == 0) | (arr == 1)))):
        packed = np.packbits(arr.astype(np.uint8, copy=False), axis=1)  # [V, ceil(W/8)]
        # a trailing pad-bit cannot make two rows of equal width collide, so packing is injective
        data = packed
    else:
        data = np.ascontiguousarray(arr)
    seen = set()
    for row in data:
        seen.add(hashlib.blake2b(row.tobytes(), digest_size=16).digest())
    return len(seen)


def verify_table(
    table: torch.Tensor | np.ndarray,
    kind: str | None = None,
    recorded_fingerprint: str | None = None,
    expected_shape: tuple[int, int] | None = None,
    norm_tol: float = UNIT_NORM_TOL,
) -> dict[str, Any]:
    """The verification report of one table (see the module docstring).

    Args:
        table: ``[V, W]`` table.
        kind: substrate kind deciding which properties are required (None: only finiteness).
        recorded_fingerprint: fingerprint to compare against.
        expected_shape: recorded ``(vocab_size, width)``.
        norm_tol: allowed ``|norm - 1|`` for unit-norm kinds (looser for half-precision storage).
    """
    if isinstance(table, torch.Tensor):
        arr = table.detach().to("cpu", torch.float32).contiguous().numpy()
    else:
        arr = np.ascontiguousarray(table, dtype=np.float32)
    problems: list[str] = []
    report: dict[str, Any] = {"kind": kind, "shape": tuple(int(s) for s in arr.shape)}
    if arr.ndim != 2 or 0 in arr.shape:
        report.update(ok=False, problems=[f"table must be 2-D and non-empty, got shape {arr.shape}"])
        return report
    V, W = arr.shape
    report["vocab_size"], report["width"] = V, W
    if expected_shape is not None:
        report["expected_shape"] = tuple(expected_shape)
        if tuple(expected_shape) != (V, W):
            problems.append(f"shape {(V, W)} differs from the recorded (vocab_size, width) {tuple(expected_shape)}")
    is01 = (arr == 0) | (arr == 1)
    non_binary = int(arr.size - np.count_nonzero(is01))
    del is01
    report["binary"] = non_binary == 0
    report["non_binary_entries"] = non_binary
    finite = bool(np.isfinite(arr).all())
    report["finite"] = finite
    if not finite:
        problems.append("table has NaN or infinite values")
    distinct = count_distinct_rows(arr.astype(np.uint8) if non_binary == 0 else arr)
    report["distinct_rows"] = distinct
    report["duplicate_rows"] = V - distinct
    report["all_rows_distinct"] = distinct == V
    norms = np.empty(V, dtype=np.float64)  # [V], in float64 row blocks (no full float64 copy)
    for s in range(0, V, 8192):
        block = arr[s : s + 8192].astype(np.float64)
        norms[s : s + 8192] = np.sqrt(np.einsum("ij,ij->i", block, block))
    report["norm_min"] = float(norms.min())
    report["norm_mean"] = float(norms.mean())
    report["norm_max"] = float(norms.max())
    report["unit_norm"] = bool(np.all(np.abs(norms - 1.0) <= norm_tol))
    fp = fingerprint(arr)
    report["fingerprint"] = fp
    report["recorded_fingerprint"] = recorded_fingerprint
    report["fingerprint_match"] = None if not recorded_fingerprint else fp == recorded_fingerprint

    if kind in BINARY_KINDS and non_binary:
        problems.append(f"{non_binary:,} entries are not 0 or 1 (kind {kind!r} must be strictly binary)")
    if kind in DISTINCT_KINDS and distinct != V:
        problems.append(f"{V - distinct:,} rows repeat another row (kind {kind!r} must be collision-free)")
    if kind in UNIT_NORM_KINDS and not report["unit_norm"]:
        problems.append(
            f"row norms span {report['norm_min']:.6f}..{report['norm_max']:.6f}; kind {kind!r} rows must have unit norm"
        )
    if report["fingerprint_match"] is False:
        problems.append(f"fingerprint {fp[:23]}... does not match the recorded {recorded_fingerprint[:23]}...")
    report["problems"] = problems
    report["ok"] = not problems
    return report


def verify_substrate(
    obj: Substrate | torch.Tensor | np.ndarray | str | os.PathLike,
    kind: str | None = None,
    expected_fingerprint: str | None = None,
) -> dict[str, Any]:
    """Verify a substrate, a bare table, a substrate file or a model directory.

    Args:
        obj: a :class:`Substrate`, a ``[V, W]`` table, a ``.safetensors`` substrate file or a model
            directory (``config.json`` + ``model.safetensors``; read directly, no model import).
        kind: the kind to check against (default: the recorded one).
        expected_fingerprint: overrides the recorded fingerprint.

    Returns:
        the report dict: ``ok`` (bool), ``problems`` (list of one-line strings) and the measurements.
    """
    source = None
    recorded = None
    expected_shape = None
    extra: dict[str, Any] = {}
    norm_tol = UNIT_NORM_TOL
    if isinstance(obj, Substrate):
        table, kind, recorded = obj.table, kind or obj.kind, obj.fingerprint
        expected_shape = (int(obj.meta.get("vocab_size", obj.vocab_size)), obj.width)
        source = "substrate"
    elif isinstance(obj, (str, os.PathLike)):
        table, info = read_table(Path(obj))
        kind = kind or info.get("kind")
        recorded = info.get("recorded_fingerprint")
        expected_shape = info.get("expected_shape")
        source = info["source"]
        extra = {"source_type": info.get("source_type"), "storage_dtype": info.get("storage_dtype")}
        if info.get("storage_dtype") in ("float16", "bfloat16"):
            norm_tol = 1e-2  # a unit row rounded to 8 (bf16) or 11 (fp16) mantissa bits
        meta = info.get("meta") or {}
        for key in ("seed", "font_version", "font_sha256", "tile_period", "package_version"):
            if meta.get(key) is not None:
                extra[key] = meta[key]
    else:
        table = obj
    report = verify_table(table, kind, expected_fingerprint or recorded, expected_shape, norm_tol)
    if extra.get("source_type") == "model":
        import json

        # lazily: the model package imports transformers, which building and checking a table never needs
        from ..modeling import WEIGHTS_HASH_KEY

        try:
            info["weights_recorded"] = bool(json.loads((Path(obj) / "config.json").read_text(encoding="utf-8"))
                                            .get(WEIGHTS_HASH_KEY))
        except (OSError, ValueError, AttributeError):
            info["weights_recorded"] = False
        _check_model_dir(Path(obj), info, report)
        _check_provenance(Path(obj), table, report, half=extra.get("storage_dtype") in ("float16", "bfloat16"))
    return {"source": source, **extra, **report}


def _check_provenance(path: Path, table, report: dict[str, Any], half: bool = False) -> None:
    """A model directory's table must be the one its config says, whatever ``substrate_frozen``
    says (see :mod:`.provenance`); the problem, if any, joins the report's."""
    from ..fsutil import read_json
    from ..tokenizer.inspect import vocab_strings
    from ..tokenizer.load import load_tokenizer

    cfg = read_json(path / "config.json", missing={}, corrupt={}, kind=dict)
    vocab = None
    if cfg.get("substrate_kind") == "glyph" and (path / "tokenizer.json").is_file():
        try:
            vocab = vocab_strings(load_tokenizer(path))
        except SubstrateError:
            vocab = None
    problem = table_provenance_problem(cfg, table, vocab=vocab, table_fingerprint=report.get("fingerprint"),
                                       atol=1e-2 if half else None)
    if problem and problem not in report["problems"] and not (
            report.get("fingerprint_match") is False and "does not match the recorded" in problem):
        report["problems"].append(problem)
    report["ok"] = not report["problems"]


def _check_model_dir(path: Path, info: dict[str, Any], report: dict[str, Any]) -> None:
    """What loading requires of a model directory beyond the table: a fingerprint, intact weights."""
    from ..modeling import check_weight_files  # lazily, as above: transformers only for model folders

    problems = report["problems"]
    # a missing fingerprint (any kind) and a frozen kind's regeneration: _check_provenance
    report["weights_sha256_ok"] = None  # not recorded: loading will refuse it, the table alone is checked here
    if info.get("weights_recorded"):
        try:
            check_weight_files(path)
            report["weights_sha256_ok"] = True
        except ValueError as exc:
            report["weights_sha256_ok"] = False
            problems.append(str(exc).splitlines()[0])
    report["ok"] = not problems


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned ``key: value`` lines, ending with ``OK`` or ``FAILED`` and the problems."""
    skip = {"problems", "ok"}
    keys = [k for k in report if k not in skip and report[k] is not None]
    width = max((len(k) for k in keys), default=0)
    lines = []
    for k in keys:
        v = report[k]
        if isinstance(v, float):
            v = f"{v:.6f}"
        lines.append(f"{k.ljust(width)} : {v}")
    if report.get("ok"):
        lines.append("OK")
    else:
        lines.append("FAILED")
        lines.extend(f"  - {p}" for p in report.get("problems", []))
    return "\n".join(lines)
