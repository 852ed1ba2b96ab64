"""The demo's self-contained HTML report: loss curves, results table, probes by layer, CKA, samples."""

from __future__ import annotations

import base64
import html
import os
import platform
from pathlib import Path

from .. import __version__
from ..fsutil import atomic_write_json, atomic_write_text

READING_GUIDE = """
<p>Every model below has the same backbone, data, seed, schedule and number of steps; only the
token-embedding table differs. Three tables are <b>frozen</b> and carry no meaning: random
collision-free bits, rendered glyph bitmaps, the token id's own bits. The fourth is trained with the
rest (the usual setup). Read the report top to bottom:</p>
<ol>
<li><b>Loss curves and results</b>: do the frozen-substrate models learn the language about as well
as the trainable one? Validation loss and bits per character (bpc, comparable across tokenizers) on
held-out documents; the world's held-out questions (phrasings never seen in training) under the
papers' generation protocol (the first letter of the answer, mean &plusmn; CI95 over sampled runs) and
under the log-likelihood protocol (the option the model finds most likely). Chance on the
4-way multiple-choice questions is 25%.</li>
<li><b>Probe accuracy by layer</b>: a linear probe reads each entity's category (animal, city, tool,
...) from the model's hidden states, with cross-validation folds that hold whole entities out. At
the substrate (layer "substrate") a random table gives chance: its rows say nothing about meaning.
Accuracy rising above chance in the blocks is meaning emerging in the Transformer, the papers'
claim; a laptop-length run usually stays near chance for every model (the trainable one
included) because the models have not yet memorised the world's facts, so compare with the question
accuracies. The dashed control curve (labels shuffled per entity) shows how much a probe can fit by
memorising; the gap is the selectivity.</li>
<li><b>CKA</b>: how similar each frozen-substrate model's layers are to the trainable baseline's
(1 = the same representation up to rotation and scale).</li>
<li><b>Samples</b>: what each model says (greedy).</li>
</ol>
<p>Demo-scale caveats: the models are tiny and trained for minutes, so absolute accuracies are low and
noisy; the papers' widths (1024 bits) shrink to the demo's d_model. Use <code>substrate-lm ablate</code>
with several seeds for claims.</p>
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.muted{color:#777;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap}.ok{color:#080}.bad{color:#b00}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(x, digits=3, pct=False):
    if x is None:
        return "-"
    return f"{x:.1f}%" if pct else f"{x:.{digits}f}"


def _bench(result: dict, bench: str) -> dict:
    ev = result.get("evaluation") or {}
    for model_res in (ev.get("models") or {}).values():
        return (model_res.get("results") or {}).get(bench) or {}
    return {}


def plot_losses(results: dict[str, dict], path: Path) -> Path:
    """Training loss (line) and validation loss (markers) against step for every model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=110)
    ax = fig.add_subplot(111)
    for i, (name, r) in enumerate(results.items()):
        hist = r.get("history") or []
        tr = [(h["step"], h["loss"]) for h in hist if h.get("event") == "train" and "loss" in h]
        va = [(h["step"], h["val_loss"]) for h in hist if h.get("event") == "val" and "val_loss" in h]
        color = f"C{i}"
        if tr:
            ax.plot(*zip(*tr), color=color, lw=1.2, alpha=0.85, label=f"{name} (train)")
        if va:
            ax.plot(*zip(*va), "o--", color=color, ms=4, lw=0.8, label=f"{name} (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def results_rows(results: dict[str, dict]) -> list[dict]:
    rows = []
    for name, r in results.items():
        mc, short = _bench(r, "world-mc"), _bench(r, "world-short")
        mc_p, mc_l = mc.get("paper") or {}, mc.get("loglik") or {}
        sh_p, sh_l = short.get("paper") or {}, short.get("loglik") or {}
        val = r.get("val") or {}
        rows.append(
            dict(
                model=name,
                substrate=f"{r['substrate_kind']} x{r['substrate_width']}",
                frozen=r["substrate_frozen"],
                trainable=r["parameters"]["trainable"],
                total=r["parameters"]["total"],
                loss_first=r.get("train_loss_first"),
                loss_last=r.get("train_loss_last"),
                val_loss=val.get("val_loss"),
                val_bpc=val.get("val_bpc"),
                mc_paper=mc_p.get("mean"),
                mc_paper_ci=mc_p.get("ci95"),
                mc_loglik=mc_l.get("acc"),
                mc_loglik_ci=mc_l.get("acc_ci95"),
                short_paper=sh_p.get("mean"),
                short_paper_ci=sh_p.get("ci95"),
                short_loglik=sh_l.get("greedy_match"),
                short_bpc=sh_l.get("bpc"),
                unchanged=r.get("substrate_unchanged"),
                fingerprint=r.get("substrate_fingerprint"),
            )
        )
    return rows


def _table(rows: list[dict]) -> str:
    head = (
        "<tr><th>model</th><th>substrate</th><th>trainable / total params</th><th>train loss (first &rarr; last)</th>"
        "<th>val loss</th><th>val bpc</th><th>world MC, paper</th><th>world MC, loglik</th>"
        "<th>world short, paper</th><th>world short, loglik greedy</th><th>table unchanged</th></tr>"
    )
    body = []
    for r in rows:
        unchanged = (
            '<span class="ok">yes</span>' if r["unchanged"] else ("trainable" if r["unchanged"] is None else '<span class="bad">NO</span>')
        )
        pm = lambda v, ci: "-" if v is None else f"{v:.1f}% &plusmn; {ci or 0:.1f}"  # noqa: E731
        body.append(
            f"<tr><td>{html.escape(r['model'])}</td><td>{html.escape(r['substrate'])}"
            f"{'' if r['frozen'] else ' (trainable)'}</td>"
            f"<td>{r['trainable'] / 1e6:.2f}M / {r['total'] / 1e6:.2f}M</td>"
            f"<td>{_fmt(r['loss_first'], 2)} &rarr; {_fmt(r['loss_last'], 2)}</td>"
            f"<td>{_fmt(r['val_loss'])}</td><td>{_fmt(r['val_bpc'])}</td>"
            f"<td>{pm(r['mc_paper'], r['mc_paper_ci'])}</td><td>{pm(r['mc_loglik'], r['mc_loglik_ci'])}</td>"
            f"<td>{pm(r['short_paper'], r['short_paper_ci'])}</td><td>{_fmt(r['short_loglik'], pct=True)}</td>"
            f"<td>{unchanged}</td></tr>"
        )
    return "<table>" + head + "".join(body) + "</table>"


def _probe_table(analyses: dict[str, dict]) -> str:
    rows = []
    for name, m in analyses.items():
        probe = m.get("probe", {})
        acc = probe.get("accuracy") or []
        layers = m.get("layers") or []
        if not acc:
            continue
        best = max(range(len(acc)), key=lambda i: acc[i])
        chance = probe.get("chance_majority")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{acc[0]:.3f}</td><td>{acc[best]:.3f} ({html.escape(str(layers[best]))})</td>"
            f"<td>{acc[-1]:.3f}</td><td>{_fmt(chance)}</td></tr>"
        )
    return (
        "<table><tr><th>model</th><th>probe acc. at the substrate</th><th>best layer</th><th>last layer</th>"
        "<th>chance (majority)</th></tr>" + "".join(rows) + "</table>"
    )


def write_demo_report(out: Path, settings, results, analyses, generations, seconds: float, quick: bool) -> Path:
    """Write ``out/report.html`` (images embedded) and ``out/results.json``; returns the HTML path."""
    from ..analysis import plot_probe_curves

    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    loss_png = plot_losses(results, fig_dir / "loss_curves.png")
    probe_png = plot_probe_curves(analyses, fig_dir / "probe_by_layer.png", control=True, title="Category probe accuracy by layer")
    rows = results_rows(results)

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>substrate-lm demo report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Meaning beyond the token embeddings: the substrate-lm demo</h1>",
        f"<p class='muted'>substrate-lm {__version__} &middot; {'quick' if quick else 'full'} run &middot; "
        f"{seconds / 60:.1f} min on {html.escape(platform.processor() or platform.machine())} "
        f"({os.cpu_count()} CPUs) &middot; world {html.escape(settings.world_size)}, d_model {settings.d_model}, "
        f"{settings.n_layer} layers, {settings.steps} steps of {settings.batch_size} x {settings.block_size} tokens, "
        f"{settings.precision}</p>",
        "<h2>How to read this report</h2>",
        READING_GUIDE,
        "<h2>1. Loss curves</h2>",
        _img(loss_png, "loss curves"),
        "<h2>2. Results</h2>",
        _table(rows),
        "<p class='muted'>paper = the published generation protocol (first letter / containment, sampled, "
        f"{settings.n_runs} runs, mean &plusmn; CI95); loglik = option log-likelihood (accuracy &plusmn; CI95); "
        "world short, loglik greedy = share of answers that are the greedy continuation. "
        "'table unchanged': the frozen table still matches the fingerprint recorded at init.</p>",
        "<h2>3. Probe accuracy by layer</h2>",
        _img(probe_png, "probe accuracy by layer"),
        _probe_table(analyses),
    ]
    cka_done = False
    for name, m in analyses.items():
        plot = (m.get("plots") or {}).get("cka_compare")
        adir = out / "analysis" / next(s for n, s in settings.substrates.items() if n == name)
        if plot and (adir / plot).is_file():
            if not cka_done:
                parts.append("<h2>4. CKA against the trainable baseline</h2>")
                cka_done = True
            parts.append(f"<h3>{html.escape(name)}</h3>" + _img(adir / plot, f"CKA {name}"))
    parts.append("<h2>5. Samples (greedy)</h2>")
    for name, gens in generations.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        for g in gens:
            parts.append(
                f"<pre><b>{html.escape(g['prompt'])}</b>{html.escape(g['continuation'])}</pre>"
            )
    parts.append("<h2>Per-model analysis reports</h2><ul>")
    for name in analyses:
        spec = settings.substrates[name]
        rel = f"analysis/{spec}/report.html"
        if (out / rel).is_file():
            parts.append(f"<li><a href='{rel}'>{html.escape(name)}</a></li>")
    parts.append("</ul></body></html>")

    html_path = atomic_write_text(out / "report.html", "\n".join(parts))
    summary = dict(
        settings={k: v for k, v in vars(settings).items()},
        rows=rows,
        probe={n: {"layers": m.get("layers"), "accuracy": (m.get("probe") or {}).get("accuracy"),
                   "control": (m.get("probe") or {}).get("control_accuracy"),
                   "chance": (m.get("probe") or {}).get("chance_majority")} for n, m in analyses.items()},
        generations=generations,
        seconds=seconds,
    )
    atomic_write_json(out / "results.json", summary, default=str)
    return html_path
