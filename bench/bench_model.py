"""Model benchmark: SubstrateForCausalLM vs transformers' GPTNeoXForCausalLM of the same shape.

Same process, same weights (converted with ``substrate_lm.convert.to_gpt_neox``), same inputs:

* training step: forward + backward tokens/s (ours with the chunked fused loss, the reference with
  ``labels=`` as HF models are trained); the reference's widened embedding is frozen like ours;
* generation: greedy ``generate`` tokens/s, batch 1, 128 new tokens, KV cache on;
* in fp32 and under bf16 autocast; peak RSS growth of one training step (fresh subprocess each).

    python bench/bench_model.py [--preset small] [--batch 8] [--seq 256] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time

import torch

from substrate_lm.convert import to_gpt_neox
from substrate_lm.modeling import SubstrateForCausalLM
from substrate_lm.presets import get_preset


def build(preset: str, seed: int = 0):
    torch.manual_seed(seed)
    ours = SubstrateForCausalLM(get_preset(preset))
    table = (torch.rand(ours.config.vocab_size, ours.config.n_embed) > 0.5).float()
    ours.set_substrate(table, kind="bits")
    ref = to_gpt_neox(ours)
    ref.gpt_neox.embed_in.weight.requires_grad_(False)  # frozen like ours: compare implementations
    return ours, ref


def autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, x, precision, ours: bool):
    with autocast(precision):
        if ours:
            loss = model(x, labels=x, return_logits=False).loss
        else:
            loss = model(x, labels=x).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.item()


def time_train(model, x, precision, ours, repeats):
    model.train()
    train_step(model, x, precision, ours)  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        train_step(model, x, precision, ours)
        ts.append(time.perf_counter() - t0)
    return x.numel() / min(ts)


@torch.no_grad()
def time_generate(model, prompt, precision, new_tokens, repeats):
    model.eval()
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with autocast(precision):
        model.generate(prompt, **kw)  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model.generate(prompt, **kw)
            ts.append(time.perf_counter() - t0)
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return new_tokens / min(ts)


def peak_rss_child(args, which: str, precision: str) -> float:
    """Peak RSS growth (MiB) of one training step, in a fresh process (Linux: VmHWM reset)."""
    code = f"""
import sys, torch
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import bench_model as b
ours, ref = b.build({args.preset!r})
m = ours if {which!r} == 'ours' else ref
del ours, ref
x = torch.randint(0, m.config.vocab_size, ({args.batch}, {args.seq}))
b.train_step(m, x, {precision!r}, {which!r} == 'ours')  # allocator warm-up
import gc; gc.collect()
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1])
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # reset the high-water mark to the current RSS
base = status('VmRSS:')
b.train_step(m, x, {precision!r}, {which!r} == 'ours')
print((status('VmHWM:') - base) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    ours, ref = build(args.preset)
    x = torch.randint(0, ours.config.vocab_size, (args.batch, args.seq))
    prompt = torch.randint(0, ours.config.vocab_size, (1, 16))
    rows = []
    for precision in ("fp32", "bf16"):
        tr_o = time_train(ours, x, precision, True, args.repeats)
        tr_r = time_train(ref, x, precision, False, args.repeats)
        ge_o = time_generate(ours, prompt, precision, args.new_tokens, args.repeats)
        ge_r = time_generate(ref, prompt, precision, args.new_tokens, args.repeats)
        mem_o = peak_rss_child(args, "ours", precision)
        mem_r = peak_rss_child(args, "ref", precision)
        rows.append(
            dict(
                precision=precision,
                train_tok_s_ours=tr_o,
                train_tok_s_ref=tr_r,
                train_ratio=tr_o / tr_r,
                gen_tok_s_ours=ge_o,
                gen_tok_s_ref=ge_r,
                gen_ratio=ge_o / ge_r,
                step_peak_mib_ours=mem_o,
                step_peak_mib_ref=mem_r,
                mem_ratio=mem_o / mem_r if mem_r > 0 else float("nan"),
            )
        )
        r = rows[-1]
        print(
            f"{precision}: train {tr_o:,.0f} vs {tr_r:,.0f} tok/s (x{r['train_ratio']:.2f}) | "
            f"generate {ge_o:,.1f} vs {ge_r:,.1f} tok/s (x{r['gen_ratio']:.2f}) | "
            f"step peak RSS {mem_o:,.0f} vs {mem_r:,.0f} MiB (x{r['mem_ratio']:.2f})",
            flush=True,
        )
    info = dict(
        preset=args.preset,
        batch=args.batch,
        seq=args.seq,
        new_tokens=args.new_tokens,
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        rows=rows,
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
