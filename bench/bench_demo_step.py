"""Where a demo training cell spends its time, and what a step costs under each way of running it.

Usage (from the repository root, one torch thread like the demo's workers)::

    .venv/bin/python bench/bench_demo_step.py phases  --root DIR   # one 600-step cell: time per phase
    .venv/bin/python bench/bench_demo_step.py profile --root DIR   # torch.profiler of 50 steps
    .venv/bin/python bench/bench_demo_step.py steps   --root DIR   # interleaved CPU ms per model-step
    .venv/bin/python bench/bench_demo_step.py check   --root DIR   # batched vs one-model trainer losses

``DIR`` is a demo output folder (its prepared world corpus is reused, or built there). The cell is
the demo's (``DemoSettings.full()``: d_model 64 x 4 blocks, 4 heads, 16 x 128 tokens, fp32, 600
steps); results: benchmarks/2026-12-06-demo-speed.md. Every line prints the load average: on a
shared machine compare only numbers of one run (the variants of ``steps`` take turns step by step).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batched_trainer as Bt  # noqa: E402

from substrate_lm.components.loss import causal_lm_loss  # noqa: E402
from substrate_lm.evaluation import evaluate_models  # noqa: E402
from substrate_lm.experiments.ablate import Cell, cell_run_config, prepare_corpus  # noqa: E402
from substrate_lm.experiments.demo import DemoSettings, demo_ablation, demo_run_config  # noqa: E402
from substrate_lm.training.build import build_run_model, load_run_data, load_run_tokenizer  # noqa: E402
from substrate_lm.training.optim import build_optimizer  # noqa: E402
from substrate_lm.training.trainer import Trainer  # noqa: E402


def load() -> str:
    return open("/proc/loadavg").read().split(" ")[0]


def cell_run(root: Path, spec: str, seed: int, out: Path, **train):
    settings = DemoSettings.full()
    ab = demo_ablation(settings, root, [seed])
    corpus = prepare_corpus(ab.corpora[0], root, 0, ab.langs, lambda m: None, tokenizer=ab.tokenizer, world=ab.world)
    run = cell_run_config(demo_run_config(settings), Cell("tiny", ab.corpora[0], spec, seed), corpus, out)
    if train:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, **train))
    return run, ab, corpus


def phases(root: Path) -> None:
    out = root / "bench-phases"
    shutil.rmtree(out, ignore_errors=True)
    run, ab, corpus = cell_run(root, "bits", 0, out)
    spent: dict[str, float] = {}

    def timed(owner, name, label):
        f = getattr(owner, name)

        def g(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
        setattr(owner, name, g)

    timed(Trainer, "_train_step", "forward + backward + clip (600 steps)")
    timed(torch.optim.AdamW, "step", "AdamW steps (fused)")
    timed(Trainer, "evaluate", "validation (6 x 8 batches)")
    timed(Trainer, "save_checkpoint", "checkpoints")
    timed(Trainer, "sample", "samples")
    print(f"load {load()}")
    t0 = time.perf_counter()
    res = Trainer(run).fit()
    spent["Trainer.fit total"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    evaluate_models({"bits": (res.model.eval(), res.tokenizer)}, ab.benches, protocol=ab.protocol, n_runs=ab.n_runs,
                    limit=ab.limit, seed=0, sample_size="all", world_dir=corpus.world_dir)
    spent["evaluation (300 questions x 2 benchmarks x 2 protocols)"] = time.perf_counter() - t1
    for k, v in spent.items():
        print(f"{k:58s} {v:7.2f} s")
    print(f"load {load()}")


def profile(root: Path) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    run, _, _ = cell_run(root, "bits", 0, root / "bench-profile", steps=60)
    run = dataclasses.replace(run, eval=dataclasses.replace(run.eval, interval=0),
                              checkpoint=dataclasses.replace(run.checkpoint, interval=0),
                              log=dataclasses.replace(run.log, sample_interval=0, sample_prompts=[]))
    shutil.rmtree(root / "bench-profile", ignore_errors=True)
    prof = tprofile(activities=[ProfilerActivity.CPU])
    orig = Trainer._train_step

    def step(self):
        if self.step == 10:
            prof.__enter__()
        return orig(self)
    Trainer._train_step = step
    print(f"load {load()}")
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(run).fit()
    prof.__exit__(None, None, None)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(f"load {load()}")


def steps(root: Path, n: int = 15, m: int = 3) -> None:
    run, _, _ = cell_run(root, "bits", 0, root / "bench-steps")
    data = load_run_data(run.data, tokenizer=run.model.tokenizer, seed=0, is_main=True, barrier=lambda: None,
                         progress=False)
    tok = load_run_tokenizer(run.model, data)
    models = [build_run_model(run.model, tok, seed=s) for s in range(m)]
    singles = {}
    for name in ("one-model fp32 (the trainer's step)", "one-model bf16 autocast"):
        ms = [copy.deepcopy(x).train() for x in models]
        singles[name] = [(x, build_optimizer(x, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)) for x in ms]
    stacks = {}
    for name in (f"batched x{m} fp32", f"batched x{m} bf16 products"):
        st = Bt.stack_models(models)
        stacks[name] = (st, Bt.build_optimizer(st, 1e-3, 0.1, (0.9, 0.95), 1e-8))

    def one(name, i):
        xs, ys = zip(*(data.train.get_batch(i, 16, 128, seed=s, mode=run.data.mode) for s in range(m)))
        if name in singles:
            for (model, opt), x, y in zip(singles[name], xs, ys):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in name):
                    loss = causal_lm_loss(model, x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
        else:
            st, opt = stacks[name]
            losses = Bt.batched_losses(st, torch.stack(xs), torch.stack(ys), torch.bfloat16 if "bf16" in name else None)
            losses.sum().backward()
            Bt.clip_per_model(st, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    names = [*singles, *stacks]
    spent = {k: [] for k in names}
    print(f"load {load()}")
    for i in range(n):
        for name in names:  # the variants take turns step by step
            c0 = time.process_time()
            one(name, i)
            spent[name].append((time.process_time() - c0) / m * 1000)
    for name in names:
        print(f"{name:38s} median {statistics.median(spent[name][2:]):6.1f} cpu-ms per model-step")
    print(f"load {load()}")


def check(root: Path, n_steps: int = 12) -> None:
    """Batched vs one-model trainer on bits, glyph and trainable tables, two seeds. Over longer horizons
    the two fp32 computations (different summation orders) drift apart like any two fp32 runs:
    measured at 30 steps with warmup 5, frozen bits within 4e-5, trainable tables 3e-3 to 6e-2
    (AdamW scales a rarely seen row's near-zero gradient, rounding noise included, to a step of
    about lr)."""
    runs = []
    for spec in ("bits", "glyph", "unfrozen"):
        for seed in (0, 1):
            out = root / "bench-check" / f"{spec}{seed}"
            shutil.rmtree(out, ignore_errors=True)
            r, _, _ = cell_run(root, spec, seed, out, steps=n_steps, warmup=3)
            runs.append(dataclasses.replace(r, eval=dataclasses.replace(r.eval, interval=n_steps // 2),
                                            log=dataclasses.replace(r.log, interval=3, progress=False),
                                            checkpoint=dataclasses.replace(r.checkpoint, interval=0)))
    with contextlib.redirect_stdout(io.StringIO()):
        batched = Bt.train_batched(runs, log=lambda m: None)
        single = [Trainer(dataclasses.replace(r, run=dataclasses.replace(r.run, dir=r.run.dir + "-one"))).fit()
                  for r in runs]
    worst = 0.0
    for r, b, s in zip(runs, batched, single):
        lb = [h["loss"] for h in b.history if h["event"] == "train"]
        ls = [h["loss"] for h in s.history if h["event"] == "train"]
        vb = [h["val_loss"] for h in b.history if h["event"] == "val"]
        vs = [h["val_loss"] for h in s.history if h["event"] == "val"]
        d = max(abs(x - y) for x, y in zip(lb + vb, ls + vs))
        worst = max(worst, d)
        print(f"{r.model.substrate} seed {r.train.seed}: {len(lb)} train + {len(vb)} val losses, max |diff| {d:.2e}")
    verdict = "within" if worst < 1e-3 else "NOT within"
    print(f"batched vs one-model trainer: largest difference {worst:.1e}, {verdict} the tolerance 1e-3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("phases", "profile", "steps", "check"))
    ap.add_argument("--root", required=True, type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    {"phases": phases, "profile": profile, "steps": steps, "check": check}[a.what](a.root)


if __name__ == "__main__":
    main()
