"""The demo's self-contained HTML report: loss curves, results table, probes by layer, CKA, samples."""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import platform
from pathlib import Path

from .. import __version__
from ..fsutil import atomic_write_json, atomic_write_text
from . import findings as F

READING_GUIDE = """
<p>Every model below has the same backbone, data, schedule and number of steps; only the
token-embedding table differs. Three tables are <b>frozen</b> and carry no meaning: random
collision-free bits, rendered glyph bitmaps, the token id's own bits. The fourth is trained with the
rest (the usual setup). Each model is trained on several seeds (backbone init and batch order); every
figure is the mean over seeds with a 95% confidence interval (Student's t), and every sentence under
<i>Findings</i> is computed from this run's numbers: a claim is <b>shown</b> only when the whole
interval lies on its side of the threshold.</p>
<ol>
<li><b>Loss curves and results</b>: do the frozen-substrate models learn the world as well as the
trainable one? Validation loss and bits per character on held-out documents; the world's held-out
questions (phrasings never seen in training, including two-hop questions) under the log-likelihood
protocol (the option text the model finds most likely after <code>Question: ...\nAnswer:</code>) and the
papers' generation protocol (the model writes the option letter, sampled), where the papers' claim is
the comparison with the architecturally identical trainable model (23.68% vs 14.00% on MMLU: the
trainable model often writes no valid option letter), so the share of valid letters is shown too.
Chance on the 4-way multiple-choice questions is 25%.</li>
<li><b>Probe accuracy by layer</b>: a linear probe reads each entity's category (animal, city, tool,
...) from the hidden states at the entity's name, in carrier sentences that say nothing about it
("The old story begins with Vedi."), with cross-validation folds that hold whole entities out. At the
substrate (layer "substrate") a random table must give chance: its rows say nothing about meaning.
Accuracy rising above chance in the blocks is meaning emerging in the Transformer, the papers'
claim. The dashed control curve (the entity-to-category map shuffled) shows how much a probe fits by
memorising; the gap to it is the selectivity.</li>
<li><b>CKA</b>: how similar each frozen-substrate model's layers are to the trainable baseline's
(1 = the same representation up to rotation and scale), first seed.</li>
<li><b>Docking</b> (when run): experts on one shared frozen table composed by logit averaging, and
growth block by block.</li>
<li><b>Samples</b>: what each model says (greedy, first seed).</li>
</ol>
<p>Demo-scale caveats: the models are tiny and the world is small (a few dozen entities seen many
times); the papers' widths (1024 bits) shrink to the demo's d_model. A figure with one seed has no
interval and supports no claim.</p>
"""

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.muted{color:#777;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap}.ok{color:#080}.bad{color:#b00}.mid{color:#a60}
li.finding{margin:.35em 0}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(x, digits=3, pct=False):
    if x is None:
        return "-"
    return f"{x:.1f}%" if pct else f"{x:.{digits}f}"


def _ci_cell(stat: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    f = (lambda x: f"{x:.1f}") if pct else (lambda x: f"{x:.{digits}f}")
    if stat.get("ci95") is None:
        return f(stat["mean"])
    return f"{f(stat['mean'])} &plusmn; {f(stat['ci95'])}"


def _mean_curve(histories: list[list[dict]], event: str, key: str) -> list[tuple[int, float]]:
    """Mean of ``key`` over the runs at every step all of them logged."""
    per = [{h["step"]: h[key] for h in hist if h.get("event") == event and key in h} for hist in histories]
    steps = sorted(set.intersection(*(set(p) for p in per))) if per else []
    return [(s, sum(p[s] for p in per) / len(per)) for s in steps]


def plot_losses(results: dict[str, list[dict]], path: Path) -> Path:
    """Training loss (line: mean over seeds) and validation loss (markers) against step per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=110)
    ax = fig.add_subplot(111)
    for i, (name, runs) in enumerate(results.items()):
        hists = [r.get("history") or [] for r in runs]
        tr, va = _mean_curve(hists, "train", "loss"), _mean_curve(hists, "val", "val_loss")
        color = f"C{i}"
        n = len(runs)
        if tr:
            ax.plot(*zip(*tr), color=color, lw=1.2, alpha=0.85, label=f"{name} (train{', mean of %d seeds' % n if n > 1 else ''})")
        if va:
            ax.plot(*zip(*va), "o--", color=color, ms=4, lw=0.8, label=f"{name} (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_probes(probes: dict[str, dict], path: Path) -> Path:
    """Probe accuracy by layer per model: mean over seeds with its CI95 band; control dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=110)
    ax = fig.add_subplot(111)
    chance = None
    longest: list = []
    for i, (name, st) in enumerate(probes.items()):
        x = np.arange(len(st["layers"]))
        color = f"C{i}"
        mean = np.array([a["mean"] for a in st["accuracy"]])
        ax.plot(x, mean, "o-", color=color, ms=3.5, lw=1.6, label=name)
        if all(a["ci95"] is not None for a in st["accuracy"]):
            lo = np.array([a["lo"] for a in st["accuracy"]])
            hi = np.array([a["hi"] for a in st["accuracy"]])
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        ctl = [c["mean"] for c in st["control"]]
        if all(c is not None for c in ctl):
            ax.plot(x, ctl, "--", color=color, lw=1.0, alpha=0.7, label=f"{name} (control)")
        chance = st["chance"] if chance is None else chance
        if len(st["layers"]) > len(longest):
            longest = list(st["layers"])
    if chance is not None:
        ax.axhline(chance, color="grey", lw=1, ls=":", label=f"chance ({chance:.2f})")
    ax.set_xticks(range(len(longest)))
    ax.set_xticklabels(["sub" if n == "substrate" else str(n) for n in longest], fontsize=8)
    ax.set_xlabel("layer (sub = substrate rows; 0 = input to block 1; k = output of block k)", fontsize=8)
    ax.set_ylabel("probe accuracy (held-out entities)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Category probe by layer: mean over seeds, band = CI95", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return path


_VERDICT_CLASS = {"holds": "ok", "fails": "bad", "not shown": "mid"}
_CLAIMS = {
    "1": "Claim 1: frozen substrates learn the world",
    "2": "Claim 2: meaning emerges in the blocks",
    "3": "Claim 3: the docking port works",
}


def _findings_html(findings: list[dict], summary: str) -> str:
    parts = [f"<p><b>{html.escape(summary)}</b> (verdicts read off the CI95 of this run).</p>"]
    for claim, title in _CLAIMS.items():
        mine = [f for f in findings if str(f.get("claim")) == claim]
        if not mine:
            continue
        parts.append(f"<h3>{html.escape(title)}</h3><ul>")
        for f in mine:
            cls = _VERDICT_CLASS.get(f.get("verdict"), "mid")
            parts.append(f"<li class='finding'><span class='{cls}'>[{html.escape(str(f.get('verdict')))}]</span> "
                         f"{html.escape(f['sentence'])}</li>")
        parts.append("</ul>")
    return "".join(parts)


def _results_table(per_model: dict[str, dict], rows: list[dict]) -> str:
    head = ("<tr><th>model</th><th>substrate</th><th>trainable / total params</th><th>seeds</th><th>val loss</th>"
            "<th>val bpc</th><th>world MC, loglik %</th><th>world MC, paper %</th><th>valid letters, paper %</th>"
            "<th>world short, paper %</th>"
            "<th>world short, loglik greedy %</th><th>table unchanged</th></tr>")
    body = []
    for name, st in per_model.items():
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        r0 = mine[0]
        unchanged = ("trainable" if not r0["frozen"] else
                     '<span class="ok">yes</span>' if all(r["unchanged"] for r in mine) else '<span class="bad">NO</span>')
        body.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(r0['substrate_kind']))} x{r0['substrate_width']}</td>"
            f"<td>{r0['trainable_params'] / 1e6:.2f}M / {r0['total_params'] / 1e6:.2f}M</td><td>{len(mine)}</td>"
            f"<td>{_ci_cell(st['val_loss'])}</td><td>{_ci_cell(st['val_bpc'])}</td>"
            f"<td>{_ci_cell(st['mc_loglik'], pct=True)}</td><td>{_ci_cell(st['mc_paper'], pct=True)}</td>"
            f"<td>{_ci_cell(st['mc_paper_valid'], pct=True) if 'mc_paper_valid' in st else 'n/a'}</td>"
            f"<td>{_ci_cell(st['short_paper'], pct=True)}</td><td>{_ci_cell(st['short_loglik_greedy'], pct=True)}</td>"
            f"<td>{unchanged}</td></tr>"
        )
    return "<table>" + head + "".join(body) + "</table>"


def _seed_table(rows: list[dict]) -> str:
    head = ("<tr><th>model</th><th>seed</th><th>train loss (first &rarr; last)</th><th>val loss</th><th>val bpc</th>"
            "<th>MC loglik %</th><th>MC paper %</th><th>valid letters %</th><th>short paper %</th><th>train + eval s</th></tr>")
    body = [
        f"<tr><td>{html.escape(r['model'])}</td><td>{r['seed']}</td>"
        f"<td>{_fmt(r['train_loss_first'], 2)} &rarr; {_fmt(r['train_loss_last'], 2)}</td>"
        f"<td>{_fmt(r['val_loss'])}</td><td>{_fmt(r['val_bpc'])}</td><td>{_fmt(r['mc_loglik'], pct=True)}</td>"
        f"<td>{_fmt(r['mc_paper'], pct=True)}</td><td>{_fmt(r.get('mc_paper_valid'), pct=True)}</td>"
        f"<td>{_fmt(r['short_paper'], pct=True)}</td><td>{_fmt(r['seconds'], 0)}</td></tr>"
        for r in rows
    ]
    return "<table>" + head + "".join(body) + "</table>"


def _probe_layer_table(probes: dict[str, dict]) -> str:
    layers = max((st["layers"] for st in probes.values()), key=len, default=[])
    head = "<tr><th>model</th><th></th>" + "".join(f"<th>{html.escape(str(n))}</th>" for n in layers) + "</tr>"
    body = []
    for name, st in probes.items():
        for label, key in (("probe", "accuracy"), ("control", "control"), ("selectivity", "selectivity")):
            cells = "".join(f"<td>{_ci_cell(c, digits=2)}</td>" for c in st[key])
            body.append(f"<tr><td>{html.escape(name) if key == 'accuracy' else ''}</td><td>{label}</td>{cells}</tr>")
    chance = next(iter(probes.values()))["chance"] if probes else None
    return ("<table>" + head + "".join(body) + "</table>"
            + (f"<p class='muted'>chance (majority class) = {chance:.3f}; mean &plusmn; CI95 over seeds.</p>" if chance else ""))


def _docking_html(docking: dict) -> str:
    """Every sentence the docking experiment computed, and where its own files are."""
    items = "".join(f"<li class='finding'>{html.escape(str(f))}</li>" for f in docking.get("findings") or [])
    seeds = ", ".join(map(str, docking.get("seeds") or []))
    return (f"<p>Two experts trained on different halves of a small world (one shared frozen random-bits table), "
            f"composed by logit averaging; two trainable-table experts handed to <code>compose</code>; a model grown "
            f"block by block against a monolithic one at equal tokens. Seeds {html.escape(seeds)}; every number is in "
            f"<code>docking/docking.json</code>.</p><ul>{items}</ul>")


def write_demo_report(out: Path, settings, mode: str, seeds: list[int], results: dict[str, list[dict]], rows: list[dict],
                      stats: dict, analyses: dict[str, dict[int, dict]], generations: dict, docking: dict | None,
                      seconds: float) -> Path:
    """Write ``out/report.html`` (images embedded) and ``out/results.json``; returns the HTML path.

    ``results``: the cell results per model (one per seed); ``rows``: their flat per-seed figures;
    ``stats``: :func:`~substrate_lm.experiments.demo.compute_statistics`; ``docking``: the docking
    experiment's dict or None.
    """
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    loss_png = plot_losses(results, fig_dir / "loss_curves.png")
    probe_png = plot_probes(stats["probes"], fig_dir / "probe_by_layer.png") if stats["probes"] else None
    findings = list(stats["findings"]) + F.docking_findings(docking)
    s, m, t = settings.demo, settings.model.overrides, settings.train
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>substrate-lm demo report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Meaning beyond the token embeddings: the substrate-lm demo</h1>",
        f"<p class='muted'>substrate-lm {__version__} &middot; {mode} run &middot; "
        f"{seconds / 60:.1f} min on {html.escape(platform.processor() or platform.machine())} "
        f"({os.cpu_count()} CPUs) &middot; world {html.escape(s.world_size)} ({html.escape(','.join(s.langs))}, "
        f"{s.entities_per_cat} entities per category, {html.escape(s.tokenizer)} tokenizer) &middot; "
        f"d_model {m.get('d_model', settings.model.preset)}, {m.get('n_layer', settings.model.preset)} layers, {t.steps} steps of {t.batch_size} x {t.seq_len} tokens, {t.precision}, "
        f"seeds {', '.join(map(str, seeds))}</p>",
        "<h2>Findings</h2>",
        _findings_html(findings, F.summary_line(findings)),
        "<h2>How to read this report</h2>",
        READING_GUIDE,
        "<h2>1. Loss curves</h2>",
        _img(loss_png, "loss curves"),
        "<h2>2. Results (mean &plusmn; CI95 over seeds)</h2>",
        _results_table(stats["per_model"], rows),
        "<p class='muted'>loglik = option log-likelihood (the option text after the question); paper = the published "
        f"generation protocol (first letter / containment, sampled, {s.n_runs} run(s) per seed); world short, loglik "
        "greedy = share of answers that are the greedy continuation. 'table unchanged': every frozen table still "
        "matches the fingerprint recorded at init.</p>",
        "<h3>Per seed</h3>",
        _seed_table(rows),
        "<h2>3. Probe accuracy by layer</h2>",
    ]
    if probe_png:
        parts += [_img(probe_png, "probe accuracy by layer"), _probe_layer_table(stats["probes"])]
    cka_done = False
    for name, by_seed in analyses.items():
        if not by_seed:
            continue
        first = min(by_seed)
        plot = (by_seed[first].get("plots") or {}).get("cka_compare")
        adir = out / "analysis" / s.substrates[name] / f"seed{first}"
        if plot and (adir / plot).is_file():
            if not cka_done:
                parts.append("<h2>4. CKA against the trainable baseline</h2>")
                cka_done = True
            parts.append(f"<h3>{html.escape(name)}</h3>" + _img(adir / plot, f"CKA {name}"))
    parts.append("<h2>5. The docking port</h2>")
    parts.append(_docking_html(docking) if docking else
                 "<p class='muted'>Not run in this demo (the docking experiment is not available or was switched off).</p>")
    parts.append("<h2>6. Samples (greedy, first seed)</h2>")
    for name, gens in generations.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        for g in gens:
            parts.append(f"<pre><b>{html.escape(g['prompt'])}</b>{html.escape(g['continuation'])}</pre>")
    parts.append("<h2>Per-model analysis reports (first seed)</h2><ul>")
    for name, by_seed in analyses.items():
        if not by_seed:
            continue
        rel = f"analysis/{s.substrates[name]}/seed{min(by_seed)}/report.html"
        if (out / rel).is_file():
            parts.append(f"<li><a href='{rel}'>{html.escape(name)}</a></li>")
    parts.append("</ul></body></html>")

    html_path = atomic_write_text(out / "report.html", "\n".join(parts))
    summary = dict(
        version=__version__,
        mode=mode,
        seeds=seeds,
        settings=dataclasses.asdict(settings),
        rows=rows,
        statistics=stats["per_model"],
        probe={name: {"layers": st["layers"], "chance": st["chance"], "accuracy": st["accuracy"],
                      "control": st["control"], "selectivity": st["selectivity"], "per_seed": st["per_seed"]}
               for name, st in stats["probes"].items()},
        findings=findings,
        summary=F.summary_line(findings),
        docking=docking,
        generations=generations,
        seconds=seconds,
    )
    atomic_write_json(out / "results.json", summary, default=str)
    return html_path
