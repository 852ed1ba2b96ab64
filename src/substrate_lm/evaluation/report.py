"""Writing evaluation results: JSON (every setting, the exact items), markdown tables, the published
text lines, and bar charts with CI95 error bars comparing models (matplotlib, imported lazily).

Files written by :func:`write_report` into ``out_dir``:

* ``results.json``: the full results dict from ``evaluate_models`` (settings, per benchmark its
  source, sample size, shuffle seed and item ids; per model and benchmark every protocol's numbers);
* ``results.md``: one table per protocol (models x benchmarks) plus settings;
* ``paper_lines.txt``: the published output lines (``{model} MMLU: 23.58% ± 0.20% (σ=0.32%)``);
* ``chart_paper.png`` / ``chart_loglik.png``: grouped bars, one group per benchmark, one bar per model.

All files are written atomically (temp file in the same folder, fsync, ``os.replace``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..fsutil import atomic_write_text


def _cell_paper(r: dict) -> str:
    return f"{r['mean']:.2f} ± {r['ci95']:.2f}"


def _cell_loglik(r: dict, key: str) -> str:
    if r.get("metric") == "bpc":
        return f"{r['bpc']:.3f} bpc" if key == "acc" else "-"
    return f"{r[key]:.2f} ± {r[key + '_ci95']:.2f}"


def _table(results: dict, protocol: str, key: str | None = None) -> list[str]:
    benches = list(results.get("benchmarks", {}))
    labels = [results["benchmarks"][b]["label"] for b in benches]
    rows = ["| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(benches)]
    any_cell = False
    for name, m in results.get("models", {}).items():
        cells = []
        for b in benches:
            r = m.get("results", {}).get(b, {}).get(protocol)
            if r is None:
                cells.append("-")
                continue
            any_cell = True
            cells.append(_cell_paper(r) if protocol == "paper" else _cell_loglik(r, key or "acc"))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows if any_cell else []


def markdown_report(results: dict) -> str:
    """Markdown: one table per protocol (and metric), then settings and sample sizes."""
    s = results.get("settings", {})
    lines = ["# Evaluation results", ""]
    t = _table(results, "paper")
    if t:
        lines += [
            "## Paper protocol (generation, first letter / containment / BLEU)",
            "",
            f"Mean over {s.get('n_runs')} runs ± CI95 (1.96 σ/√n_runs); accuracy in %, BLEU raw.",
            "",
            *t,
            "",
        ]
    t = _table(results, "loglik", "acc")
    if t:
        lines += [
            f"## Log-likelihood protocol: acc (options scored as {s.get('mc_mode', 'text')})",
            "",
            "Accuracy in % ± CI95 (1.96 × standard error over items); generative benchmarks: bits per "
            "character of the gold answer.",
            "",
            *t,
            "",
            "## Log-likelihood protocol: acc_norm (log-probability per character)",
            "",
            *_table(results, "loglik", "acc_norm"),
            "",
        ]
    lines += ["## Settings", ""]
    for k, v in s.items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Benchmarks", "", "| benchmark | source | available | sample | items | seed |", "|---|---|---|---|---|---|"]
    for b, d in results.get("benchmarks", {}).items():
        lines.append(
            f"| {d['label']} | {d['source']} | {d['n_available']} | {d['sample_size'] or 'all'} | "
            f"{d['n_items']} | {d['shuffle_seed']} |"
        )
    lines.append("")
    return "\n".join(lines)


def paper_text_lines(results: dict) -> list[str]:
    """All published-format lines, model by model, in evaluation order."""
    out = []
    for m in results.get("models", {}).values():
        out.extend(m.get("lines", []))
    return out


def bar_chart(results: dict, path: str | os.PathLike, protocol: str = "paper") -> Path | None:
    """Grouped bar chart (benchmark groups, one bar per model) with CI95 error bars.

    Returns the path written, or None when no benchmark has numbers for this protocol. BLEU and
    bits-per-character values share the axis with accuracies; their labels say so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results.get("models", {}))
    benches = []
    for b, d in results.get("benchmarks", {}).items():
        if any(protocol in results["models"][m].get("results", {}).get(b, {}) for m in models):
            if protocol == "loglik" and all(
                results["models"][m]["results"][b][protocol].get("metric") == "bpc"
                for m in models if protocol in results["models"][m]["results"].get(b, {})
            ):
                continue  # bits per character do not belong on an accuracy axis
            benches.append((b, d["label"]))
    if not benches or not models:
        return None
    x = np.arange(len(benches))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(benches) * max(1, len(models)) ** 0.5 + 2), 4.5))
    for k, m in enumerate(models):
        vals, errs = [], []
        for b, _ in benches:
            r = results["models"][m]["results"].get(b, {}).get(protocol)
            if r is None:
                vals.append(np.nan)
                errs.append(0.0)
            elif protocol == "paper":
                vals.append(r["mean"])
                errs.append(r["ci95"])
            else:
                vals.append(r["acc"])
                errs.append(r["acc_ci95"])
        ax.bar(x + (k - (len(models) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels([lab for _, lab in benches], rotation=30, ha="right")
    ax.set_ylabel("accuracy % (BLEU raw)" if protocol == "paper" else "accuracy %")
    title = "paper protocol (generation), mean ± CI95" if protocol == "paper" else \
        "log-likelihood protocol, acc ± CI95"
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_report(results: dict, out_dir: str | os.PathLike, charts: bool = True) -> dict[str, Path]:
    """Write results.json, results.md, paper_lines.txt and the charts; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    atomic_write_text(paths["json"], json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(paths["markdown"], markdown_report(results))
    lines = paper_text_lines(results)
    if lines:
        paths["lines"] = out / "paper_lines.txt"
        atomic_write_text(paths["lines"], "\n".join(lines) + "\n")
    if charts:
        for protocol in ("paper", "loglik"):
            p = bar_chart(results, out / f"chart_{protocol}.png", protocol)
            if p is not None:
                paths[f"chart_{protocol}"] = p
    return paths
