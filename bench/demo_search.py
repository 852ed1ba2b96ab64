"""Search the demo's configuration: one (world, tokenizer, model, schedule) point per call.

Trains the given substrates on one seed, then measures what the demo's claims need: validation
loss, the world's held-out multiple-choice questions under the log-likelihood protocol (and the
paper protocol with --paper), and the layer-wise category probe (neutral carrier sentences,
entity-held-out folds, with the control task). Prints one JSON line per model and appends it to
--log. The configurations tried for the demo are in benchmarks/2026-11-30-demo-configs.md.

    .venv/bin/python bench/demo_search.py --tag A --langs en --per-cat 8 --size 300KB \\
        --tokenizer compact --d-model 64 --layers 4 --steps 300 --batch 16 --seq 128 --lr 3e-3 \\
        --substrates bits,unfrozen
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--out", default="runs/demo-search")
    ap.add_argument("--langs", default="en")
    ap.add_argument("--size", default="300KB")
    ap.add_argument("--per-cat", type=int, default=8)
    ap.add_argument("--qa-fraction", type=float, default=0.1)
    ap.add_argument("--mc-variants", type=int, default=2)
    ap.add_argument("--mc-share", type=float, default=None)
    ap.add_argument("--tokenizer", default="compact")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--substrates", default="bits,unfrozen")
    ap.add_argument("--paper", action="store_true", help="also the generation protocol (slower)")
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--log", default="runs/demo-search/log.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from substrate_lm.analysis import analyze
    from substrate_lm.experiments.ablate import AblationConfig, run_ablation

    torch.set_num_threads(a.threads)
    out = Path(a.out) / a.tag
    cfg = AblationConfig(
        out=str(out), recipe="tiny", substrates=a.substrates.split(","), seeds=[a.seed], presets=["tiny"],
        corpora=[f"world:{a.size}"], benches=["world-mc"], protocol="both" if a.paper else "loglik", n_runs=2,
        limit=a.limit, data_seed=0, langs=a.langs.split(","), tokenizer=a.tokenizer,
        world={"entities_per_cat": a.per_cat, "qa_fraction": a.qa_fraction,
               **({"mc_variants": a.mc_variants, "mc_share": a.mc_share} if a.mc_share is not None else {})},
        overrides={
            "model.overrides.d_model": a.d_model, "model.overrides.n_layer": a.layers,
            "model.overrides.n_head": a.heads, "model.overrides.block_size": a.seq,
            "train.steps": a.steps, "train.batch_size": a.batch, "train.seq_len": a.seq, "train.lr": a.lr,
            "train.min_lr": a.lr / 10, "train.warmup": max(5, a.steps // 20), "train.weight_decay": a.wd,
            "train.precision": "fp32", "eval.interval": a.steps, "eval.steps": 8, "log.interval": max(1, a.steps // 5),
            "log.sample_interval": 0, "log.tensorboard": False, "log.progress": False,
            "checkpoint.interval": a.steps, "checkpoint.keep_last": 1,
        },
    )
    t0 = time.time()
    ab = run_ablation(cfg, log=lambda s: None, keep_models=True)
    t_train = time.time() - t0
    corpus = next(iter(ab["corpora"].values()))
    for r in ab["results"]:
        t1 = time.time()
        m = analyze(r["_model"], tokenizer=r["_tokenizer"], world_dir=corpus.world_dir, out_dir=out / "analysis" / r["cell"]["substrate"],
                    max_items=2000, seed=a.seed, maps=(), report=False, num_threads=a.threads, lang=cfg.langs[0])
        bench = next(iter(r["evaluation"]["models"].values()))["results"]["world-mc"]
        row = dict(
            tag=a.tag, substrate=r["cell"]["substrate"], args=vars(a), vocab=r["_model"].config.vocab_size,
            val_loss=r["val"]["val_loss"], train_last=r["train_loss_last"],
            mc_loglik=bench["loglik"]["acc"], mc_paper=(bench.get("paper") or {}).get("mean"),
            probe=[round(x, 3) for x in m["probe"]["accuracy"]],
            control=[round(x, 3) for x in m["probe"]["control_accuracy"]],
            chance=m["probe"]["chance_majority"], n_items=m["probe"]["n"],
            train_s=round(r["seconds"], 1), analysis_s=round(time.time() - t1, 1), total_train_s=round(t_train, 1),
        )
        print(json.dumps(row))
        Path(a.log).parent.mkdir(parents=True, exist_ok=True)
        with open(a.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
