"""The end of a growth run: metrics against depth as a table (markdown + JSON) and a plot.

One row per stage (the grown model after the stage) plus the monolithic baseline of the final
depth trained on the same total token budget.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..fsutil import atomic_write_json, atomic_write_text

COLUMNS = [
    ("model", "model"),
    ("depth", "depth"),
    ("trained", "trained"),
    ("steps", "steps"),
    ("tokens_total", "tokens (cum.)"),
    ("train_loss", "train loss"),
    ("val_loss", "val loss"),
    ("val_ppl", "val ppl"),
    ("val_bpc", "val bits/char"),
    ("params_total", "params"),
    ("params_trainable", "trained params"),
    ("seconds", "seconds"),
]


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if key in ("seconds",):
            return f"{value:.1f}"
        if key == "val_ppl":
            return f"{value:.2f}"
        return f"{value:.4f}"
    if isinstance(value, int) and key in ("tokens_total", "params_total", "params_trainable"):
        return f"{value:,}"
    return str(value)


def results_table(rows: list[dict]) -> str:
    """A markdown table of the rows (stages then baseline)."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, rule]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def plot_depth(stages: list[dict], baseline: dict | None, path: Path) -> Path | None:
    """Validation loss and bits per character against depth; the baseline as a separate marker.

    Returns:
        The image path, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metrics = [("val_loss", "validation loss (nats/token)"), ("val_bpc", "bits per character")]
    metrics = [m for m in metrics if any(s.get(m[0]) is not None for s in stages)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics):
        xs = [s["depth"] for s in stages if s.get(key) is not None]
        ys = [s[key] for s in stages if s.get(key) is not None]
        ax.plot(xs, ys, "o-", color="tab:blue", label="grown (stage by stage)")
        if baseline is not None and baseline.get(key) is not None:
            ax.plot([baseline["depth"]], [baseline[key]], "*", color="tab:red", markersize=14,
                    label="monolithic, same tokens")
        ax.set_xlabel("depth (blocks)")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(set(xs + ([baseline["depth"]] if baseline else []))))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Layer-wise growth on a frozen substrate")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(run_dir: Path, stages: list[dict], baseline: dict | None, info: dict) -> dict:
    """Write ``results.json``, ``results.md`` and ``depth.png`` into ``run_dir``; returns the paths."""
    rows = list(stages) + ([baseline] if baseline is not None else [])
    table = results_table(rows)
    plot = plot_depth(stages, baseline, run_dir / "depth.png")
    payload = {**info, "stages": stages, "baseline": baseline}
    atomic_write_json(run_dir / "results.json", payload, default=str)
    lines = [f"# Growth run {info.get('name', '')}", "", table, ""]
    if baseline is not None and stages:
        final = stages[-1]
        if final.get("val_loss") is not None and baseline.get("val_loss") is not None:
            delta = final["val_loss"] - baseline["val_loss"]
            lines.append(
                f"Grown model at depth {final['depth']}: val loss {final['val_loss']:.4f} vs monolithic "
                f"{baseline['val_loss']:.4f} ({'+' if delta >= 0 else ''}{delta:.4f}) on the same "
                f"{baseline.get('tokens_total', 0):,} training tokens."
            )
            lines.append("")
    if plot is not None:
        lines += ["![metrics against depth](depth.png)", ""]
    atomic_write_text(run_dir / "results.md", "\n".join(lines))
    return {"json": run_dir / "results.json", "markdown": run_dir / "results.md", "plot": plot, "table": table}
