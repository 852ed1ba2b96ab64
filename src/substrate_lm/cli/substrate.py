"""``substrate-lm substrate``: build, verify, show and dump frozen substrate tables.

    substrate-lm substrate build --kind bits --tokenizer DIR --width 1024 --paper --out bits.safetensors
    substrate-lm substrate verify bits.safetensors          # or a model directory
    substrate-lm substrate show A --tokenizer DIR --substrate glyph.safetensors --png a.png
    substrate-lm substrate dump bits.safetensors --out embeddings.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import SubstrateError
from .common import check_output_file, nonneg_int, positive_float, positive_int

#: The registry's :data:`~substrate_lm.substrates.registry.KINDS`, spelled out so that ``--help`` does not
#: import torch (the registry does); tests/substrates/test_substrates_registry.py checks they agree.
KIND_CHOICES = ("bits", "token-id", "float", "glyph", "trainable")


def register(subparsers) -> None:
    """Add ``substrate`` with its ``build``, ``verify``, ``show`` and ``dump`` subcommands."""
    p = subparsers.add_parser("substrate", help="build, verify, show and dump frozen embedding substrates")
    sub = p.add_subparsers(dest="substrate_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    b = sub.add_parser("build", help="build a substrate table and save it as safetensors")
    b.add_argument("--kind", required=True, help=f"one of {', '.join(KIND_CHOICES)} (aliases: uni-glyph = glyph, unfrozen = trainable)")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (or hub id) giving the vocabulary")
    src.add_argument("--vocab-size", type=positive_int, metavar="N", help="vocabulary size (not for --kind glyph)")
    b.add_argument("--width", type=positive_int, required=True, help="columns of the table (the model's n_embed)")
    b.add_argument("--seed", type=nonneg_int, default=0, help="random seed (bits, float, trainable); default 0")
    b.add_argument("--font", metavar="PATH", help="GNU Unifont .otf/.ttf/.hex for --kind glyph (default: Debian paths)")
    b.add_argument("--tile-period", type=positive_int, metavar="P", help="bits: tile a P-bit code to the width")
    b.add_argument("--paper", action="store_true", help="use the published options (1024-bit: --tile-period 512)")
    b.add_argument("--bit-order", choices=("msb", "lsb"), help="token-id: bit order (default msb first)")
    b.add_argument("--source-width", type=positive_int, metavar="N", help="float: width of the random codes before PCA")
    b.add_argument("--std", type=positive_float, help="trainable: init standard deviation (default 0.02)")
    b.add_argument("--augment", help="glyph: augmentation preset (bvv241-2-3, bvv241-max, none)")
    b.add_argument("--cell", type=positive_int, help="glyph: cell and font size in px (default 32)")
    b.add_argument("--layout", choices=("basic", "raqm"), help="glyph: PIL layout engine (default basic)")
    b.add_argument("--out", required=True, metavar="FILE", help="output .safetensors file")
    b.add_argument("--dump-txt", metavar="PATH", help="also write the embeddings.txt dump")
    b.add_argument("--force", action="store_true", help="overwrite --out / --dump-txt if they exist")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="check a substrate file or a model directory (shape, binary, distinct, norms, fingerprint)")
    v.add_argument("path", metavar="FILE|MODEL_DIR")
    v.add_argument("--kind", help="check against this kind instead of the recorded one")
    v.add_argument("--fingerprint", help="expected fingerprint (overrides the recorded one)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_verify)

    s = sub.add_parser("show", help="show a token's glyph (ASCII or PNG), its row and its nearest rows")
    s.add_argument("token", metavar="TOKEN", help="a vocabulary string (or an id with --id)")
    s.add_argument("--id", action="store_true", help="TOKEN is a token id")
    s.add_argument("--tokenizer", metavar="DIR", help="tokenizer giving the vocabulary (default: the model dir's)")
    table = s.add_mutually_exclusive_group()
    table.add_argument("--substrate", metavar="FILE", help="substrate .safetensors file")
    table.add_argument("--model", metavar="DIR", help="model directory (config.json + model.safetensors)")
    s.add_argument("--font", metavar="PATH", help="GNU Unifont file for the glyph picture")
    s.add_argument("--png", metavar="PATH", help="also write the glyph as a PNG (scaled up)")
    s.add_argument("--top", type=nonneg_int, default=8, help="nearest rows to list (default 8)")
    s.add_argument("--values", type=nonneg_int, default=32, help="row values to print (default 32; 0 = all)")
    s.set_defaults(func=cmd_show)

    d = sub.add_parser("dump", help="write a table as the published embeddings.txt (id line, then the row list)")
    d.add_argument("path", metavar="FILE|MODEL_DIR")
    d.add_argument("--out", required=True, metavar="PATH")
    d.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    d.set_defaults(func=cmd_dump)


# ---------------------------------------------------------------------------------- helpers


def load_vocab(tokenizer: str) -> list[str]:
    """Id-ordered vocabulary strings of a tokenizer directory or hub id (no code from the folder runs)."""
    from ..loading import load_tokenizer
    from ..tokenizer import vocab_strings

    return list(vocab_strings(load_tokenizer(tokenizer)))


def _refuse_overwrite(path: str | None, force: bool) -> None:
    if path and Path(path).exists() and not force:
        raise SubstrateError(f"{path} exists; pass --force to overwrite it or choose another path")


def _build_options(args) -> dict:
    from ..substrates import normalize_kind, paper_options

    kind = normalize_kind(args.kind)
    opts = paper_options(kind, args.width) if args.paper else {}
    flags = {
        "tile_period": ("bits", args.tile_period),
        "bit_order": ("token-id", args.bit_order),
        "source_width": ("float", args.source_width),
        "std": ("trainable", args.std),
        "augment": ("glyph", args.augment),
        "cell": ("glyph", args.cell),
        "layout": ("glyph", args.layout),
    }
    for name, (owner, value) in flags.items():
        if value is None:
            continue
        if owner != kind:
            raise SubstrateError(f"--{name.replace('_', '-')} applies to --kind {owner}, not {kind}")
        opts[name] = value
    if args.font and kind != "glyph":
        raise SubstrateError(f"--font applies to --kind glyph, not {kind}")
    return opts


# --------------------------------------------------------------------------------- commands


def cmd_build(args) -> int:
    import time

    from ..substrates import build_substrate, save_substrate, verify_substrate, write_embeddings_txt

    check_output_file(args.out)
    if args.dump_txt:
        check_output_file(args.dump_txt, "--dump-txt")
    _refuse_overwrite(args.out, args.force)
    _refuse_overwrite(args.dump_txt, args.force)
    opts = _build_options(args)
    vocab = load_vocab(args.tokenizer) if args.tokenizer else args.vocab_size
    t0 = time.perf_counter()
    sub = build_substrate(args.kind, vocab, args.width, seed=args.seed, font=args.font, **opts)
    seconds = time.perf_counter() - t0
    save_substrate(sub, args.out)
    if args.dump_txt:
        write_embeddings_txt(sub, args.dump_txt)
    report = verify_substrate(sub)
    print(f"built {sub.kind} substrate {tuple(sub.table.shape)} in {seconds:.1f}s -> {args.out}")
    print(f"fingerprint: {sub.fingerprint}")
    for key in ("tile_period", "bit_order", "source_width", "font_version", "font_sha256", "augment"):
        if sub.meta.get(key) is not None:
            print(f"{key}: {sub.meta[key]}")
    if args.dump_txt:
        print(f"embeddings.txt -> {args.dump_txt}")
    print("verify: " + ("OK" if report["ok"] else "FAILED: " + "; ".join(report["problems"])))
    return 0 if report["ok"] else 1


def cmd_verify(args) -> int:
    from ..substrates import format_report, normalize_kind, verify_substrate

    if args.kind is not None:
        normalize_kind(args.kind)  # an unknown kind is an error, not a failed check
    if not Path(args.path).exists():
        raise SubstrateError(f"{args.path} does not exist; pass a substrate .safetensors file or a model directory")
    report = verify_substrate(args.path, kind=args.kind, expected_fingerprint=args.fingerprint)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    return 0 if report["ok"] else 1


def _ascii_glyph(image) -> str:
    return "\n".join("".join("#" if v else "." for v in row) for row in image)


def cmd_show(args) -> int:
    import numpy as np

    from ..substrates.io import read_table

    if args.png:
        check_output_file(args.png, "--png")
        if Path(args.png).suffix.lower() != ".png":
            raise SubstrateError(f"--png {args.png} must name a .png file, e.g. glyph.png")
    tok_source = args.tokenizer
    if tok_source is None and args.model and any(
        (Path(args.model) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    ):
        tok_source = args.model
    vocab = load_vocab(tok_source) if tok_source else None

    # which id, which string
    if args.id:
        try:
            tid = int(args.token)
        except ValueError:
            raise SubstrateError(f"--id needs an integer token id, got {args.token!r}") from None
        text = vocab[tid] if vocab is not None and 0 <= tid < len(vocab) else None
    elif vocab is not None:
        index = {t: i for i, t in enumerate(vocab)}
        if args.token not in index:
            raise SubstrateError(f"{args.token!r} is not a vocabulary string of {tok_source}; pass --id for an id")
        tid, text = index[args.token], args.token
    elif len(args.token) == 1:
        tid, text = ord(args.token), args.token  # bvv241 convention: a monogram's id is its code point
        print(f"(no tokenizer: using the bvv241 convention id = code point = {tid})")
    else:
        raise SubstrateError("without --tokenizer only a single character or --id can be looked up")
    print(f"token: {text!r}  id: {tid}")

    # the glyph picture (whatever the substrate kind: it is what UNI_GLYPH would see)
    if text is not None:
        from ..substrates.glyph import glyph_images

        try:
            image = glyph_images([text], args.font)[0]  # [32, 32] bool
        except SubstrateError as exc:
            print(f"glyph: not shown ({exc})")
        else:
            print(f"glyph ({image.shape[1]}x{image.shape[0]}, augmented and binarised as in UNI_GLYPH; # = ink):")
            print(_ascii_glyph(image))
            if args.png:
                from PIL import Image

                scale = 8
                pic = np.where(image, 0, 255).astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
                Image.fromarray(pic).save(args.png)
                print(f"glyph PNG -> {args.png}")

    source = args.substrate or args.model
    if not source:
        return 0
    table, info = read_table(source)
    V, W = table.shape
    if not 0 <= tid < V:
        raise SubstrateError(f"token id {tid} is outside the table's {V:,} rows")
    row = table[tid]  # [W]
    binary = bool(np.all((row == 0) | (row == 1)))
    shown = row if args.values <= 0 else row[: args.values]
    vals = [int(v) for v in shown] if binary else [round(float(v), 5) for v in shown]
    more = "" if len(shown) == W else f" ... ({W} values)"
    print(f"row ({info.get('kind') or 'unknown kind'}, {W} values): {vals}{more}")
    print(f"  norm {float(np.linalg.norm(row)):.5f}, min {float(row.min()):.5f}, max {float(row.max()):.5f}"
          + (f", ones {int(row.sum())}" if binary else ""))
    if args.top > 0:
        if binary and bool(np.all((table == 0) | (table == 1))):
            # Hamming distance from dot products: |a| + |b| - 2 a.b
            dist = row.sum() + table.sum(axis=1) - 2.0 * (table @ row)  # [V]
            dist[tid] = np.inf
            near = np.argsort(dist, kind="stable")[: args.top]
            label, scores = "hamming", dist
        else:
            norms = np.linalg.norm(table, axis=1) * max(float(np.linalg.norm(row)), 1e-12)
            sims = (table @ row) / np.maximum(norms, 1e-12)  # [V] cosine
            sims[tid] = -np.inf
            near = np.argsort(-sims, kind="stable")[: args.top]
            label, scores = "cosine", sims
        print(f"nearest rows ({label}):")
        for j in near:
            name = repr(vocab[j]) if vocab is not None and j < len(vocab) else ""
            score = f"{int(scores[j])}" if label == "hamming" else f"{float(scores[j]):.4f}"
            print(f"  {int(j):>6}  {score:>8}  {name}")
    return 0


def cmd_dump(args) -> int:
    from ..substrates import write_embeddings_txt
    from ..substrates.io import read_table

    check_output_file(args.out)
    _refuse_overwrite(args.out, args.force)
    table, _ = read_table(args.path)
    write_embeddings_txt(table, args.out)
    print(f"wrote {table.shape[0]:,} rows x {table.shape[1]} values -> {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="substrate-lm")
    register(parser.add_subparsers())
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
