"""``substrate-lm analyze``: layer-wise emergent-semantics analysis of a model folder.

Examples::

    substrate-lm analyze --model runs/bits --world data/world --out out/analysis-bits
    substrate-lm analyze --model runs/bits --compare runs/trainable --world data/world --out out/cmp
    substrate-lm analyze --model gpt2-folder --out out/gpt2      # no --world: the seven word groups

Writes ``metrics.json``, PNG plots and a self-contained ``report.html`` into ``--out``.
"""

from __future__ import annotations

import argparse

from .common import add_runtime_args, nonneg_int, positive_int

MAP_NAMES = ("pca", "tsne")


def _folds(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"cross-validation needs at least 2 folds, got {value}")
    return value


def register(subparsers) -> None:
    """Add the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        "analyze",
        help="layer-wise probes, neighbours, CKA and maps of a model's representations",
        description=(
            "Probe where meaning appears inside a causal LM: pooled representations of entities (from a "
            "semantic world, --world) or of the papers' seven word groups (default) at every layer, with "
            "the substrate's own rows as the first layer; linear-probe accuracy (cross-validated with whole "
            "entities held out, plus a control task), nearest-neighbour purity, CKA between layers and "
            "against --compare, PCA/t-SNE maps. Writes metrics.json, PNG plots and report.html to --out. "
            "Reading the substrate layer: a frozen random table's rows carry no meaning, yet a probe on them "
            "is at chance only when the names of a category share no tokens that other categories' names lack "
            "(true by design for the world's invented names); real words of one category often share n-gram "
            "tokens (roots, suffixes), so even a random table can score above chance on them: compare with "
            "the control task and with the trainable baseline."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model folder (any HF causal LM, ours included)")
    p.add_argument("--compare", metavar="DIR", help="second model folder read on the same items (e.g. trainable baseline)")
    p.add_argument("--world", metavar="DIR", help="semantic world folder (world.json); default: the seven word groups")
    p.add_argument("--items", metavar="FILE", help="JSON-lines probe items {text,start,end,label,entity} instead")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--layers", default="all", help="hidden-state indices, e.g. 0,4,-1 (the substrate is always included)")
    p.add_argument("--lang", default="en", help="language of the world's probe sentences")
    p.add_argument("--max-items", type=nonneg_int, default=1200, help="cap on probe items (whole entities kept); 0 = all")
    p.add_argument("--per-entity", type=positive_int, default=4, help="sentences per entity drawn from the world")
    p.add_argument(
        "--probe-style",
        default="neutral",
        choices=["neutral", "train", "mixed"],
        help="world sentences: neutral carriers (no category cue before the name), training templates, or both",
    )
    p.add_argument("--k", type=positive_int, default=5, help="neighbours for nearest-neighbour purity")
    p.add_argument("--folds", type=_folds, default=5, help="cross-validation folds (grouped by entity)")
    p.add_argument("--no-control", action="store_true", help="skip the control task")
    p.add_argument("--maps", default="pca,tsne", help="2-D maps to draw: pca, tsne, both, or 'none'")
    p.add_argument("--debiased-cka", action="store_true", help="use the debiased (unbiased HSIC) linear CKA")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per forward pass")
    add_runtime_args(p)
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for sampling, folds, control labels and maps")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a foreign model folder's own Python code to run; our own folders never need it")
    p.add_argument("--quiet", action="store_true", help="print only the report path")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the analysis and print a per-layer summary; returns the exit code."""
    import sys
    from pathlib import Path

    from ..analysis import analyze, load_items_jsonl
    from ..analysis.analyze import load_model_and_tokenizer

    maps = parse_maps(args.maps)
    layers = preflight(args)
    items = load_items_jsonl(args.items) if args.items else None

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[analyze] {msg}", file=sys.stderr, flush=True)

    # the folders are loaded here, through the one safe loader (our classes for our folders, files
    # checked against the export manifest, a foreign folder's code only with --trust-remote-code),
    # and handed to analyze() as (model, tokenizer) pairs
    model = load_model_and_tokenizer(args.model, args.device, args.trust_remote_code)
    compare = load_model_and_tokenizer(args.compare, args.device, args.trust_remote_code) if args.compare else None
    m = analyze(
        model,
        name=Path(args.model).name or str(args.model),
        world_dir=args.world,
        compare=compare,
        compare_name=(Path(args.compare).name or str(args.compare)) if args.compare else None,
        out_dir=args.out,
        layers=layers,
        lang=args.lang,
        max_items=args.max_items or None,
        seed=args.seed,
        items=items,
        per_entity=args.per_entity,
        probe_style=args.probe_style,
        k=args.k,
        n_splits=args.folds,
        control=not args.no_control,
        maps=maps,
        batch_size=args.batch_size,
        device=args.device,
        cka_debiased=args.debiased_cka,
        num_threads=args.threads,
        progress=log,
    )
    if not args.quiet:
        _print_summary(m)
        if m.get("compare"):
            _print_summary(m["compare"])
    print(Path(args.out) / m["report"])
    return 0


def parse_maps(text: str) -> tuple[str, ...]:
    """``pca,tsne`` / ``both`` / ``none`` -> the map names; anything else is an error."""
    from ..errors import SubstrateError

    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    if text == "both":
        return MAP_NAMES
    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in names if m not in MAP_NAMES]
    if bad:
        raise SubstrateError(f"--maps {bad[0]!r} is not a map; use pca, tsne, both or none")
    return names


def _hidden_layers(model_dir: str) -> int | None:
    """Number of blocks from a local model folder's config.json, or None when unknown."""
    import json
    import os

    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        return None
    for key in ("n_layer", "num_hidden_layers", "n_layers", "num_layers"):
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            return int(cfg[key])
    return None


def parse_layers(text: str, n_blocks: int | None):
    """``all`` or comma-separated hidden-state indices (negative from the end), checked against the model."""
    from ..errors import SubstrateError

    text = str(text).strip()
    if text.lower() in ("", "all"):
        return "all"
    try:
        idx = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SubstrateError(f"--layers {text!r} is not 'all' or a comma list of integers like 0,4,-1") from None
    if not idx:
        raise SubstrateError(f"--layers {text!r} names no layer; pass 'all' or e.g. 0,4,-1")
    if n_blocks is not None:
        n_states = n_blocks + 1  # hidden states 0 (embeddings) .. n_blocks
        bad = [i for i in idx if not -n_states <= i < n_states]
        if bad:
            raise SubstrateError(f"--layers {bad[0]} is out of range: the model has hidden states 0..{n_blocks} "
                                 f"(or -{n_states}..-1)")
    return text


def preflight(args):
    """Check every input before any model is loaded; returns the layers spec."""
    from ..errors import SubstrateError
    from .common import check_input_file, check_model_folder, check_output_dir, is_local_path, resolve_device

    check_model_folder(args.model, "--model")
    if args.compare:
        check_model_folder(args.compare, "--compare")
    check_output_dir(args.out, overwrite=True)
    if args.items:
        check_input_file(args.items, "--items file")
    elif args.world:
        from ..world import load_world

        world = load_world(args.world)
        langs = world.get("langs") or []
        if args.lang not in langs:
            raise SubstrateError(f"the world in {args.world} has no language {args.lang!r} (it has "
                                 f"{', '.join(langs)}); pass --lang {langs[0] if langs else 'en'}")
    args.device = resolve_device(args.device)  # auto -> cuda or cpu; threads: analyze() sets and restores them
    blocks = _hidden_layers(args.model) if is_local_path(args.model) else None
    return parse_layers(args.layers, blocks)


def _print_summary(m: dict) -> None:
    probe, pur = m["probe"], m["purity"]
    print(
        f"{m['model']['name']}: {probe['n']} items, {probe['n_classes']} classes, "
        f"chance {probe['chance_majority']:.3f} (probe), {pur['chance']:.3f} (purity@{pur['k']})"
    )
    print(f"{'layer':>10} {'probe':>7} {'control':>8} {'purity':>7} {'CKA-sub':>8}")
    cka = m.get("cka_substrate") or [None] * len(m["layers"])
    ctrl = probe.get("control_accuracy") or [None] * len(m["layers"])
    for i, name in enumerate(m["layers"]):
        c = "" if ctrl[i] is None else f"{ctrl[i]:.3f}"
        k = "" if cka[i] is None else f"{cka[i]:.3f}"
        print(f"{name:>10} {probe['accuracy'][i]:7.3f} {c:>8} {pur['purity'][i]:7.3f} {k:>8}")
