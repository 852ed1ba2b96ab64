"""``substrate-lm data prepare|stats``: corpora -> resumable uint16 token shards.

Examples::

    substrate-lm data prepare --source corpus/ --source hf:wikitext:wikitext-2-raw-v1 \\
        --tokenizer tok/ --out data/run1 --val-fraction 0.01
    substrate-lm data prepare --source world:world_dir --tokenizer Bochkov/bvv241-2-3 --out data/w
    substrate-lm data stats data/run1

Re-running an interrupted ``prepare`` with the same arguments resumes it. Heavy imports happen
inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    """Add the ``data`` command group."""
    p = subparsers.add_parser(
        "data",
        help="prepare corpora into token shards and show their statistics",
        description="Tokenise corpora into uint16 memory-mapped shards (resumable) for training.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    pr = sub.add_parser(
        "prepare",
        help="tokenise sources into train/val token shards",
        description="Source SPECs: a path (file, folder, glob, world corpus folder) or "
        "text:PATH, dir:PATH, glob:PATTERN, jsonl:PATH, parquet:PATH, world:DIR, "
        "hf:NAME[:CONFIG][?split=train&data_files=...].",
    )
    pr.add_argument("--source", action="append", required=True, metavar="SPEC",
                    help="corpus source (repeatable; read in the order given)")
    pr.add_argument("--tokenizer", required=True, metavar="DIR_OR_ID",
                    help="tokenizer folder or hub id (vocabulary <= 65,536)")
    pr.add_argument("--out", required=True, metavar="DIR", help="output directory")
    pr.add_argument("--val-fraction", type=float, default=0.01, metavar="F",
                    help="share of the text hashed into the val split, per document or "
                         "piece of a long one (default 0.01)")
    pr.add_argument("--text-field", default="text", metavar="NAME",
                    help="JSON/Parquet/dataset field with the text (default 'text')")
    pr.add_argument("--text-unit", default="file", choices=("file", "line", "paragraph"),
                    help="what a document is in plain text files (default: the whole file)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the train/val split hash")
    pr.add_argument("--shard-tokens", type=int, default=None, metavar="N",
                    help="tokens per shard file (default 67,108,864 = 128 MiB)")
    pr.add_argument("--overwrite", action="store_true",
                    help="replace a directory prepared with another tokenizer or settings, or "
                         "write into a folder that holds other files (they are kept)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.add_argument("--json", action="store_true", help="print the statistics as JSON")
    pr.set_defaults(func=cmd_prepare)

    st = sub.add_parser("stats", help="statistics of a prepared directory")
    st.add_argument("dir", metavar="DIR", help="prepared directory")
    st.add_argument("--json", action="store_true", help="print stats.json as is")
    st.add_argument("--verify", action="store_true",
                    help="also check every shard against its sha256 (reads all data)")
    st.set_defaults(func=cmd_stats)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if v >= 0.001 or v == 0 else f"{v:.3e}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def format_stats(stats: dict) -> str:
    """A human-readable table of a ``stats.json`` dict."""
    cols = ("documents", "characters", "tokens", "chars_per_token", "unk_tokens", "unk_share",
            "shards")
    heads = ("split", "documents", "characters", "tokens", "chars/token", "<unk>", "<unk> share",
             "shards")
    rows = [heads]
    for name in ("train", "val"):
        d = stats.get("splits", {}).get(name, {})
        rows.append((name,) + tuple(_fmt(d.get(c)) for c in cols))
    rows.append(("total",) + tuple(_fmt(stats.get(c)) if c != "shards" else "" for c in cols))
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in rows]
    tok = stats.get("tokenizer", {})
    lines.append(
        f"tokenizer: {tok.get('name') or '(in memory)'}  vocab {_fmt(tok.get('vocab_size'))}  "
        f"eos {tok.get('eos_token')} ({tok.get('eos_id')})  unk {tok.get('unk_token')} "
        f"({tok.get('unk_id')})"
    )
    if stats.get("empty_documents"):
        lines.append(f"empty documents dropped: {stats['empty_documents']:,}")
    if stats.get("skipped_files"):
        lines.append(f"files skipped (binary, not UTF-8 or not regular files): {stats['skipped_files']:,}")
    if stats.get("invalid_utf8") or stats.get("lone_surrogates"):
        lines.append(f"invalid UTF-8 sequences: {stats.get('invalid_utf8', 0):,} (became U+FFFD); "
                     f"lone surrogates: {stats.get('lone_surrogates', 0):,}")
    unknown = stats.get("unknown_chars") or []
    if unknown:
        lines.append("most frequent <unk> characters: " + ", ".join(
            f"{u['codepoint']} x{u['count']:,}" for u in unknown[:8]))
    if stats.get("val_fraction", 0) > 0 and not stats.get("splits", {}).get("val", {}).get("tokens"):
        lines.append("warning: the val split is empty (the corpus is a single piece of text, or "
                     "a world corpus without a val part); add text, or split it into documents "
                     "with --text-unit paragraph or line")
    elif stats.get("val_from_train_tail"):
        lines.append(f"note: no document hashed into val at --val-fraction "
                     f"{stats.get('val_fraction')}; the last {stats['val_from_train_tail']} "
                     "training piece(s) became the val split")
    return "\n".join(lines)


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..data import DEFAULT_SHARD_TOKENS, prepare_data

    stats = prepare_data(
        args.source,
        args.tokenizer,
        args.out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        shard_tokens=DEFAULT_SHARD_TOKENS if args.shard_tokens is None else args.shard_tokens,
        text_field=args.text_field,
        text_unit=args.text_unit,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=True))
    else:
        print(format_stats(stats))
        print(f"prepared {args.out} in {stats.get('seconds', 0):.1f} s")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..data import TokenShards, load_stats

    stats = load_stats(args.dir)
    if args.verify:
        for split in ("train", "val"):
            TokenShards(args.dir, split, verify=True)
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=True))
    else:
        print(format_stats(stats))
        if args.verify:
            print("verified: every shard matches its sha256")
    sys.stdout.flush()
    return 0
