"""Line charts by layer (probe accuracy, purity) and CKA heatmaps, as PNG (matplotlib, no pyplot).

These take plain metrics (lists aligned with layer names), so the demo can overlay several models
with :func:`plot_probe_curves` from the dicts :func:`substrate_lm.analysis.analyze` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ._io import save_figure


def _short(name: str) -> str:
    return "sub" if name == "substrate" else name


def plot_layer_curves(
    series: Mapping[str, tuple[Sequence[str], Sequence[float]]],
    path: str | Path,
    ylabel: str,
    chance: float | None = None,
    title: str | None = None,
    dashed: Sequence[str] = (),
    ylim: tuple[float, float] | None = (0.0, 1.02),
) -> Path:
    """One line per series over its layers.

    Args:
        series: name -> (layer names, values). Series may have different numbers of layers; the x
            axis is the layer position (``sub``, 0, 1, ...).
        path: PNG to write.
        ylabel: y-axis label.
        chance: draw a horizontal chance line.
        title: plot title.
        dashed: series names drawn dashed (control tasks).
        ylim: y range.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    longest: Sequence[str] = []
    for name, (layers, values) in series.items():
        x = np.arange(len(layers))
        ax.plot(x, values, marker="o", ms=3.5, lw=1.6, ls="--" if name in dashed else "-", label=name)
        if len(layers) > len(longest):
            longest = layers
    if chance is not None:
        ax.axhline(chance, color="grey", lw=1, ls=":", label=f"chance ({chance:.2f})")
    ticks = np.arange(len(longest))
    step = max(1, len(ticks) // 16)
    ax.set_xticks(ticks[::step])
    ax.set_xticklabels([_short(n) for n in list(longest)[::step]], fontsize=8)
    ax.set_xlabel("layer (sub = substrate rows; 0 = input to block 1; last = after final norm)", fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_probe_curves(runs: Mapping[str, dict], path: str | Path, control: bool = True, title: str | None = None) -> Path:
    """Overlay probe accuracy by layer for several models (the metrics dicts of ``analyze``).

    Control-task curves are drawn dashed; the chance line is the first run's majority share.
    """
    series: dict[str, tuple[list[str], list[float]]] = {}
    dashed = []
    chance = None
    for name, m in runs.items():
        probe = m["probe"]
        series[name] = (m["layers"], probe["accuracy"])
        if control and "control_accuracy" in probe:
            series[f"{name} (control)"] = (m["layers"], probe["control_accuracy"])
            dashed.append(f"{name} (control)")
        if chance is None:
            chance = probe["chance_majority"]
    return plot_layer_curves(
        series, path, "probe accuracy (held-out entities)", chance, title or "Linear probe of category by layer", dashed
    )


def plot_cka_heatmap(
    matrix: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | Path,
    row_label: str = "model A layer",
    col_label: str = "model B layer",
    title: str | None = None,
) -> Path:
    """A CKA matrix as a heatmap (rows = ``row_names``, columns = ``col_names``, scale 0..1)."""
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=float)
    h = 1.2 + 0.32 * len(row_names)
    w = 1.8 + 0.32 * len(col_names)
    fig = Figure(figsize=(max(4.5, min(w, 12)), max(3.8, min(h, 10))))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
    ax.set_yticks(range(len(row_names)))
    ax.set_yticklabels([_short(n) for n in row_names], fontsize=7)
    ax.set_xticks(range(len(col_names)))
    ax.set_xticklabels([_short(n) for n in col_names], fontsize=7)
    ax.set_ylabel(row_label)
    ax.set_xlabel(col_label)
    if matrix.size <= 400:
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                v = matrix[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
    ax.set_title(title or "CKA between layers", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
