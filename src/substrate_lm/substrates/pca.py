"""PCA to a width, then L2-normalised rows: the last step of the ``float`` and ``glyph`` kinds.

Same maths as the published ``sklearn.decomposition.PCA(n_components=width).fit_transform`` +
``sklearn.preprocessing.normalize``: centre the rows, project on the top ``width`` principal axes,
scale each row to unit length (an all-zero row stays zero). It is computed here without sklearn,
deterministically and in bounded memory:

* the covariance comes from the Gram matrix ``X^T X`` accumulated over row chunks (in float32
  when the input is 0/1 and has fewer than 2^24 rows: the sums are then exact integers, and
  float32 GEMM is twice as fast), then float64 ``eigh`` of the ``d x d`` covariance;
* each axis' sign follows sklearn's ``svd_flip`` rule (the largest-magnitude loading is positive),
  so the result does not depend on the eigen-solver's arbitrary signs;
* projection runs in float32 on centred row blocks (as sklearn does for float32 input), the
  row norms in float64; the output is float32.

Portability note: on one software stack the output is bit-identical run to run. Other BLAS/LAPACK
builds round differently in the last bits, so a float table rebuilt elsewhere can have another
fingerprint; ship the saved safetensors file when the exact table matters.
"""

from __future__ import annotations

import numpy as np

from ..errors import SubstrateError

_CHUNK = 8192


def _single_thread_lapack():
    """Run ``eigh`` on one BLAS thread: multi-threaded ``syevd`` gains little at d = 1024 and,
    on a busy 2-core machine, spin-waiting threads made it 10x slower (0.5 s vs 5-11 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (ships with scikit-learn); without it eigh just uses the defaults
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def pca_unit_rows(x: np.ndarray, width: int) -> tuple[np.ndarray, dict]:
    """Project ``x`` ``[n, d]`` on its top ``width`` principal axes and L2-normalise the rows.

    Args:
        x: ``[n, d]`` array (uint8/bool 0/1 codes or floats).
        width: number of components, ``1 <= width <= d``.

    Returns:
        (float32 ``[n, width]`` with unit rows, info dict with the explained-variance share).
    """
    n, d = x.shape
    if not 1 <= width <= d:
        raise SubstrateError(f"PCA width {width} must be between 1 and the code width {d}")
    exact32 = x.dtype in (np.uint8, np.bool_) and n < (1 << 24)
    gram = np.zeros((d, d), dtype=np.float64)
    total = np.zeros(d, dtype=np.float64)
    for s in range(0, n, _CHUNK):
        c = x[s : s + _CHUNK].astype(np.float32 if exact32 else np.float64)  # [c, d]
        gram += (c.T @ c).astype(np.float64)  # [d, d]
        total += c.sum(axis=0, dtype=np.float64)
    mean = total / n  # [d]
    cov = (gram - n * np.outer(mean, mean)) / max(1, n - 1)  # [d, d]
    with _single_thread_lapack():
        evals, evecs = np.linalg.eigh(cov)  # ascending eigenvalues, columns are axes
    order = np.argsort(-evals, kind="stable")[:width]
    comps = evecs[:, order].T.copy()  # [width, d], rows = principal axes
    # sklearn svd_flip (Vt-based): make the largest |loading| of each axis positive
    pivot = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(width), pivot])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    out = np.empty((n, width), dtype=np.float32)
    comps32 = np.ascontiguousarray(comps.T, dtype=np.float32)  # [d, width]
    mean32 = mean.astype(np.float32)
    for s in range(0, n, _CHUNK):
        # centre before projecting (no cancellation), then one float32 GEMM per block
        y = (x[s : s + _CHUNK].astype(np.float32) - mean32) @ comps32  # [c, width]
        norms = np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))[:, None]  # [c, 1]
        norms[norms == 0] = 1.0  # sklearn.normalize leaves zero rows at zero
        out[s : s + _CHUNK] = y / norms
    var = np.clip(evals, 0.0, None)
    kept = float(var[order].sum() / var.sum()) if var.sum() > 0 else 1.0
    return out, {"pca_source_width": int(d), "pca_explained_variance": round(kept, 6)}
