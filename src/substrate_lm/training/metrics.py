"""Throughput accounting (FLOPs per token, peak FLOP/s, MFU) and the run's logs.

FLOPs are counted one way everywhere (nanoGPT ``estimate_mfu``, PaLM appendix B): a training token
costs ``6 * N_matmul + 12 * L * H * Q * T``, where N_matmul counts the weights used in matmuls (the
input table is a lookup, not a matmul, so it is excluded; the untied head is included), L layers,
H heads, Q head size, T sequence length (the attention score and value products).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fsutil import atomic_write_bytes, disk_error


def matmul_params(model: nn.Module) -> int:
    """Parameters that take part in matmuls: every 2-D+ weight except the input embedding table."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    if head is not None:
        skip -= {id(p) for p in head.parameters()}  # a tied head is still a matmul
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if p.ndim >= 2 and id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def model_shape(model: nn.Module) -> tuple[int, int, int]:
    """(layers, heads, head size) from an HF-style config."""
    cfg = model.config
    layers = int(cfg.num_hidden_layers)
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return layers, heads, head_dim


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token: ``6 * N_matmul + 12 * L * H * Q * T``."""
    layers, heads, head_dim = model_shape(model)
    return 6.0 * matmul_params(model) + 12.0 * layers * heads * head_dim * seq_len


# Dense peak FLOP/s per GPU from vendor data sheets (bf16 tensor cores; fp32 without TF32).
_GPU_PEAKS = {
    "H200": (989e12, 67e12),
    "H100": (989e12, 67e12),
    "A100": (312e12, 19.5e12),
    "A10": (125e12, 31.2e12),
    "L40": (181e12, 90.5e12),
    "L4": (121e12, 30.3e12),
    "4090": (165e12, 82.6e12),
    "3090": (71e12, 35.6e12),
    "V100": (0.0, 15.7e12),
    "T4": (0.0, 8.1e12),
}


def peak_flops(device: torch.device | str, precision: str = "fp32") -> float:
    """Peak FLOP/s of one device, 0.0 when unknown.

    GPUs come from a table of data-sheet numbers. CPUs are estimated as threads x clock x FLOPs per
    cycle of the widest unit the flags advertise (AMX bf16 1024, AVX-512 bf16 128, AVX-512 FMA 64,
    AVX2 FMA 32); an estimate, good enough to compare runs on one machine.
    """
    device = torch.device(device)
    bf16 = precision == "bf16"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (p_bf16, p_fp32) in _GPU_PEAKS.items():
            if key in name:
                return p_bf16 if bf16 else p_fp32
        return 0.0
    flags, mhz = _cpu_info()
    if bf16 and "amx_bf16" in flags:
        per_cycle = 1024
    elif bf16 and "avx512_bf16" in flags:
        per_cycle = 128
    elif "avx512f" in flags:
        per_cycle = 64
    elif "fma" in flags:
        per_cycle = 32
    else:
        per_cycle = 8
    return torch.get_num_threads() * mhz * 1e6 * per_cycle


def _cpu_info() -> tuple[set[str], float]:
    flags: set[str] = set()
    mhz = 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz" and not mhz:
                    mhz = float(value)
                elif key == "bogomips" and not mhz:
                    mhz = float(value) / 2
    except (OSError, ValueError):
        pass
    return flags, mhz or 2000.0


def format_duration(seconds: float) -> str:
    """``1h02m``, ``4m12s``, ``9s``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_count(x: float) -> str:
    """``950``, ``12.3k``, ``4.1M``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


class RunLogger:
    """JSONL records, TensorBoard scalars and the live progress line of one run (rank 0 only).

    Args:
        run_dir: run folder; ``log.jsonl`` and ``tb/`` go there.
        jsonl: write ``log.jsonl``.
        tensorboard: write TensorBoard scalars (lazily imported; skipped with a note if missing).
        progress: print the progress line to stderr (carriage-return updates on a terminal).
        enabled: False on ranks other than 0: everything becomes a no-op.
    """

    def __init__(self, run_dir: str | os.PathLike, *, jsonl: bool = True, tensorboard: bool = False,
                 progress: bool = True, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.progress = progress and enabled
        self.jsonl_path = self.run_dir / "log.jsonl" if jsonl and enabled else None
        self._fh = None
        self._tb = None
        self._tty = sys.stderr.isatty()
        self._last_line_len = 0
        # TensorBoard's writer creates its folder at once: open it with the first record, so a run
        # that fails its checks before training leaves no files behind
        self._want_tb = tensorboard and enabled

    def _open_tb(self) -> None:
        self._want_tb = False
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.note("tensorboard is not installed; logging JSONL only "
                      "(pip install tensorboard to get TensorBoard curves)")
        else:
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """Keep only the records of steps <= ``step`` (a resumed run re-logs the rest), atomically.

        Lines that do not parse (cut by a kill mid-write or a full disk, inside a UTF-8 character
        or not) are dropped; so is a record with no valid step.
        """
        if self.jsonl_path is None or not self.jsonl_path.is_file():
            return
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        kept = []
        for raw in self.jsonl_path.read_bytes().split(b"\n"):
            try:
                rec = json.loads(raw.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError is a ValueError too
                continue
            s = rec.get("step", 0) if isinstance(rec, dict) else None
            if isinstance(s, (int, float)) and not isinstance(s, bool) and s <= step:
                kept.append(raw)
        try:
            atomic_write_bytes(self.jsonl_path, b"".join(x + b"\n" for x in kept))
        except OSError as exc:
            raise disk_error(exc, str(self.jsonl_path)) from None

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (``event`` and ``step`` keys plus values) to the JSONL file and TensorBoard."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        if self.jsonl_path is not None:
            try:
                if self._fh is None:
                    self.run_dir.mkdir(parents=True, exist_ok=True)
                    self._fh = open(self.jsonl_path, "a", encoding="utf-8")
                self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._fh.flush()
            except OSError as exc:
                raise disk_error(exc, str(self.jsonl_path)) from None
        if self._want_tb:
            self._open_tb()
        if self._tb is not None:
            event, step = record.get("event", "train"), record.get("step", 0)
            for key, value in record.items():
                if key not in ("time", "step", "event") and isinstance(value, (int, float)) \
                        and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{event}/{key}", value, step)
            if event == "sample":
                self._tb.add_text("sample", f"{record.get('prompt', '')} -> {record.get('text', '')}", step)

    def progress_line(self, text: str, final: bool = False) -> None:
        """Show ``text`` as the live line (rewritten in place on a terminal)."""
        if not self.progress:
            return
        if self._tty and not final:
            pad = max(0, self._last_line_len - len(text))
            sys.stderr.write("\r" + text + " " * pad)
            self._last_line_len = len(text)
        else:
            sys.stderr.write(("\r" if self._tty else "") + text + "\n")
            self._last_line_len = 0
        sys.stderr.flush()

    def note(self, text: str) -> None:
        """A one-line message that must not be overwritten by the progress line."""
        if not self.enabled:
            return
        if self._tty and self._last_line_len:
            sys.stderr.write("\n")
            self._last_line_len = 0
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty and self._last_line_len:
            sys.stderr.write("\n")
            self._last_line_len = 0
        # closing flushes: on a full disk that fails again, and the error was already reported
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        if self._tb is not None:
            try:
                self._tb.close()
            except Exception:  # noqa: BLE001 - TensorBoard's writer thread reports I/O in its own types
                pass
            self._tb = None
