"""Small helpers: atomic file writes (temp file in the same folder, fsync, ``os.replace``), PNG
saving, and a single-threaded BLAS context for many small solver calls."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would (umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    """Pretty-printed JSON (NaN written as null so any JSON reader accepts it)."""
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2, ensure_ascii=False) + "\n")


def _clean(obj):
    if isinstance(obj, float):
        return None if obj != obj or obj in (float("inf"), float("-inf")) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _clean(obj.tolist())
    return obj


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib ``Figure`` as PNG atomically.

    Figures are built with ``matplotlib.figure.Figure`` (never pyplot), so no global backend or
    figure registry is touched and nothing needs closing; PNG output goes through Agg.
    """
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def single_thread_blas():
    """Context manager limiting BLAS/OpenMP pools to one thread (no-op without threadpoolctl).

    Probes and t-SNE make hundreds of small BLAS calls; with a multi-threaded BLAS each call pays
    thread start-up and, on a busy machine, oversubscription. One thread measured 5-10x faster on
    2 cores for the sizes used here.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


class torch_threads:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count restored after.

    ``n=None`` changes nothing. On a machine busy with other jobs, fewer intra-op threads avoid
    OpenMP oversubscription (measured 7x faster with 1 thread than 2 on a loaded 2-core box).
    """

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            import torch

            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            import torch

            torch.set_num_threads(self.old)
        return False
