"""Small helpers: JSON-safe values, atomic PNG saving, and thread limits for many small solver
calls. The atomic writes themselves live in :mod:`substrate_lm.fsutil`."""

from __future__ import annotations

from pathlib import Path

from ..fsutil import atomic_write_bytes


def _clean(obj):
    """``obj`` as plain JSON values: NaN and infinities become None (so any JSON reader accepts
    them), keys become strings, tuples lists, numpy scalars and arrays Python values."""
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
