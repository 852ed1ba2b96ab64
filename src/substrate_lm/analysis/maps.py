"""2-D maps (PCA, t-SNE) of representations, coloured by category, one panel per layer.

Points are entities (or words): the occurrences of one entity are averaged first, which is what
the papers' word-group t-SNE shows and keeps the maps readable. t-SNE uses a perplexity scaled to
the number of points (7 for the papers' ~56 words, as in their notebook) and ``random_state=seed``. scikit-learn and
matplotlib are imported lazily; figures are drawn without pyplot (Agg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ._io import save_figure, single_thread_blas


def group_means(X: np.ndarray, groups: Sequence, labels: Sequence) -> tuple[np.ndarray, list[str], list[str]]:
    """Average rows per group (entity).

    Returns:
        ``(means [G, d], group names, label of each group)`` in first-appearance order.
    """
    groups = [str(g) for g in groups]
    order: dict[str, int] = {}
    for g in groups:
        order.setdefault(g, len(order))
    idx = np.array([order[g] for g in groups])
    X = np.asarray(X, dtype=np.float64)
    sums = np.zeros((len(order), X.shape[1]))
    np.add.at(sums, idx, X)
    counts = np.bincount(idx, minlength=len(order))[:, None]
    lab = {}
    for g, label in zip(groups, labels):
        lab.setdefault(g, str(label))
    names = list(order)
    return sums / counts, names, [lab[g] for g in names]


def embed_2d(X: np.ndarray, method: str = "pca", seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """Project ``[N, d]`` to ``[N, 2]`` with PCA or t-SNE (on centred features)."""
    with single_thread_blas():
        return _embed_2d(X, method, seed, perplexity)


def _embed_2d(X: np.ndarray, method: str, seed: int, perplexity: float | None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(0, keepdims=True)
    n = len(X)
    if n < 3:
        return np.pad(X[:, :2], ((0, 0), (0, max(0, 2 - X.shape[1]))))
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, X.shape[1], n)
        Y = PCA(n_components=k, random_state=seed).fit_transform(X)
        return np.pad(Y, ((0, 0), (0, 2 - k)))
    if method == "tsne":
        from sklearn.manifold import TSNE

        if perplexity is None:
            perplexity = float(min(30.0, max(5.0, n / 8.0)))
        perplexity = min(perplexity, (n - 1) / 3.0)
        # PCA first to <= 50 dims: the usual t-SNE preprocessing, and much faster for wide layers
        if X.shape[1] > 50 and n > 50:
            from sklearn.decomposition import PCA

            X = PCA(n_components=50, random_state=seed).fit_transform(X)
        # exact gradients are faster than Barnes-Hut at map sizes (<= a few hundred points) and do
        # not depend on OpenMP threads; 500 iterations are plenty for a picture
        tsne = TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            random_state=seed,
            method="exact" if n <= 500 else "barnes_hut",
            max_iter=500,
        )
        return tsne.fit_transform(X)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def pick_layers(names: Sequence[str], max_panels: int = 6) -> list[int]:
    """Indices of up to ``max_panels`` layers spread evenly, always with the first and last."""
    n = len(names)
    if n <= max_panels:
        return list(range(n))
    picks = np.linspace(0, n - 1, max_panels).round().astype(int)
    return sorted(set(picks.tolist()))


def category_colors(categories: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per category (tab10, or tab20 beyond ten categories)."""
    from matplotlib import colormaps

    cats = sorted(set(categories))
    cmap = colormaps["tab10" if len(cats) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}


def plot_maps(
    arrays: Sequence[np.ndarray],
    names: Sequence[str],
    labels: Sequence[str],
    path: str | Path,
    method: str = "pca",
    seed: int = 0,
    point_names: Sequence[str] | None = None,
    title: str | None = None,
    max_panels: int = 6,
) -> Path:
    """Draw one 2-D map per selected layer into one PNG.

    Args:
        arrays: per-layer ``[N, d]`` arrays (already one row per entity / word).
        names: layer names, aligned with ``arrays``.
        labels: category of each row (colour).
        path: PNG to write.
        method: ``"pca"`` or ``"tsne"``.
        seed: projection seed.
        point_names: optional text per point, drawn when there are at most 80 points.
        title: figure title.
        max_panels: at most this many layers (spread evenly).

    Returns:
        The PNG path.
    """
    from matplotlib.figure import Figure

    sel = pick_layers(names, max_panels)
    cols = 2 if len(sel) == 4 else min(3, len(sel))
    rows = (len(sel) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.9 * rows + 0.6))
    colors = category_colors(labels)
    labels = [str(x) for x in labels]
    for p, li in enumerate(sel):
        ax = fig.add_subplot(rows, cols, p + 1)
        Y = embed_2d(arrays[li], method, seed)
        for cat, col in colors.items():
            m = np.array([lab == cat for lab in labels])
            ax.scatter(Y[m, 0], Y[m, 1], s=18, color=col, label=cat, alpha=0.85, linewidths=0)
        if point_names is not None and len(point_names) <= 80:
            for (x, y), txt in zip(Y, point_names):
                ax.annotate(str(txt), (x, y), fontsize=6, alpha=0.8, xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"layer {names[li]}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, leg_labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, leg_labels, loc="lower center", ncol=min(len(colors), 7), fontsize=8, frameon=False)
    fig.suptitle(title or f"{method.upper()} maps by layer (colour = category)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return save_figure(fig, path)
