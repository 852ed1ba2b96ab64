"""``substrate-lm corpus world``: generate the built-in semantic world corpus."""

from __future__ import annotations

import json

from .common import finite_float, nonneg_int, positive_int


def register(sub) -> None:
    p = sub.add_parser("corpus", help="generate built-in corpora (the semantic world)")
    csub = p.add_subparsers(dest="corpus_command", metavar="CORPUS")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    w = csub.add_parser(
        "world",
        help="a seeded synthetic world: training text, ground truth, held-out questions",
        description="Write train.jsonl, val.jsonl, world.json, questions/mc.jsonl, questions/short.jsonl "
        "and corpus.json into --out. The output is a pure function of the arguments.",
    )
    w.add_argument("--size", default="20MB", help="text size over all languages, e.g. 100KB, 5MB, 20MB (default 20MB)")
    w.add_argument("--langs", default="en,ru,zh", help="comma-separated languages (default en,ru,zh)")
    w.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    w.add_argument("--out", required=True, help="output directory")
    w.add_argument("--questions", type=nonneg_int, default=None, help="held-out questions per language and file (default 300)")
    w.add_argument("--val-fraction", type=finite_float, default=0.03, help="share of documents in val.jsonl (default 0.03)")
    w.add_argument("--qa-fraction", type=finite_float, default=0.1,
                   help="share of training question-answer documents (default 0.1; 0 disables)")
    w.add_argument("--entities-per-category", type=positive_int, default=None,
                   help="override the size-aware number of entities per category (even, >= 6)")
    w.add_argument("--mc-variants", type=positive_int, default=None,
                   help="multiple-choice renderings (fresh distractors and option order) per training question "
                        "(1..4096; default 2)")
    w.add_argument("--mc-share", type=finite_float, default=None,
                   help="share of training question-answer items in the papers' multiple-choice format, in [0, 1] "
                        "(default: every rendering equally likely, as older worlds)")
    w.add_argument("--balanced-halves", action="store_true",
                   help="give the two alternating entity halves of each category the same attribute values "
                        "(for experts trained on one half each, as in the docking experiment)")
    w.add_argument("--verify", action="store_true",
                   help="read the text back and check every sentence against the ground truth")
    w.add_argument("--overwrite", action="store_true",
                   help="replace a world this tool wrote in --out (its substrate_corpus.json lists every file "
                        "there); a folder holding anything else is never written")
    w.add_argument("--json", action="store_true", help="print the summary as JSON")
    w.set_defaults(func=cmd_world)


def _human(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def cmd_world(args) -> int:
    from ..world import check_world_out, generate_world, verify_world
    from ..world.questions import DEFAULT_QUESTIONS
    from .common import check_output_dir

    check_output_dir(args.out, overwrite=True)  # a file, a dangling link, a file as a parent folder
    check_world_out(args.out, args.overwrite)  # --overwrite replaces only a world the tool wrote
    summary = generate_world(
        args.out, size=args.size, langs=args.langs, seed=args.seed,
        n_questions=DEFAULT_QUESTIONS if args.questions is None else args.questions,
        val_fraction=args.val_fraction, qa_fraction=args.qa_fraction,
        entities_per_cat=args.entities_per_category,
        **({"mc_variants": args.mc_variants} if args.mc_variants is not None else {}),
        **({"mc_share": args.mc_share} if args.mc_share is not None else {}),
        balanced_halves=args.balanced_halves,
    )
    report = verify_world(args.out) if args.verify else None
    if args.json:
        print(json.dumps({**summary, "verify": report}, ensure_ascii=False, indent=1))
        return 0 if report is None or report["ok"] else 1
    docs = summary["documents"]
    print(f"world: {summary['out_dir']}")
    for name, size in summary["files"].items():
        print(f"  {name:<24}{_human(size):>10}")
    print(f"  langs {','.join(summary['langs'])}  seed {summary['seed']}  "
          f"entities {summary['entities']} ({summary['entities_per_category']} per category)")
    print(f"  documents: {docs['train']} train, {docs['val']} val "
          f"({docs['profiles']} entity profiles, {docs['qa']} question-answer)")
    q = summary["questions"]
    print(f"  questions: {q['mc']} multiple choice, {q['short']} short answer ({q['two_hop']} two-hop each)")
    print(f"  text {_human(summary['text_bytes_total'])} in {summary['seconds']:.2f} s "
          f"({summary['mb_per_s']:.1f} MB/s)")
    if report is not None:
        cov = ", ".join(f"{k} {v['stated']}/{v['facts']}" for k, v in report["coverage"].items())
        status = "ok" if report["ok"] else "FAILED"
        print(f"  verify: {status}: {report['sentences']} sentences, {report['qa_items']} question-answer items, "
              f"{report['n_errors']} errors; facts stated: {cov}; held-out leaks: {len(report['leaks'])}")
        for line in report["errors"][:5] + report["missing_facts"][:5] + report["leaks"][:5]:
            print(f"    {line}")
        return 0 if report["ok"] else 1
    return 0
