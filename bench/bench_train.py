"""Training throughput, MFU and peak memory: our trainer + model vs the same loop around GPT-NeoX.

Both models have the `small` preset's shape (d_model 256, 4 layers, 8 heads, context 256, vocab
65,536, full rotary, sequential residual, exact GELU, untied head) and a frozen input table. The
loop is the trainer's: ``training.causal_lm_loss`` under bf16 autocast or fp32, backward, gradient
clipping, ``training.build_optimizer`` (AdamW). The differences are the model implementation and
the loss: ours uses the chunked loss (``return_logits=False``, 1024 rows per chunk, the model's
default), GPT-NeoX the usual full ``B x T x 65,536`` fp32 logits + cross-entropy.

Speed: every configuration lives in this one process and they take turns step by step (A B C ...
A B C ...), so load from other jobs on a shared machine hits all of them alike; the median step
time counts. Memory: each configuration runs the real ``Trainer.fit`` in its own subprocess; the
figure is the peak resident memory (VmHWM, reset after the warmup steps created the optimizer
state) minus the resident memory at the reset, i.e. what one training step adds on top of the
weights and optimizer state: activations, logits, loss and gradients.

    .venv/bin/python bench/bench_train.py                 # prints the table and the ratios
    .venv/bin/python bench/bench_train.py --out benchmarks/2026-11-28-training.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model as cpu_name  # bench/machine.py

CONFIGS = [
    # name, model, precision, extra trainer overrides
    ("ours", "ours", "fp32", {}),
    ("gpt-neox", "neox", "fp32", {}),
    ("ours", "ours", "bf16", {}),
    ("gpt-neox", "neox", "bf16", {}),
    ("ours, full-logits loss", "ours", "fp32", {"train.chunked_loss": False}),
    ("ours, loss chunk 4096 rows", "ours", "fp32", {"train.loss_chunk_size": 4096}),
    ("ours, loss chunk 4096 rows", "ours", "bf16", {"train.loss_chunk_size": 4096}),
]


class RandomTokens:
    """An in-memory split with the TokenShards batch contract (uniform random ids)."""

    def __init__(self, n: int, vocab: int, seed: int):
        import torch

        self.tokens = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.tokens)

    def get_batch(self, step, batch_size, seq_len, seed=0, mode="random", rank=0, world_size=1):
        import torch

        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        starts = torch.randint(0, len(self.tokens) - seq_len - 1, (batch_size,), generator=g)
        win = torch.stack([self.tokens[s: s + seq_len + 1] for s in starts.tolist()])
        return win[:, :-1].contiguous(), win[:, 1:].contiguous()


def make_model(kind: str):
    """Our `small` model, or GPT-NeoX configured to the same shape and math (frozen table both)."""
    import torch

    from substrate_lm.factory import build_model

    torch.manual_seed(0)
    ours = build_model("small", seed=0)
    if kind == "ours":
        return ours
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    c = ours.config
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, intermediate_size=c.mlp_ratio * c.d_model,
        max_position_embeddings=c.block_size, rotary_pct=1.0, rope_theta=c.rope_theta,
        use_parallel_residual=False, hidden_act="gelu", layer_norm_eps=c.norm_eps,
        attention_bias=False, tie_word_embeddings=False, attn_implementation="sdpa"))
    model.gpt_neox.embed_in.weight.requires_grad_(False)  # frozen table, as ours
    return model


# ----------------------------------------------------------------------------------------------
# speed: all configurations in this process, taking turns


class Runner:
    """One configuration's inner training loop (the trainer's loss, clipping and optimizer)."""

    def __init__(self, kind: str, precision: str, extra: dict, data: RandomTokens, batch: int,
                 seq: int):
        import torch

        from substrate_lm.training import build_optimizer, flops_per_token, load_config

        cfg = load_config("small", extra)
        self.model = make_model(kind)
        if cfg.train.loss_chunk_size and hasattr(self.model.config, "loss_chunk_size"):
            self.model.config.loss_chunk_size = cfg.train.loss_chunk_size
        self.model.train()
        self.chunked = cfg.train.chunked_loss
        self.bf16 = precision == "bf16"
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(self.model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
        self.data, self.batch, self.seq = data, batch, seq
        self.fpt = flops_per_token(self.model, seq)
        self.times: list[float] = []
        self.torch = torch

    def step(self, i: int, record: bool) -> None:
        from substrate_lm.training import causal_lm_loss

        torch = self.torch
        x, y = self.data.get_batch(i, self.batch, self.seq)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = causal_lm_loss(self.model, x, y, chunked=self.chunked)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        float(loss.detach())
        if record:
            self.times.append(time.perf_counter() - t0)


def measure_speed(args) -> list[dict]:
    from substrate_lm.training import peak_flops

    data = RandomTokens(1 << 20, 65536, 0)
    runners = [Runner(kind, prec, extra, data, args.batch, args.seq)
               for _, kind, prec, extra in CONFIGS]
    for i in range(args.warmup + args.steps):
        for r in runners:  # round robin: load spikes hit every configuration alike
            r.step(i, record=i >= args.warmup)
    out = []
    for (_, _, prec, _), r in zip(CONFIGS, runners):
        step = statistics.median(r.times)
        tok_s = args.batch * args.seq / step
        peak = peak_flops("cpu", prec)
        out.append({"step_s": step, "tok_s": tok_s, "mfu": r.fpt * tok_s / peak, "peak_flops": peak})
    return out


# ----------------------------------------------------------------------------------------------
# memory: the real Trainer, one subprocess per configuration


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (Linux >= 4.0: ``5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """VmHWM: the peak resident memory since start or since :func:`reset_peak_rss`."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def memory_worker(kind: str, precision: str, extra: dict, args) -> dict:
    from substrate_lm.training import RunData, Trainer, load_config

    model = make_model(kind)
    data = RunData(train=RandomTokens(1 << 20, model.config.vocab_size, 0), val=None)
    cfg = load_config("small", {
        "run.dir": tempfile.mkdtemp(prefix="bench-train-"), "train.steps": args.warmup + 2,
        "train.batch_size": args.batch, "train.seq_len": args.seq, "train.precision": precision,
        "checkpoint.interval": 0, "eval.interval": 0, "log.interval": 1, "log.jsonl": False,
        "log.tensorboard": False, "log.progress": False, "log.sample_prompts": [],
        "data.world": "", **extra})
    base = {"rss": rss_bytes(), "reset": False}

    def on_record(rec: dict) -> None:
        if rec["event"] != "train":
            return
        if rec["step"] == args.warmup:
            # optimizer state exists now: measure only what a training step adds on top
            base["reset"] = reset_peak_rss()
            base["rss"] = rss_bytes()
        if rec["step"] == args.warmup + 2:
            raise StopIteration  # measured: skip the final checkpoint

    try:
        Trainer(cfg, model=model, data=data, callbacks=[on_record]).fit()
    except StopIteration:
        pass
    return {"peak_extra": peak_rss_bytes() - base["rss"], "reset": base["reset"]}


def measure_memory(args) -> list[dict]:
    out = []
    for name, kind, prec, extra in CONFIGS:
        cmd = [sys.executable, __file__, "--memory-worker", kind, prec, json.dumps(extra),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            sys.exit(f"{name} {prec} failed:\n{proc.stderr[-3000:]}")
        out.append(json.loads(line[0][7:]))
    return out



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--out", default=None, help="write a markdown report here")
    ap.add_argument("--memory-worker", nargs=3, metavar=("MODEL", "PRECISION", "EXTRA_JSON"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        kind, prec, extra = args.memory_worker
        print("RESULT " + json.dumps(memory_worker(kind, prec, json.loads(extra), args)))
        return

    import torch
    import transformers

    t0 = time.time()
    load0 = os.getloadavg()[0]
    mem = measure_memory(args)
    speed = measure_speed(args)
    load1 = os.getloadavg()[0]
    rows = [(name, prec, {**s, **m}) for (name, _, prec, _), s, m in zip(CONFIGS, speed, mem)]

    def get(name, prec):
        return next(r for n, p, r in rows if n == name and p == prec)

    lines = [
        "# Training step: our trainer + model vs the same loop around GPTNeoXForCausalLM",
        "",
        f"Date: 2026-11-28. CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}. torch {torch.__version__}, transformers "
        f"{transformers.__version__}, Python {platform.python_version()}. Load average "
        f"{load0:.1f} at start, {load1:.1f} at end (a shared machine: absolute numbers are noisy; "
        f"the configurations take turns step by step, so the ratios are fair).",
        "",
        f"Shape: the `small` preset (d_model 256, 4 layers, 8 heads, vocab 65,536, untied head, "
        f"frozen table); GPT-NeoX with full rotary, sequential residual, GELU, untied head. Batch "
        f"{args.batch} x {args.seq} tokens; loss, backward, clipping and AdamW as in "
        f"`substrate_lm.training.Trainer`; median of {args.steps} steps after {args.warmup} warmup "
        f"steps. Peak extra memory: real `Trainer.fit` runs, one subprocess each, peak RSS (VmHWM, "
        f"reset once the optimizer state exists) minus RSS at the reset. MFU: 6N+12LHQT "
        f"FLOPs/token over the CPU peak estimate of `training.metrics.peak_flops` (fp32 "
        f"{rows[0][2]['peak_flops'] / 1e9:.0f} GFLOP/s; bf16 {rows[2][2]['peak_flops'] / 1e9:.0f} "
        f"GFLOP/s assumes AMX at full rate, so bf16 MFU reads low).",
        "",
        "| model | precision | tokens/s | step (s) | MFU | peak extra memory (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, prec, r in rows:
        lines.append(f"| {name} | {prec} | {r['tok_s']:.0f} | {r['step_s']:.3f} | "
                     f"{100 * r['mfu']:.1f}% | {r['peak_extra'] / 2**20:.0f} |")
    lines += ["", "| ratio (ours / GPT-NeoX) | tokens/s | peak memory |", "|---|---:|---:|"]
    for prec in ("fp32", "bf16"):
        a, b = get("ours", prec), get("gpt-neox", prec)
        lines.append(f"| {prec} | {a['tok_s'] / b['tok_s']:.2f}x | "
                     f"{a['peak_extra'] / b['peak_extra']:.2f}x |")
    a, b = get("ours", "fp32"), get("ours, full-logits loss", "fp32")
    big = [get("ours, loss chunk 4096 rows", p) for p in ("fp32", "bf16")]
    lines += [
        "",
        f"The chunked loss alone (ours fp32, chunked vs full logits): {a['tok_s'] / b['tok_s']:.2f}x "
        f"tokens/s, {a['peak_extra'] / b['peak_extra']:.2f}x peak memory.",
        f"Chunks of 4096 rows (`--train.loss_chunk_size 4096`; here one chunk per batch) instead of "
        f"the default 1024 rows: fp32 {big[0]['tok_s'] / get('gpt-neox', 'fp32')['tok_s']:.2f}x "
        f"tokens/s and {big[0]['peak_extra'] / get('gpt-neox', 'fp32')['peak_extra']:.2f}x peak "
        f"memory of GPT-NeoX; bf16 {big[1]['tok_s'] / get('gpt-neox', 'bf16')['tok_s']:.2f}x and "
        f"{big[1]['peak_extra'] / get('gpt-neox', 'bf16')['peak_extra']:.2f}x.",
        "",
        f"Aim: >= 1.3x tokens/s at equal precision and <= 0.6x peak memory. Bench time "
        f"{time.time() - t0:.0f} s. Rerun: `.venv/bin/python bench/bench_train.py`.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
