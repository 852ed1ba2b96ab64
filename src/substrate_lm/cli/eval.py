"""``substrate-lm eval``: benchmarks (paper and log-likelihood protocols), perplexity, lm-eval.

    substrate-lm eval --model DIR [--model DIR ...] --bench mmlu,arc-e,arc-c,csqa,squad,boolq,bleu,world
                      [--data-dir DIR] [--protocol paper|loglik|both] [--n-runs 10] [--limit N]
                      [--seed S] --out DIR
    substrate-lm eval ppl --model DIR (--text FILE | --data DIR) [--window N] [--stride N]
    substrate-lm eval harness --model DIR --bench arc-e,... [--data-dir DIR] --out DIR
    substrate-lm eval harness --model DIR --task-file my_mc.jsonl --task-name my-mc --out DIR
    substrate-lm eval harness --model DIR --include-path YAML_DIR --tasks NAME,... --out DIR
    substrate-lm eval tasks --data-dir DIR --out DIR      # lm-eval task YAMLs only

--task-file FILE [--task-name NAME] (repeatable) adds a JSONL of one's own as a named benchmark to
any of them: multiple choice {"question", "choices": [...], "answer": index or letter} or short
answer {"question", "answer": text or [texts]}.

Heavy imports happen inside the command functions.
"""

from __future__ import annotations

import json
import sys

from ..errors import SubstrateError
from .common import (
    add_runtime_args, apply_runtime, check_input_dir, check_model_folder, check_output_dir, check_output_file, positive_int,
)

DTYPES = ("float32", "bfloat16", "float16")

TRUST_HELP = "allow a foreign model folder's own Python code to run; our own folders never need it"

LAYOUT = """local data layout (--data-dir DIR; .jsonl, .json or .parquet, hub schemas):
  DIR/mmlu/test.jsonl (with a subject column) or DIR/mmlu/<subject>/test.jsonl
  DIR/ai2_arc/ARC-Easy/validation.jsonl, DIR/ai2_arc/ARC-Challenge/validation.jsonl
  DIR/commonsense_qa/validation.jsonl, DIR/squad_v2/validation.jsonl, DIR/boolq/validation.jsonl
  DIR/opus-100/en-ru/validation.jsonl, DIR/opus-100/en-zh/validation.jsonl
  DIR/questions/mc.jsonl, DIR/questions/short.jsonl   (a world from `substrate-lm corpus world`)
without --data-dir the published hub datasets are loaded through `datasets`.

own tasks (--task-file FILE --task-name NAME, repeatable; .jsonl, .json or .parquet):
  multiple choice: {"question": ..., "choices": ["...", "..."], "answer": 1 or "B"}
  short answer:    {"question": ..., "answer": "..." or ["...", "..."], "context": ... (optional)}"""


def _add_data_args(p) -> None:
    p.add_argument("--data-dir", help="local benchmark files (offline); default: the hub datasets")
    p.add_argument("--world", dest="world_dir", help="world folder for world-mc/world-short (default: --data-dir)")
    p.add_argument("--limit", type=positive_int, help="at most N items per benchmark (after the published sampling)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed and base of the generation seeds (default 0)")
    p.add_argument("--sample-size", default="paper",
                   help="'paper' (published sizes, default), 'all', or a number of items")
    p.add_argument("--mc-mode", choices=("text", "letter"), default="text",
                   help="log-likelihood options: option texts (lm-eval ARC convention, default) or letters")
    p.add_argument("--task-file", action="append", default=[], metavar="FILE",
                   help="your own JSONL as a benchmark (multiple choice or short answer; repeatable)")
    p.add_argument("--task-name", action="append", default=[], metavar="NAME",
                   help="name of the matching --task-file, in order (default: the file name without extension)")


def _benches(args) -> list[str] | None:
    """Register the --task-file tasks; return the --bench names plus theirs (None: neither given)."""
    from ..evaluation.datasets import parse_benches, register_task_file

    if len(args.task_name) > len(args.task_file):
        raise SubstrateError(f"{len(args.task_name)} --task-name for {len(args.task_file)} --task-file; "
                             "give each name after its file")
    names = parse_benches(args.bench) if args.bench else []
    for i, path in enumerate(args.task_file):
        name = register_task_file(path, args.task_name[i] if i < len(args.task_name) else None)
        if name in names:
            raise SubstrateError(f"task name {name!r} is given twice; pass --task-name to tell the files apart")
        names.append(name)
    return names or None


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate models: paper protocol, log-likelihood, perplexity, lm-eval",
        description="Evaluate one or more models on the papers' benchmarks.", epilog=LAYOUT,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", help="model directory (repeat to compare models)")
    p.add_argument("--bench", help="comma list: mmlu,arc-e,arc-c,csqa,squad,boolq,bleu-en-ru,bleu-ru-en,"
                                   "bleu-en-zh,bleu-zh-en,world-mc,world-short; groups: paper, bleu, world, all")
    p.add_argument("--protocol", choices=("paper", "loglik", "both"), default="paper")
    p.add_argument("--n-runs", type=positive_int, default=10, help="paper-protocol repetitions (default 10, as published)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    add_runtime_args(p)
    p.add_argument("--dtype", choices=DTYPES, help="load dtype (default: as saved)")
    p.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    p.add_argument("--greedy", action="store_true",
                   help="greedy generation (default: the model's generation config, which samples for ours)")
    p.add_argument("--lm-eval", action="store_true", help="also run the log-likelihood tasks under lm_eval")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG bar charts")
    p.add_argument("--out", help="output folder for results.json, results.md, paper_lines.txt, charts")
    _add_data_args(p)
    p.set_defaults(func=cmd_eval)

    esub = p.add_subparsers(dest="eval_command", metavar="{ppl,harness,tasks}")
    q = esub.add_parser("ppl", help="perplexity and bits per character on held-out text or a prepared folder")
    q.add_argument("--model", required=True, action="append", help="model directory (repeat to compare)")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="plain text file, or JSONL with a 'text' field")
    src.add_argument("--data", help="folder from `substrate-lm data prepare`: its validation shards, overall "
                                    "and per data source (the model's tokenizer must be the one that prepared it)")
    q.add_argument("--split", choices=("val", "train"), default="val", help="split of --data (default val)")
    q.add_argument("--window", type=positive_int, help="tokens per window, >= 2 (default: context length, at most 1024)")
    q.add_argument("--stride", type=positive_int,
                   help="new tokens scored per window, 1 to --window (default: the window: disjoint windows, each "
                        "token scored once with one forward position, as lm-eval's rolling log-likelihood; smaller "
                        "gives every token at least window - stride + 1 tokens of context at window/stride the cost)")
    q.add_argument("--max-chars", type=positive_int, help="use only the first N characters (--text)")
    q.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    q.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default) or bf16 autocast (faster on GPUs and AMX CPUs; bpc moves in the 3rd digit)")
    add_runtime_args(q)
    q.add_argument("--dtype", choices=DTYPES, help="load dtype (default: as saved)")
    q.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    q.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, a line every 10 s in a log)")
    q.add_argument("--no-bos", action="store_true",
                   help="do not prepend BOS (the first token is then not scored; --text only)")
    q.add_argument("--out", help="write the numbers as JSON to this file")
    q.set_defaults(func=cmd_ppl)

    h = esub.add_parser("harness", help="run benchmarks under lm-evaluation-harness with our local task YAMLs")
    h.add_argument("--model", required=True, help="model directory")
    h.add_argument("--bench", help="comma list of benchmarks (or --task-file / --tasks)")
    h.add_argument("--include-path", action="append", metavar="DIR",
                   help="a folder of lm-eval task YAMLs of yours (lm-eval's own mechanism; its !function hooks run "
                        "as code); repeatable")
    h.add_argument("--tasks", help="comma list of tasks or groups defined in --include-path")
    h.add_argument("--out", required=True, help="output folder (task YAMLs and lm_eval_results.json)")
    h.add_argument("--generation", action="store_true", help="also run the paper-prompt generation tasks")
    h.add_argument("--batch-size", type=positive_int, default=8)
    add_runtime_args(h)
    h.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    _add_data_args(h)
    h.set_defaults(func=cmd_harness)

    t = esub.add_parser("tasks", help="write lm-eval task YAMLs (absolute data paths) for local benchmark files")
    t.add_argument("--out", required=True, help="folder for the YAMLs (pass it to lm_eval --include_path)")
    t.add_argument("--bench", help="comma list (default: every benchmark found under --data-dir)")
    _add_data_args(t)
    t.set_defaults(func=cmd_tasks)


def _sample_size(value: str):
    if value in ("paper", "all"):
        return value
    try:
        n = int(value)
    except ValueError:
        raise SubstrateError(f"--sample-size must be 'paper', 'all' or a number; got {value!r}") from None
    if n < 1:
        raise SubstrateError("--sample-size must be at least 1")
    return n


def check_models(paths) -> None:
    """Every local model folder is complete enough to load (hub ids pass through to loading)."""
    for path in paths:
        check_model_folder(path, tokenizer=True)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_eval(args) -> int:
    if not args.model or not (args.bench or args.task_file) or not args.out:
        raise SubstrateError("eval needs --model DIR, --bench LIST (or --task-file FILE) and --out DIR "
                             "(or a subcommand: ppl, harness, tasks)")
    from ..evaluation import evaluate_models, write_report
    from ..evaluation.datasets import BENCHES

    benches = _benches(args)
    sample_size = _sample_size(args.sample_size)
    check_models(args.model)
    check_output_dir(args.out)
    device = apply_runtime(args)
    results = evaluate_models(
        args.model, benches, protocol=args.protocol, data_dir=args.data_dir, n_runs=args.n_runs,
        limit=args.limit, seed=args.seed, sample_size=sample_size,
        batch_size=args.batch_size, device=device, greedy=args.greedy, mc_mode=args.mc_mode,
        world_dir=args.world_dir, dtype=args.dtype, log=_log, trust_remote_code=args.trust_remote_code,
    )
    if args.lm_eval:
        from pathlib import Path

        from ..evaluation import run_lm_eval

        mc = [b for b in benches if BENCHES[b].multiple_choice]
        results["lm_eval"] = {}
        for name, entry in results["models"].items():
            results["lm_eval"][name] = run_lm_eval(
                entry["path"], mc, args.data_dir, Path(args.out) / "lm_eval" / Path(name).name,
                batch_size=args.batch_size, device=device,
                limit=args.limit, seed=args.seed, sample_size=_sample_size(args.sample_size),
                world_dir=args.world_dir, mc_mode=args.mc_mode, trust_remote_code=args.trust_remote_code,
            )["tasks"]
    paths = write_report(results, args.out, charts=not args.no_charts)
    for name, entry in results["models"].items():
        print(entry["lines"][0])  # Total parameters (per-subject lines are in paper_lines.txt)
        for b, r in entry["results"].items():
            if "paper" in r:
                print(r["paper"]["line"])
            ll = r.get("loglik")
            if ll and ll.get("metric") == "accuracy":
                print(f"{name} {ll['label']} loglik: acc {ll['acc']:.2f}% ± {ll['acc_ci95']:.2f}%, "
                      f"acc_norm {ll['acc_norm']:.2f}% ± {ll['acc_norm_ci95']:.2f}%")
            elif ll:
                print(f"{name} {ll['label']} loglik: {ll['bpc']:.3f} bits/char of the gold answer")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def cmd_ppl(args) -> int:
    from ..evaluation import load_model, perplexity
    from ..evaluation.perplexity import perplexity_shards, read_text
    from ..fsutil import atomic_write_text

    if args.window is not None and args.window < 2:
        raise SubstrateError(f"--window must be at least 2 tokens (one of context, one scored); got {args.window}")
    if args.window is not None and args.stride is not None and args.stride > args.window:
        raise SubstrateError(f"--stride {args.stride} must be at most --window {args.window}; e.g. --stride {args.window // 2}")
    if args.data is not None and (args.max_chars is not None or args.no_bos):
        raise SubstrateError("--max-chars and --no-bos apply to --text only; drop them with --data")
    check_models(args.model)
    if args.data is not None:
        check_input_dir(args.data, "--data")
    if args.out:
        check_output_file(args.out)
    device = apply_runtime(args)
    text = read_text(args.text, max_chars=args.max_chars) if args.text is not None else None
    progress = False if args.no_progress else None
    rows = {}
    for path in args.model:
        model, tok = load_model(path, device=device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
        if text is not None:
            r = perplexity(model, tok, text, window=args.window, stride=args.stride, batch_size=args.batch_size,
                           add_bos=not args.no_bos, progress=progress, precision=args.precision,
                           log=lambda line: _log(f"{path}: {line}"))
            r["model"], r["text"] = path, args.text
            print(f"{path}: {_ppl_line(r)}, window {r['window']}, stride {r['stride']})")
        else:
            r = perplexity_shards(model, args.data, tokenizer=tok, split=args.split, window=args.window,
                                  stride=args.stride, batch_size=args.batch_size, progress=progress,
                                  precision=args.precision, log=lambda line: _log(f"{path}: {line}"))
            r["model"] = path
            print(f"{path}: {args.split} of {args.data}: {_ppl_line(r)}, window {r['window']}, stride {r['stride']})")
            for s in r["sources"] or []:
                print(f"  {s['spec']}: {_ppl_line(s)}, {s['documents']} docs)")
            if r["sources"] is None and args.split == "val":
                _log(f"note: {args.data} does not record where each source lies (prepared by an older "
                     f"substrate-lm); re-run its data prepare command with --overwrite for per-source figures")
        rows[path] = r
        del model
    if args.out:
        atomic_write_text(args.out, json.dumps(rows, indent=1) + "\n")
    return 0


def _ppl_line(r: dict) -> str:
    if not r["tokens_scored"]:
        return "no tokens (0 chars"
    bpc = f"{r['bpc']:.4f}" if r["bpc"] is not None else "n/a (characters not recorded)"
    chars = r["characters"] if r["characters"] is not None else "?"
    return (f"perplexity {r['perplexity']:.3f}  bits/token {r['bits_per_token']:.4f}  bpc {bpc}  "
            f"({r['tokens_scored']} tokens, {chars} chars")


def cmd_harness(args) -> int:
    from ..evaluation import run_lm_eval

    benches = _benches(args)  # an unknown name or a bad file fails before lm_eval is imported
    if benches is None and not args.tasks:
        raise SubstrateError("eval harness needs --bench LIST, --task-file FILE or --include-path DIR --tasks LIST")
    if args.tasks and not args.include_path:
        raise SubstrateError("--tasks needs --include-path DIR, the folder holding their YAMLs")
    for p in args.include_path or []:
        check_input_dir(p, "--include-path")
    sample_size = _sample_size(args.sample_size)
    check_models([args.model])
    check_output_dir(args.out, overwrite=True)
    device = apply_runtime(args)
    res = run_lm_eval(
        args.model, benches or [], args.data_dir, args.out, generation=args.generation,
        batch_size=args.batch_size, device=device, limit=args.limit, seed=args.seed,
        sample_size=sample_size, world_dir=args.world_dir, mc_mode=args.mc_mode,
        trust_remote_code=args.trust_remote_code, include_path=args.include_path, extra_tasks=args.tasks,
    )
    for task, metrics in res["tasks"].items():
        vals = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        print(f"{task}: {vals}")
    return 0


def cmd_tasks(args) -> int:
    from ..evaluation import write_lm_eval_tasks

    benches = _benches(args)
    if not args.bench and (args.data_dir is not None or args.world_dir is not None):
        benches = None  # every benchmark found there, the --task-file ones included
    elif args.data_dir is None and args.world_dir is None and benches is None:
        raise SubstrateError("eval tasks needs --data-dir DIR (or --bench LIST to export hub datasets, "
                             "or --task-file FILE)")
    check_output_dir(args.out, overwrite=True)
    tasks = write_lm_eval_tasks(
        args.data_dir, args.out, benches, limit=args.limit, seed=args.seed,
        sample_size=_sample_size(args.sample_size), world_dir=args.world_dir, mc_mode=args.mc_mode,
    )
    for b, names in tasks.items():
        print(f"{b}: {', '.join(names)}")
    names = ",".join(n for ns in tasks.values() for n in ns)
    print(f"run: substrate-lm eval harness --model DIR --include-path {args.out} --tasks {names} --out DIR "
          f"(loads our folders with our own classes, no code from the folder)")
    print(f"or:  lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True --include_path {args.out} "
          f"--tasks {names} (runs the .py files in DIR: only for a folder you trust)")
    return 0
