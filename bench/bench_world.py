"""World corpus benchmark: generation throughput (MB of text per second) against the issue's
requirement (>= 10 MB/s) and against a naive generator that formats every sentence per document.

* ``generate_world`` end to end (pool rendering, bulk index sampling, JSON-lines assembly, atomic
  writes of every file, questions, ground truth), best of ``--repeats`` runs per size;
* the naive reference: the same world and templates, but each document is built with Python
  ``random`` choices and one ``str.format`` per sentence, then ``json.dumps`` per document (how a
  straightforward generator is written); text only, nothing else written.

    python bench/bench_world.py [--sizes 5MB,20MB,100MB] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from substrate_lm.world import build_world, entities_per_category, generate_world, parse_size
from substrate_lm.world.languages import get_lang
from substrate_lm.world.render import fact_templates, value_kwargs
from substrate_lm.world.truth import is_relation, subject_facts
from machine import cpu_model  # bench/machine.py

TARGET_MB_S = 10.0



def naive_generate(size_b: int, langs, seed: int, path: Path) -> int:
    """Straightforward per-document generator (the reference); returns text bytes written."""
    world = build_world(seed, langs, entities_per_category(size_b, len(langs)))
    ents = {e["id"]: e for e in world["entities"]}
    rnd = random.Random(seed)
    lines, total = [], 0
    per_lang = size_b // len(langs)
    for lang in langs:
        mod = get_lang(lang)
        have = 0
        while have < per_lang:
            e = rnd.choice(world["entities"])
            facts = subject_facts(e)
            sents = []
            for key, value in rnd.sample(facts, min(len(facts), rnd.randint(2, 5))):
                kw = {"obj": ents[value]["names"][lang]} if is_relation(key) else value_kwargs(mod, key, value)
                t = rnd.choice(fact_templates(mod.SENTENCES, key, e["category"]))
                sents.append(t.format(name=e["names"][lang], **kw))
            text = mod.SENT_SEP.join(sents)
            lines.append(json.dumps({"text": text, "lang": lang}, ensure_ascii=False))
            have += len(text.encode("utf-8"))
        total += have
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def best_of(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="5MB,20MB,100MB")
    ap.add_argument("--langs", default="en,ru,zh")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--naive-size", default="20MB", help="size for the naive reference (it is slow)")
    ap.add_argument("--out", default=f"benchmarks/{date(2026, 11, 28).isoformat()}-world.md")
    args = ap.parse_args(argv)
    langs = tuple(args.langs.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            size_b = parse_size(size)
            secs, summary = best_of(lambda: generate_world(Path(tmp) / "w", size=size_b, langs=langs, seed=0),
                                    args.repeats)
            mb = summary["text_bytes_total"] / 1e6
            rows.append((size, mb, secs, mb / secs, summary["entities"]))
            print(f"generate_world {size:>6}: {mb:7.1f} MB text in {secs:6.2f} s = {mb / secs:6.1f} MB/s "
                  f"({mb / secs / TARGET_MB_S:4.2f}x the 10 MB/s requirement), {summary['entities']} entities",
                  flush=True)
        naive_b = parse_size(args.naive_size)
        n_secs, n_bytes = best_of(lambda: naive_generate(naive_b, langs, 0, Path(tmp) / "naive.jsonl"), 1)
        n_mb = n_bytes / 1e6
        ours_at = next((r for r in rows if parse_size(r[0]) == naive_b), None)
        if ours_at is None:
            secs, summary = best_of(lambda: generate_world(Path(tmp) / "w", size=naive_b, langs=langs, seed=0), 1)
            ours_at = (args.naive_size, summary["text_bytes_total"] / 1e6, secs,
                       summary["text_bytes_total"] / 1e6 / secs, summary["entities"])
        ratio = ours_at[3] / (n_mb / n_secs)
        print(f"naive reference {args.naive_size:>6}: {n_mb:7.1f} MB text in {n_secs:6.2f} s = "
              f"{n_mb / n_secs:6.1f} MB/s; generate_world is {ratio:.1f}x faster")

    import substrate_lm

    md = [
        "# World corpus generation throughput",
        "",
        f"Date: 2026-11-28. CPU: {cpu_model()} ({platform.machine()}), 2 cores available; "
        f"Python {sys.version.split()[0]}, numpy {np.__version__}, substrate-lm {substrate_lm.__version__}.",
        "Rerun: `python bench/bench_world.py` (sizes, languages and repeats are options).",
        "",
        f"Languages {','.join(langs)}, seed 0, default settings; time = wall clock of the whole "
        f"`generate_world` call (text, questions, ground truth, atomic writes), best of {args.repeats}. "
        "MB = 10^6 bytes of UTF-8 document text.",
        "",
        "| size | text MB | seconds | MB/s | vs 10 MB/s requirement | entities |",
        "|---|---|---|---|---|---|",
    ]
    md += [f"| {s} | {mb:.1f} | {sec:.2f} | {rate:.1f} | {rate / TARGET_MB_S:.2f}x | {ents} |"
           for s, mb, sec, rate, ents in rows]
    md += [
        "",
        f"Naive reference (per-document `random` choices, one `str.format` per sentence, `json.dumps` "
        f"per document, text only) at {args.naive_size}: {n_mb:.1f} MB in {n_secs:.2f} s = "
        f"{n_mb / n_secs:.1f} MB/s; `generate_world` at the same size: {ours_at[3]:.1f} MB/s, "
        f"**{ratio:.1f}x** faster.",
        "",
        "The machine is shared with other jobs, so absolute numbers vary by tens of percent between runs.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
