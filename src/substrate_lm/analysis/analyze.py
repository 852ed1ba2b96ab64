"""``analyze``: the whole layer-wise analysis of one model (optionally against a second one).

Pipeline: probe items (a semantic world's entity sentences, the seven word groups, or a given
list) -> pooled representations per layer (substrate rows first) -> linear probes with an
entity-grouped CV and a control task, nearest-neighbour purity, CKA between all layers (so also
each layer against the substrate) -> PNG plots, ``metrics.json`` and one self-contained
``report.html`` in ``out_dir``. With ``compare`` the second model reads the same items and gets
the same metrics plus a CKA matrix between the two models' layers.

Used by ``substrate-lm analyze`` and, in-process, by the demo.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SubstrateError
from ..fsutil import atomic_write_json
from ..loading import load_model_and_tokenizer as _load
from ._io import _clean, torch_threads
from .cka import cka_matrix
from .extract import SUBSTRATE, Representations, extract_representations
from .items import normalize_items, subsample_items, world_items
from .maps import group_means, pick_layers, plot_maps
from .neighbors import purity_layers
from .plots import plot_cka_heatmap, plot_layer_curves, plot_probe_curves
from .probes import probe_layers
from .report import write_report
from .wordgroups import word_group_items

METRICS_VERSION = 1


def load_model_and_tokenizer(path, device=None, trust_remote_code: bool = False):
    """Load an HF causal LM folder and its tokenizer through :mod:`substrate_lm.loading`.

    Our own folders load with our classes (weight hashes and the table's fingerprint checked); a
    foreign folder's own code runs only with ``trust_remote_code``.

    Args:
        path: a local model folder (``save_pretrained`` layout).
        device: target device; default CUDA when available, else CPU (float32 on CPU).

    Raises:
        SubstrateError: when the folder is missing, damaged or needs code it may not run.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if str(device).startswith("cpu") else None
    model, tokenizer = _load(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code, allow_hub=True)
    return model.eval(), tokenizer


def _model_name(model, given: str | None, path=None) -> str:
    if given:
        return given
    if path is not None:
        return Path(path).name
    name = getattr(getattr(model, "config", None), "name_or_path", None)
    return Path(name).name if name else type(model).__name__


def _resolve(model_or_dir, tokenizer, device, name, trust_remote_code: bool = False):
    """(model, tokenizer, name) from a folder path or an in-memory model + tokenizer."""
    if isinstance(model_or_dir, (str, Path)):
        model, tok = load_model_and_tokenizer(model_or_dir, device, trust_remote_code=trust_remote_code)
        return model, tokenizer or tok, _model_name(model, name, model_or_dir)
    if isinstance(model_or_dir, tuple) and len(model_or_dir) == 2:
        model_or_dir, tokenizer = model_or_dir
    if tokenizer is None:
        raise SubstrateError("an in-memory model needs its tokenizer: pass tokenizer=... (or a model folder)")
    if device is not None:
        model_or_dir = model_or_dir.to(device)
    return model_or_dir, tokenizer, _model_name(model_or_dir, name)


def _model_info(model, reps: Representations, name: str) -> dict:
    info = {"name": name}
    info.update(reps.meta)
    try:
        info["parameters"] = int(sum(p.numel() for p in model.parameters()))
    except Exception:  # pragma: no cover
        pass
    return info


def _layer_metrics(reps: Representations, labels, groups, k, n_splits, seed, control, log) -> dict:
    log(f"probing {len(reps.names)} layers")
    probe = probe_layers(reps.arrays, labels, groups, n_splits=n_splits, seed=seed, control=control)
    log("nearest-neighbour purity")
    purity = purity_layers(reps.arrays, labels, k=k, groups=groups)
    return {"layers": list(reps.names), "probe": probe, "purity": purity}


def _subsample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def _source_items(items, world_dir, lang, per_entity, seed, style) -> tuple[list[dict], str]:
    if items is not None:
        return normalize_items(items), "items"
    if world_dir is not None:
        return world_items(world_dir, lang=lang, per_entity=per_entity, seed=seed, style=style), "world"
    return normalize_items(word_group_items(lang=lang)), "wordgroups"


def analyze(
    model_or_dir,
    tokenizer=None,
    world_dir=None,
    compare=None,
    out_dir="analysis",
    layers="all",
    lang: str = "en",
    max_items: int | None = 1200,
    seed: int = 0,
    *,
    items: list[dict] | None = None,
    per_entity: int = 4,
    probe_style: str | None = "neutral",
    k: int = 5,
    n_splits: int = 5,
    control: bool = True,
    maps=("pca", "tsne"),
    batch_size: int = 16,
    device=None,
    name: str | None = None,
    compare_tokenizer=None,
    compare_name: str | None = None,
    cka_debiased: bool = False,
    max_cka_items: int = 2000,
    report: bool = True,
    trust_remote_code: bool = False,
    num_threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the layer-wise analysis and write metrics, plots and the HTML report.

    Args:
        model_or_dir: a model folder, an in-memory HF causal LM, or ``(model, tokenizer)``.
        tokenizer: the fast tokenizer of an in-memory model.
        world_dir: a generated semantic world; items come from ``substrate_lm.world.probe_items``
            and labels are entity categories. ``None`` (and no ``items``): the seven word groups.
        compare: a second model (folder, model or ``(model, tokenizer)``) read on the same items.
        out_dir: output folder (created).
        layers: hidden-state indices to analyse, ``"all"`` or e.g. ``"0,4,8"`` / ``[0, -1]``; the
            substrate rows are always included.
        lang: language of the world items.
        max_items: cap on items (whole entities kept, classes balanced); ``None`` for all.
        seed: seed for item sampling, folds, control labels and maps.
        items: explicit probe items (overrides ``world_dir``).
        per_entity: sentences per entity drawn from the world.
        probe_style: the world's sentence style: ``"neutral"`` (no category cue in the context,
            the default), ``"train"`` (training templates), ``"mixed"``; see
            :func:`~substrate_lm.analysis.items.world_items`.
        k: neighbours for purity.
        n_splits: cross-validation folds (grouped by entity).
        control: run the control task.
        maps: any of ``"pca"``, ``"tsne"`` (empty: no maps).
        batch_size: sequences per forward pass.
        device: run device (default: the model's, or CUDA/CPU when loading a folder).
        trust_remote_code: let a foreign model folder's own code run (our folders never need it).
        name, compare_name: display names (default: folder names).
        compare_tokenizer: tokenizer of an in-memory ``compare`` model (default ``tokenizer``).
        cka_debiased: use debiased linear CKA.
        max_cka_items: CKA uses at most this many items (random subset), Gram matrices are N x N.
        report: write plots and ``report.html`` (``metrics.json`` is always written).
        num_threads: torch intra-op threads during the analysis (restored afterwards); ``None``
            leaves torch's setting alone. 1 is much faster on a CPU shared with other jobs.
        progress: called with a short message at each stage.

    Returns:
        The metrics dict (also in ``out_dir/metrics.json``): ``layers`` (``"substrate"``, ``"0"``
        .. ``"n_layer"``), ``probe`` (per-layer ``accuracy``, ``std``, ``control_accuracy``,
        ``selectivity``; ``chance_majority``, ``chance_uniform``), ``purity``, ``cka_layers``
        (all-pairs matrix), ``cka_substrate`` (each layer vs the substrate), ``model``, ``items``,
        ``compare`` (same keys for model B plus ``cka`` A x B), ``plots`` (PNG paths relative to
        ``out_dir``), ``report`` (HTML path relative to ``out_dir``) and ``seconds``.
    """
    with torch_threads(num_threads):
        return _analyze(
            model_or_dir, tokenizer, world_dir, compare, out_dir, layers, lang, max_items, seed, items, per_entity,
            probe_style, k, n_splits, control, maps, batch_size, device, name, compare_tokenizer, compare_name,
            cka_debiased, max_cka_items, report, progress, trust_remote_code,
        )


def _analyze(
    model_or_dir, tokenizer, world_dir, compare, out_dir, layers, lang, max_items, seed, items, per_entity,
    probe_style, k, n_splits, control, maps, batch_size, device, name, compare_tokenizer, compare_name,
    cka_debiased, max_cka_items, report, progress, trust_remote_code=False,
) -> dict:
    t0 = time.perf_counter()
    log = progress or (lambda msg: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    maps = tuple(maps or ())
    for method in maps:
        if method not in ("pca", "tsne"):
            raise SubstrateError(f"unknown map {method!r}; choose from pca, tsne")

    model, tok, mname = _resolve(model_or_dir, tokenizer, device, name, trust_remote_code)
    all_items, source = _source_items(items, world_dir, lang, per_entity, seed, probe_style)
    sel = subsample_items(all_items, max_items, seed)
    log(f"{len(sel)} probe items from {source}")

    timing = {}
    t = time.perf_counter()
    log(f"extracting representations of {mname}")
    reps = extract_representations(model, tok, sel, layers=layers, batch_size=batch_size, device=device)
    timing["extract"] = time.perf_counter() - t
    valid = reps.valid.copy()

    reps_b = None
    if compare is not None:
        # a compare folder brings its own tokenizer; an in-memory compare model defaults to A's
        tok_for_b = compare_tokenizer
        if tok_for_b is None and not isinstance(compare, (str, Path)):
            tok_for_b = tokenizer
        model_b, tok_b, bname = _resolve(compare, tok_for_b, device, compare_name, trust_remote_code)
        t = time.perf_counter()
        log(f"extracting representations of {bname}")
        reps_b = extract_representations(model_b, tok_b, sel, layers=layers, batch_size=batch_size, device=device)
        timing["extract_compare"] = time.perf_counter() - t
        valid &= reps_b.valid

    if valid.mean() < 0.5:
        raise SubstrateError(
            f"only {int(valid.sum())} of {len(valid)} items had tokens inside their span; the tokenizer's "
            "offsets mapping looks broken (a fast tokenizer with correct offsets is needed)"
        )
    if not valid.all():
        sel = [it for it, v in zip(sel, valid) if v]
        reps = reps.subset(valid)
        reps_b = reps_b.subset(valid) if reps_b is not None else None
    labels = [it["label"] for it in sel]
    groups = [it["entity"] for it in sel]

    t = time.perf_counter()
    metrics: dict = {"version": METRICS_VERSION}
    metrics.update(_layer_metrics(reps, labels, groups, k, n_splits, seed, control, log))
    metrics["model"] = _model_info(model, reps, mname)
    metrics["items"] = {
        "source": source,
        "lang": lang if source == "world" else ("en" if source == "wordgroups" else None),
        "n": len(sel),
        "n_total": len(all_items),
        "n_dropped_no_tokens": int((~valid).sum()),
        "n_entities": len(set(groups)),
        "classes": sorted(set(labels)),
        "world_dir": str(world_dir) if world_dir is not None and items is None else None,
        "style": probe_style if source == "world" else None,
        "mean_tokens_per_span": float(reps.n_tokens.mean()),
    }
    timing["probe_purity"] = time.perf_counter() - t

    t = time.perf_counter()
    log("CKA between layers")
    rows = _subsample_rows(len(sel), max_cka_items, seed)
    cka_aa = cka_matrix([a[rows] for a in reps.arrays], debiased=cka_debiased)
    metrics["cka_layers"] = cka_aa.tolist()
    metrics["cka_substrate"] = cka_aa[0].tolist() if reps.names[0] == SUBSTRATE else None
    metrics["cka"] = {"kernel": "linear", "debiased": cka_debiased, "n": int(len(rows))}
    if reps_b is not None:
        timing["cka"] = time.perf_counter() - t
        t = time.perf_counter()
        mb = _layer_metrics(reps_b, labels, groups, k, n_splits, seed, control, log)
        mb["model"] = _model_info(model_b, reps_b, bname)
        timing["probe_purity_compare"] = time.perf_counter() - t
        t = time.perf_counter()
        cka_bb = cka_matrix([a[rows] for a in reps_b.arrays], debiased=cka_debiased)
        mb["cka_substrate"] = cka_bb[0].tolist() if reps_b.names[0] == SUBSTRATE else None
        mb["cka"] = cka_matrix(
            [a[rows] for a in reps.arrays], [a[rows] for a in reps_b.arrays], debiased=cka_debiased
        ).tolist()  # [layers of A, layers of B]
        metrics["compare"] = mb
    timing["cka"] = timing.get("cka", 0.0) + time.perf_counter() - t

    metrics["plots"] = {}
    if report:
        t = time.perf_counter()
        log("plots")
        metrics["plots"] = _make_plots(metrics, reps, labels, groups, out_dir, maps, seed, source)
        timing["plots"] = time.perf_counter() - t
    metrics["timing"] = timing
    metrics["seconds"] = time.perf_counter() - t0
    metrics["report"] = "report.html" if report else None
    atomic_write_json(out_dir / "metrics.json", _clean(metrics))
    if report:
        write_report(metrics, out_dir)
    log(f"analysis of {mname} done in {metrics['seconds']:.1f} s")
    return metrics


def _make_plots(metrics, reps, labels, groups, out_dir: Path, maps, seed, source, max_map_points=400) -> dict:
    plots = {}
    mname = metrics["model"]["name"]
    layers = metrics["layers"]
    probe = metrics["probe"]
    series = {f"{mname}": (layers, probe["accuracy"])}
    dashed = []
    if "control_accuracy" in probe:
        series[f"{mname} (control)"] = (layers, probe["control_accuracy"])
        dashed.append(f"{mname} (control)")
    plot_layer_curves(
        series,
        out_dir / "probe_accuracy.png",
        "probe accuracy (held-out entities)",
        chance=probe["chance_majority"],
        title="Linear probe of category by layer",
        dashed=dashed,
    )
    plots["probe"] = "probe_accuracy.png"
    pur = {mname: (layers, metrics["purity"]["purity"])}
    if "compare" in metrics:
        cmp = metrics["compare"]
        pur[cmp["model"]["name"]] = (cmp["layers"], cmp["purity"]["purity"])
    plot_layer_curves(
        pur,
        out_dir / "purity.png",
        f"k-NN purity (k={metrics['purity']['k']})",
        chance=metrics["purity"]["chance"],
        title="Nearest-neighbour purity by layer",
    )
    plots["purity"] = "purity.png"
    plot_cka_heatmap(
        np.asarray(metrics["cka_layers"]),
        layers,
        layers,
        out_dir / "cka_layers.png",
        row_label=f"{mname} layer",
        col_label=f"{mname} layer",
        title="CKA between layers (row/column 'sub' = the substrate)",
    )
    plots["cka_substrate"] = "cka_layers.png"
    # maps: one point per entity (at most max_map_points entities, a seeded subset), on up to six
    # layers spread over the depth for PCA and four for t-SNE (t-SNE costs seconds per panel)
    ents = sorted(set(groups))
    if len(ents) > max_map_points:
        keep_ents = set(np.random.default_rng(seed).choice(ents, size=max_map_points, replace=False).tolist())
        rows = np.array([g in keep_ents for g in groups])
    else:
        rows = np.ones(len(groups), dtype=bool)
    g_rows = [g for g, r in zip(groups, rows) if r]
    l_rows = [lab for lab, r in zip(labels, rows) if r]
    for method in maps:
        picks = pick_layers(reps.names, 6 if method == "pca" else 4)
        means, names_, cats = [], [], []
        for li in picks:
            m, names_, cats = group_means(reps.arrays[li][rows], g_rows, l_rows)
            means.append(m)
        fname = f"map_{method}.png"
        plot_maps(
            means,
            [reps.names[i] for i in picks],
            cats,
            out_dir / fname,
            method=method,
            seed=seed,
            point_names=names_ if source == "wordgroups" else None,
            title=f"{method.upper()} of {mname} by layer (one point per entity, colour = category)",
        )
        plots[f"map_{method}"] = fname
    if "compare" in metrics:
        cmp = metrics["compare"]
        plot_probe_curves({mname: metrics, cmp["model"]["name"]: cmp}, out_dir / "probe_compare.png")
        plots["probe_compare"] = "probe_compare.png"
        plot_cka_heatmap(
            np.asarray(cmp["cka"]),
            layers,
            cmp["layers"],
            out_dir / "cka_compare.png",
            row_label=f"{mname} layer",
            col_label=f"{cmp['model']['name']} layer",
            title="CKA between the two models' layers",
        )
        plots["cka_compare"] = "cka_compare.png"
    return plots
