"""One self-contained HTML report of a layer-wise analysis.

Plots are written as PNG files next to the report **and** embedded as base64 data URIs, so the
HTML works alone (mail it, open it from an archive) while the PNGs stay usable on their own; every
embedded image also links to its file. :func:`render_fragment` returns the report body without
``<html>``/``<head>`` so the demo report can include the analysis of several models.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from ..fsutil import atomic_write_text

# Styles of the report; the demo includes them too when it embeds :func:`render_fragment`.
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table.sl-metrics{border-collapse:collapse;font-size:.88em;margin:.6em 0}
table.sl-metrics th,table.sl-metrics td{border:1px solid #ccc;padding:.2em .55em;text-align:right}
table.sl-metrics th{background:#f3f3f3}table.sl-metrics td:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.sl-note{font-size:.88em;color:#444;background:#fafafa;border-left:3px solid #bbb;padding:.4em .8em}
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def image_tag(png: Path, rel: str, caption: str) -> str:
    """A ``<figure>`` with the PNG embedded as a data URI and linked by its relative path."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    cap = html.escape(caption)
    ref = html.escape(rel)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{cap}" data-file="{ref}">'
        f'<figcaption>{cap} (<a href="{ref}">{ref}</a>)</figcaption></figure>'
    )


def _layer_table(m: dict) -> str:
    layers = m["layers"]
    probe, purity = m.get("probe", {}), m.get("purity", {})
    cka_sub = m.get("cka_substrate")
    head = ["layer", "probe acc", "&plusmn; std", "control acc", "selectivity", f"NN purity@{purity.get('k', '?')}"]
    if cka_sub is not None:
        head.append("CKA vs substrate")
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for i, name in enumerate(layers):
        cells = [
            "substrate (input table)" if name == "substrate" else f"hidden {name}",
            _fmt(probe.get("accuracy", [None] * len(layers))[i]),
            _fmt(probe.get("std", [None] * len(layers))[i]),
            _fmt((probe.get("control_accuracy") or [None] * len(layers))[i]),
            _fmt((probe.get("selectivity") or [None] * len(layers))[i]),
            _fmt(purity.get("purity", [None] * len(layers))[i]),
        ]
        if cka_sub is not None:
            cells.append(_fmt(cka_sub[i]))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    chance = [
        "chance",
        _fmt(probe.get("chance_majority")),
        "",
        _fmt(probe.get("chance_majority")),
        "0",
        _fmt(purity.get("chance")),
    ]
    if cka_sub is not None:
        chance.append("")
    rows.append("<tr><td><i>" + "</i></td><td><i>".join(chance) + "</i></td></tr>")
    return '<table class="sl-metrics">' + "".join(rows) + "</table>"


def _model_line(m: dict) -> str:
    info = m.get("model", {})
    parts = [f"<b>{html.escape(str(info.get('name', 'model')))}</b>"]
    for key, label in (
        ("model_class", "class"),
        ("n_layer", "layers"),
        ("hidden_size", "width"),
        ("substrate_width", "substrate width"),
        ("substrate_kind", "substrate kind"),
        ("substrate_frozen", "frozen"),
    ):
        if info.get(key) is not None:
            parts.append(f"{label} {html.escape(str(info[key]))}")
    return ", ".join(parts)


def _plot(m: dict, key: str, out_dir: Path, caption: str) -> str:
    rel = m.get("plots", {}).get(key)
    if not rel or not (out_dir / rel).is_file():
        return ""
    return image_tag(out_dir / rel, rel, caption)


def render_fragment(metrics: dict, out_dir: str | Path, heading_level: int = 2) -> str:
    """The report body for one analysis (no ``<html>`` wrapper), images embedded.

    Args:
        metrics: the dict returned by :func:`substrate_lm.analysis.analyze`.
        out_dir: the folder the plot paths in ``metrics["plots"]`` are relative to.
        heading_level: level of the section headings (the demo nests this under its own).
    """
    out_dir = Path(out_dir)
    h = f"h{heading_level}"
    m = metrics
    items = m.get("items", {})
    probe = m.get("probe", {})
    parts = [
        f"<p>{_model_line(m)}</p>",
        f"<p>{items.get('n', '?')} items ({html.escape(str(items.get('source', '?')))}"
        + (f", {html.escape(str(items['style']))} sentences" if items.get("style") else "")
        + ", "
        f"language {html.escape(str(items.get('lang', '?')))}), {items.get('n_entities', '?')} entities, "
        f"{probe.get('n_classes', '?')} classes: {html.escape(', '.join(probe.get('classes', [])))}.</p>",
        f"<{h}>Per-layer metrics</{h}>",
        _layer_table(m),
        f'<p class="sl-note">{html.escape(probe.get("cv", ""))}. Chance = majority-class share '
        f"({_fmt(probe.get('chance_majority'))}; 1/classes = {_fmt(probe.get('chance_uniform'))}). "
        "Entities are never shared between training and test folds, so a probe cannot memorise "
        "entity identities: on a random-code substrate the substrate row therefore sits at chance, "
        "and accuracy above chance in later layers is structure the blocks built. Control task "
        "(Hewitt &amp; Liang): the entity-to-label map is randomly permuted; selectivity = accuracy "
        "minus control accuracy. Nearest-neighbour purity uses cosine similarity and ignores "
        "neighbours of the same entity.</p>",
        _plot(m, "probe", out_dir, "Linear-probe accuracy of category by layer (dashed: control task)"),
        _plot(m, "purity", out_dir, "Nearest-neighbour purity by layer"),
        _plot(m, "cka_substrate", out_dir, "Linear CKA between every pair of layers (including the substrate)"),
    ]
    for key, cap in (("map_pca", "PCA maps by layer"), ("map_tsne", "t-SNE maps by layer")):
        parts.append(_plot(m, key, out_dir, cap + " (one point per entity, colour = category)"))
    cmp = m.get("compare")
    if cmp:
        parts.append(f"<{h}>Comparison with {html.escape(str(cmp.get('model', {}).get('name', 'model B')))}</{h}>")
        parts.append(_layer_table(cmp))
        parts.append(_plot(m, "probe_compare", out_dir, "Probe accuracy by layer, both models"))
        parts.append(_plot(m, "cka_compare", out_dir, "Linear CKA between the layers of the two models"))
    parts.append(
        f'<p class="sl-note">Analysis took {_fmt(m.get("seconds"), 1)} s; metrics in '
        f'<a href="metrics.json">metrics.json</a>. Layer names: "substrate" = pooled input-table rows of the '
        "span's tokens; 0 = hidden state entering block 1; the last = after the final norm.</p>"
    )
    return "\n".join(p for p in parts if p)


def write_report(metrics: dict, out_dir: str | Path, filename: str = "report.html", title: str | None = None) -> Path:
    """Write the standalone HTML report into ``out_dir`` (atomically) and return its path."""
    out_dir = Path(out_dir)
    name = metrics.get("model", {}).get("name", "model")
    title = title or f"Layer-wise analysis: {name}"
    doc = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n{render_fragment(metrics, out_dir)}\n</body></html>\n"
    )
    return atomic_write_text(out_dir / filename, doc)
