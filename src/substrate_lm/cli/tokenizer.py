"""``substrate-lm tokenizer build|encode|decode|inspect``: bvv241 tokenizers from the command line.

Examples::

    substrate-lm tokenizer build --ngrams ngrams-2-3.txt --out tok/          # exact bvv241-2-3
    substrate-lm tokenizer build --corpus data/ --langs en,ru --out tok/      # your corpus
    substrate-lm tokenizer encode -t tok/ "hello the test"                    # 104 56035 111 ...
    substrate-lm tokenizer decode -t tok/ 104 56035 111
    substrate-lm tokenizer inspect -t tok/ --text "hello the test"

Heavy imports (transformers) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..fsutil import check_not_dangling, check_regular_file, disk_error
from .common import nonneg_int, positive_int

DEFAULT_SAMPLE = "hello the test. Привет, мир! Γειά σου κόσμε. 你好，世界。 مرحبا بالعالم 😀"


def register(subparsers) -> None:
    """Add the ``tokenizer`` command group."""
    p = subparsers.add_parser(
        "tokenizer",
        help="build, use and inspect bvv241 Unicode tokenizers",
        description="bvv241 Unicode tokenizers: id == code point for single characters, n-grams in the "
        "ids no character can use.",
    )
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    b = sub.add_parser("build", help="build a tokenizer from n-gram statistics or from a corpus")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--ngrams", metavar="FILE", help="statistics file in the published format (ngrams-2-3.txt "
                     "gives the exact bvv241-2-3)")
    src.add_argument("--corpus", metavar="PATH", nargs="+", help="text files, folders or JSONL files "
                     "({\"text\", \"lang\"} per line)")
    b.add_argument("--out", required=True, metavar="DIR", help="output tokenizer folder")
    b.add_argument("--langs", metavar="LIST", help="comma-separated language codes, e.g. en,ru,zh "
                   "(default: all in the statistics / corpus)")
    b.add_argument("--top-k", type=positive_int, metavar="K", help="n-grams per length and language (default: the "
                   "layout's, 338 for bvv241-2-3)")
    b.add_argument("--layout", default="bvv241-2-3", help="vocabulary layout: bvv241-2-3 (65,536 ids) or "
                   "bvv241-max (131,072 ids)")
    b.add_argument("--overwrite", action="store_true", help="replace a tokenizer already in --out")
    b.set_defaults(func=cmd_build)

    e = sub.add_parser("encode", help="text -> ids")
    e.add_argument("-t", "--tokenizer", required=True, help="tokenizer folder, tokenizer.json or hub id")
    e.add_argument("text", nargs="*", help="text (joined with spaces); default: --file or stdin")
    e.add_argument("--file", metavar="FILE", help="encode the contents of a UTF-8 file")
    e.add_argument("--pieces", action="store_true", help="one 'id<TAB>piece' line per token")
    e.add_argument("--json", action="store_true", help="print {\"ids\": [...], \"tokens\": [...]}")
    e.add_argument("--add-special-tokens", action="store_true", help="apply the post-processor (bvv241: none)")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="ids -> text")
    d.add_argument("-t", "--tokenizer", required=True, help="tokenizer folder, tokenizer.json or hub id")
    d.add_argument("ids", nargs="*", help="token ids (space/comma separated or a JSON list); default: stdin")
    d.add_argument("--skip-special-tokens", action="store_true", help="drop special tokens such as <unk>")
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("inspect", help="vocabulary ranges, specials, and tokens of a sample")
    i.add_argument("-t", "--tokenizer", required=True, help="tokenizer folder, tokenizer.json or hub id")
    i.add_argument("--text", help="sample text (default: a short multilingual sample)")
    i.add_argument("--file", metavar="FILE", help="sample file (UTF-8 text; JSONL lines use their \"text\")")
    i.add_argument("--max-rows", type=nonneg_int, default=60, help="tokens shown in the table (default 60)")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=cmd_inspect)


def _langs(value: str | None) -> list[str] | None:
    if not value:
        return None
    langs = [x.strip() for x in value.split(",") if x.strip()]
    return langs or None


def cmd_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import SubstrateError
    from ..tokenizer import build_from_corpus, build_from_ngram_file, get_layout, save_tokenizer, tokenizer_summary

    layout = get_layout(args.layout)
    out = Path(args.out)
    check_not_dangling(out, "--out")
    if (out / "tokenizer.json").exists() and not args.overwrite:
        raise SubstrateError(f"{out} already holds a tokenizer; choose another folder or pass --overwrite")
    for src in [args.ngrams] if args.ngrams else list(args.corpus or ()):
        check_regular_file(src, "--ngrams" if args.ngrams else "--corpus")  # a FIFO would block for ever
    try:
        if args.ngrams:
            tok = build_from_ngram_file(args.ngrams, layout=layout, langs=_langs(args.langs), top_k=args.top_k)
            stats_note = ""
        else:
            stats_path = out / "ngrams.txt"
            tok = build_from_corpus(args.corpus, langs=_langs(args.langs), top_k=args.top_k, layout=layout,
                                    stats_out=stats_path)
            stats_note = f"; statistics in {stats_path}"
        save_tokenizer(tok, out, overwrite=args.overwrite)
    except OSError as exc:  # the statistics file or the tokenizer: a full disk is one line
        raise disk_error(exc, f"the tokenizer in {out}", fix="run the command again") from None
    s = tokenizer_summary(tok)
    print(f"{layout.name}: {s['vocab_size']:,} entries, {s['ranges'].get('ngram', 0):,} n-grams, "
          f"{s['merges']:,} merges -> {out}{stats_note}")
    return 0


def _read_input(args: argparse.Namespace) -> str:
    from pathlib import Path

    from ..errors import SubstrateError

    if getattr(args, "text", None):
        return " ".join(args.text)
    if args.file:
        check_regular_file(args.file, "--file")  # a FIFO would block for ever
        try:
            return Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SubstrateError(f"cannot read {args.file} as UTF-8 text: {exc}") from None
    return _read_stdin()


def _read_stdin() -> str:
    """All of standard input as UTF-8 text, or a one-line error."""
    from ..errors import SubstrateError

    try:
        return sys.stdin.read()
    except UnicodeDecodeError as exc:
        raise SubstrateError(f"standard input is not valid UTF-8 text (bad byte at offset {exc.start}); "
                             "convert it to UTF-8 or pass --file") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from ..tokenizer import encode_corpus, load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    text = _read_input(args)
    ids = next(encode_corpus(tok, [text], add_special_tokens=args.add_special_tokens))
    tokens = tok.convert_ids_to_tokens(ids)
    if args.json:
        print(json.dumps({"ids": ids, "tokens": tokens}, ensure_ascii=False))
    elif args.pieces:
        for i, piece in zip(ids, tokens):
            print(f"{i}\t{_show(piece)}")
    else:
        print(" ".join(map(str, ids)))
    return 0


def _parse_ids(raw: list[str]) -> list[int]:
    from ..errors import SubstrateError

    text = " ".join(raw).strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            raise SubstrateError("ids look like a JSON list but do not parse; pass e.g. [104, 56035]") from None
    else:
        values = text.replace(",", " ").split()
    if not isinstance(values, list):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            v = None  # JSON true/1.5/[1]/{...} are not ids
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            raise SubstrateError("ids must be integers, e.g. '104 56035 111' or '[104, 56035, 111]'") from None
    if not out:
        raise SubstrateError("no ids given; pass e.g. '104 56035 111' (or pipe them on stdin)")
    return out


def cmd_decode(args: argparse.Namespace) -> int:
    from ..errors import SubstrateError
    from ..tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    ids = _parse_ids(args.ids if args.ids else [_read_stdin()])
    size = len(tok)
    bad = [i for i in ids if not 0 <= i < size]
    if bad:
        raise SubstrateError(f"id {bad[0]} is outside the vocabulary (0..{size - 1})")
    print(tok.decode(ids, skip_special_tokens=args.skip_special_tokens))
    return 0


def _show(piece: str) -> str:
    # Make whitespace and control characters visible in tables.
    return piece if piece.isprintable() and piece.strip() == piece else repr(piece)


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..tokenizer import load_tokenizer, token_table, tokenizer_summary

    tok = load_tokenizer(args.tokenizer)
    if args.file:
        sample = _sample_from_file(args.file)
    else:
        sample = [args.text if args.text is not None else DEFAULT_SAMPLE]
    summary = tokenizer_summary(tok, sample)
    rows = token_table(tok, sample[0])
    if args.json:
        summary["tokens"] = [{**r, "span": list(r["span"])} for r in rows[: args.max_rows]]
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    print(f"tokenizer   {args.tokenizer} ({summary['class']})")
    print(f"vocab size  {summary['vocab_size']:,}   layout {summary['layout'] or 'not bvv241'}   "
          f"merges {summary['merges']:,}")
    if summary["ranges"]:
        print("ranges      " + ", ".join(f"{k} {v:,}" for k, v in summary["ranges"].items()))
    if summary["ngram_lengths"]:
        print("n-grams     " + ", ".join(f"len {n}: {c:,}" for n, c in summary["ngram_lengths"].items()))
    print("specials    " + ", ".join(f"{r.replace('_token', '')} {t!r}={i}" for r, (t, i) in summary["specials"].items()))
    print(f"pipeline    pre_tokenizer {summary['pre_tokenizer']}, decoder {summary['decoder']}, "
          f"post_processor {summary['post_processor']}")
    s = summary["sample"]
    print(f"sample      {s['documents']} document(s), {s['characters']:,} chars, {s['tokens']:,} tokens, "
          f"{s['chars_per_token']} chars/token, {s['unk_tokens']} <unk>")
    print()
    print(f"{'id':>7}  {'hex':>7}  {'kind':<9} piece")
    for r in rows[: args.max_rows]:
        print(f"{r['id']:>7}  {r['id']:>#7x}  {r['kind']:<9} {_show(r['piece'])}")
    if len(rows) > args.max_rows:
        print(f"... {len(rows) - args.max_rows} more tokens")
    return 0


def _sample_from_file(path: str) -> list[str]:
    from ..errors import SubstrateError
    from ..tokenizer.corpus import parse_jsonl_line
    from pathlib import Path

    p = Path(path)
    check_regular_file(p, "--file")  # a FIFO would block for ever
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SubstrateError(f"cannot read {p} as UTF-8 text: {exc}") from None
    if p.suffix.lower() == ".jsonl":
        texts = [parse_jsonl_line(line, p, k)[0] for k, line in enumerate(lines, 1) if line.strip()]
    else:
        texts = ["\n".join(lines)]
    if not texts or not any(texts):
        raise SubstrateError(f"{p} is empty; pass a sample with some text")
    return texts
