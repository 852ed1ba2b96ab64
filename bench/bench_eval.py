"""Evaluation throughput: items/s of the paper and log-likelihood protocols, batched vs one by one.

Reference: the published evaluation loop, one prompt per ``model.generate`` call (``batch_size=1``);
for the log-likelihood protocol the reference is one scored row per forward pass, and lm-eval's
HFLM on the same items and model (in memory, our task YAML, ``--lm-eval``) is printed beside it.

Models: the project's SubstrateForCausalLM at the CPU presets ``tiny`` and ``small`` (random
weights, vocabulary 65,536 of the bvv241 layout, as in the papers), with a bvv241-2-3-layout
tokenizer built from a few sentences. Items: 64 synthetic ARC-style questions (4 options, the
published prompt ~160 characters) written as a local ``ai2_arc`` file.

    .venv/bin/python bench/bench_eval.py [--items 64] [--threads 1] [--lm-eval]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model  # bench/machine.py



def make_items(d: Path, n: int) -> None:
    rng = random.Random(0)
    words = "red blue green gold river stone cloud apple table seven quiet north summer glass".split()
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(8, 16)))
        opts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(4)]
        rows.append({"id": f"b{i}", "question": q.capitalize() + "?", "choices": {"label": list("ABCD"), "text": opts},
                     "answerKey": "ABCD"[i % 4]})
    p = d / "ai2_arc/ARC-Easy/validation.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (the CPUs may be shared)")
    ap.add_argument("--lm-eval", action="store_true", help="also time lm-eval's HFLM on the same items")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    from substrate_lm.evaluation import load_bench, run_loglik, run_paper
    from substrate_lm.evaluation.paper import HFGenerator
    from substrate_lm.modeling import SubstrateForCausalLM
    from substrate_lm.presets import get_preset
    from substrate_lm.tokenizer import build_from_stats, ngram_stats_from_texts

    tok = build_from_stats(ngram_stats_from_texts(
        {"en": ["Question: which option is right? Options: Answer: the red river stone cloud"] * 20}, ns=(2, 3), top_k=50))
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    make_items(tmp, args.items)
    data = load_bench("arc-e", tmp)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__} ({args.threads} thread(s)), "
          f"transformers {transformers.__version__}; {len(data.items)} ARC-style items, vocab {len(tok)}")

    rows = []
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        model = SubstrateForCausalLM(get_preset(preset, vocab_size=len(tok))).eval()
        n_params = sum(p.numel() for p in model.parameters())
        res = {"preset": preset, "params_M": n_params / 1e6}
        for bs in (1, args.batch):
            gen = HFGenerator(model, tok, batch_size=bs)  # samples, as published
            t = timed(lambda: run_paper(gen, data, preset, n_runs=1, seed=0), args.repeat)
            res[f"paper_bs{bs}"] = len(data.items) / t
            # rows without context sharing: one per forward (reference) and batched
            t = timed(lambda: run_loglik(model, tok, data, batch_size=bs, share_context=False), args.repeat)
            res[f"loglik_bs{bs}"] = len(data.items) / t
        # the default: batched, each question's context run once for its options
        t = timed(lambda: run_loglik(model, tok, data, batch_size=args.batch), args.repeat)
        res["loglik_shared"] = len(data.items) / t
        if args.lm_eval:
            from lm_eval import simple_evaluate
            from lm_eval.models.huggingface import HFLM
            from lm_eval.tasks import TaskManager

            from substrate_lm.evaluation import write_lm_eval_tasks

            task_dir = tmp / f"tasks_{preset}"
            write_lm_eval_tasks(tmp, task_dir, "arc-e")
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch, device="cpu")
            tm = TaskManager(include_path=str(task_dir), include_defaults=False)
            t = timed(lambda: simple_evaluate(model=lm, tasks=["substrate_arc_e"], task_manager=tm,
                                              log_samples=False, bootstrap_iters=0), args.repeat)
            res["lm_eval_loglik"] = len(data.items) / t
        rows.append(res)
        print(json.dumps(res))

    print()
    b = args.batch
    print("| model | params | paper 1-by-1 | paper batched | ratio | loglik 1-by-1 | loglik batched | ratio "
          "| loglik batched + shared context | ratio |" + (" lm-eval HFLM loglik (batched) | ratio |" if args.lm_eval else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.lm_eval else ""))
    for r in rows:
        p1, pb, l1, lb, ls = r["paper_bs1"], r[f"paper_bs{b}"], r["loglik_bs1"], r[f"loglik_bs{b}"], r["loglik_shared"]
        line = (f"| {r['preset']} | {r['params_M']:.1f}M | {p1:.1f} | {pb:.1f} | {pb / p1:.2f}x | {l1:.1f} | {lb:.1f} | "
                f"{lb / l1:.2f}x | {ls:.1f} | {ls / l1:.2f}x |")
        if args.lm_eval:
            le = r["lm_eval_loglik"]
            line += f" {le:.1f} | ours {ls / le:.2f}x |"
        print(line)
    print(f"(items/s, best of {args.repeat}; batched = batch size {args.batch}; paper = ARC protocol, 2 new "
          f"tokens, one run, sampling; loglik = 4 options scored per item; ratios against one by one)")


if __name__ == "__main__":
    main()
