"""GPU training throughput and MFU of the 335M paper preset (Model_1024_BIT) under bf16, compile, FSDP2.

One prepared script for a lent GPU machine: it builds the ``1024-bit`` preset (d_model 1024, 16 layers,
32 heads, vocab 65,536, frozen 1024-bit table, untied head), wraps it the way the trainer does
(``training.distributed.parallelize``: per-block ``torch.compile``, then FSDP2 ``fully_shard`` on every
block and the root), and times the trainer's step (``training.causal_lm_loss`` with the chunked loss under
bf16 autocast, backward, gradient clipping, ``training.build_optimizer``'s AdamW) on random tokens.

It reports tokens/s, MFU (model FLOPs per token from ``training.metrics.flops_per_token`` against the
device's bf16 data-sheet peak from ``training.metrics.peak_flops``), step time and peak memory, for each
configuration in one run, and appends a dated row to a results file when ``--out`` is given.

    # one GPU (FSDP2 runs on a one-rank process group, so its overhead is measured too):
    python bench/bench_gpu_335m.py --out benchmarks/2026-11-30-gpu-335m.md
    # several GPUs:
    torchrun --standalone --nproc_per_node 8 bench/bench_gpu_335m.py --configs fsdp2-compile
    # a CPU smoke run of the script itself (tiny preset, seconds):
    python bench/bench_gpu_335m.py --smoke

Configurations (``--configs``, comma-separated): ``eager`` (no compile, no sharding), ``compile``
(per-block compile), ``fsdp2`` and ``fsdp2-compile`` (the paper recipes' setting).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ALL_CONFIGS = ("eager", "compile", "fsdp2", "fsdp2-compile")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="1024-bit", help="model preset (default: the 335M Model_1024_BIT)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per GPU per step")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    p.add_argument("--configs", default="eager,compile,fsdp2-compile")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--out", type=Path, help="append the results table (markdown) to this file")
    p.add_argument("--json", type=Path, help="write the raw results as JSON")
    p.add_argument("--smoke", action="store_true", help="CPU check of the script: tiny preset, 2 steps, no compile")
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in ALL_CONFIGS]
    if bad:
        p.error(f"unknown config(s) {', '.join(bad)}; choose from {', '.join(ALL_CONFIGS)}")
    if min(args.batch_size, args.seq_len, args.steps) < 1 or args.warmup < 0:
        p.error("--batch-size, --seq-len and --steps must be >= 1 and --warmup >= 0")
    if args.smoke:
        args.preset, args.batch_size, args.seq_len, args.steps, args.warmup = "tiny", 2, 32, 2, 1
        args.configs = [c for c in args.configs if "compile" not in c] or ["eager"]
    return args


def init_process_group(device: torch.device) -> tuple[int, int]:
    """A process group for FSDP2: torchrun's when launched by it, else a one-rank group on this host."""
    if not dist.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def build(args, config: str, device: torch.device):
    from substrate_lm.factory import build_model
    from substrate_lm.training.distributed import DistContext, parallelize
    from substrate_lm.training.optim import build_optimizer

    # substrate / overrides: set by bench_first_gpu.py from a run config (None here: the preset as is)
    model = build_model(args.preset, getattr(args, "substrate", None) or None, seed=0,
                        overrides=getattr(args, "overrides", None) or None).to(device)
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    strategy = "fsdp2" if config.startswith("fsdp2") else "none"
    ctx = DistContext(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                      device=device, strategy=strategy)
    train_model = parallelize(model, ctx, compile="compile" in config)
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    return model, train_model, opt


def run_config(args, config: str, device: torch.device) -> dict:
    from substrate_lm.training.metrics import flops_per_token, peak_flops
    from substrate_lm.components.loss import causal_lm_loss

    torch.manual_seed(0)
    model, train_model, opt = build(args, config, device)
    vocab = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(1 + (dist.get_rank() if dist.is_initialized() else 0))
    data = torch.randint(0, vocab, (args.warmup + args.steps, args.batch_size, args.seq_len + 1), generator=g)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step(i: int) -> float:
        batch = data[i].to(device, non_blocking=True)
        x, y = batch[:, :-1], batch[:, 1:]
        with autocast:
            loss = causal_lm_loss(train_model, x, y, chunked=True, signature_of=model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t_compile = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    sync()
    warm_s = time.perf_counter() - t_compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for i in range(args.warmup, args.warmup + args.steps):
        t0 = time.perf_counter()
        losses.append(step(i))  # float() syncs: every step is timed to completion
        sync()
        times.append(time.perf_counter() - t0)
    world = dist.get_world_size() if dist.is_initialized() else 1
    step_s = statistics.median(times)
    tok_s = args.batch_size * args.seq_len * world / step_s
    fpt = flops_per_token(model, args.seq_len)
    peak = peak_flops(device, args.precision) * world
    row = {
        "config": config,
        "world_size": world,
        "median_step_s": step_s,
        "tokens_per_s": tok_s,
        "tokens_per_s_per_gpu": tok_s / world,
        "mfu": (fpt * tok_s / peak) if peak else None,
        "flops_per_token": fpt,
        "warmup_s": warm_s,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "peak_mem_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
        "params": sum(p.numel() for p in model.parameters()),
    }
    del model, train_model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "compile" in config:
        torch._dynamo.reset()
    return row


def markdown(args, rows: list[dict], device_name: str) -> str:
    head = (f"\n## {datetime.date.today().isoformat()}: {args.preset} on {device_name} x {rows[0]['world_size']}, "
            f"{args.precision}, batch {args.batch_size} x {args.seq_len} per GPU, median of {args.steps} steps\n\n"
            f"torch {torch.__version__}, python {platform.python_version()}; "
            f"command: `{' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}`\n\n"
            "| config | tokens/s (all GPUs) | tokens/s per GPU | MFU | step s | peak mem GiB | warmup s | loss first -> last |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    base = rows[0]["tokens_per_s"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
        lines.append(f"| {r['config']} ({r['tokens_per_s'] / base:.2f}x) | {r['tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s_per_gpu']:,.0f} | {mfu} | {r['median_step_s']:.3f} | {mem} | "
                     f"{r['warmup_s']:.0f} | {r['first_loss']:.3f} -> {r['last_loss']:.3f} |")
    return head + "\n".join(lines) + "\n"


def write_results(md: str, out: Path | None, json_path: Path | None, record: dict) -> None:
    """Print the markdown table, append it to ``out`` and write ``record`` as JSON to ``json_path``
    (either may be None). Rank 0 only."""
    print(md)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(md)
    if json_path:
        json_path.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() and not args.smoke \
        else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif not args.smoke:
        print("error: no CUDA device; this benchmark is for a GPU machine (use --smoke to check the script on a CPU)",
              file=sys.stderr)
        return 2
    if any(c.startswith("fsdp2") for c in args.configs) or "WORLD_SIZE" in os.environ:
        init_process_group(device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    rows = []
    for config in args.configs:
        if dist.is_initialized() and dist.get_world_size() > 1 and not config.startswith("fsdp2"):
            continue  # several ranks only make sense sharded
        row = run_config(args, config, device)
        rows.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
    if rank == 0 and rows:
        write_results(markdown(args, rows, device_name), args.out, args.json,
                      {"device": device_name, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
