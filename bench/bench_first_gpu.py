"""The first GPU in one command: the plan of a paper recipe next to the measured step (issue 22, part 5).

On a freshly rented GPU machine, one command answers "does what ``substrate-lm plan`` promised
hold here?":

1. the plan: ``substrate_lm.training.plan.make_plan`` for the config at this machine's GPU count,
   GPU memory and GPU model (data-sheet peak), with exactly the geometry measured below
   (``--batch-size`` x ``--seq-len`` per GPU, no accumulation, the bench configuration's strategy);
   on fake tensors, before any process group exists (rank 0 only);
2. the measurement: ``bench/bench_gpu_335m.py``'s timed trainer step (chunked loss under bf16
   autocast, backward, clipping, AdamW) for each ``--configs`` entry (``eager``, ``compile``,
   ``fsdp2``, ``fsdp2-compile``), on the config's model (preset, substrate, model overrides);
3. side by side: peak memory (``torch.cuda.max_memory_allocated`` over the timed steps) against the
   plan's predicted peak with the ratio, measured tokens/s and MFU against the plan's tokens/s at
   its assumed MFU (``--mfu``, 40%), and measured step time against the plan's.

    python bench/bench_first_gpu.py                                  # paper-1024-bit on this GPU
    python bench/bench_first_gpu.py --out benchmarks/first-gpu.md    # ... and append the table
    torchrun --standalone --nproc_per_node 8 bench/bench_first_gpu.py --configs fsdp2-compile
    python bench/bench_first_gpu.py --dry-run                        # the plan alone (any machine)
    python bench/bench_first_gpu.py --device cpu --config tiny --configs eager --steps 2 --warmup 1

Without a CUDA device (and without ``--dry-run`` / ``--device cpu``) it stops with one line, exit 2.
What the plan does not model (CUDA context, cuBLAS/NCCL workspaces, fragmentation, compile) makes
the measured peak differ; ``max_memory_reserved`` is printed as well for the allocator's view.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 2**30


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu_335m", HERE / "bench_gpu_335m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Any other --section.key VALUE is a config override, as for "
                                       "`substrate-lm plan` (e.g. --model.overrides.n_layer 8).")
    p.add_argument("--config", default="paper-1024-bit", help="recipe name or TOML file (default paper-1024-bit)")
    p.add_argument("--configs", default="eager,compile",
                   help="bench configurations, comma-separated: eager, compile, fsdp2, fsdp2-compile "
                        "(default eager,compile; under torchrun with several ranks only fsdp2*)")
    p.add_argument("--batch-size", type=int, default=0, help="sequences per GPU per step (default: the config's)")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sequence (default: the config's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    p.add_argument("--mfu", type=float, default=0.4, help="the plan's assumed MFU (default 0.4)")
    p.add_argument("--headroom", type=float, default=0.10, help="the plan's headroom (default 0.10)")
    p.add_argument("--gpu", default="", help="GPU model for the plan's peak FLOP/s (default: from the device name; "
                                             "H100 with --dry-run)")
    p.add_argument("--gpu-memory", default="", help="memory of one GPU for the plan, e.g. 80GB (default: the "
                                                    "device's; 80GB with --dry-run)")
    p.add_argument("--gpus", type=int, default=0, help="GPU count for --dry-run (default: WORLD_SIZE or 1)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: check the script on a CPU (a small --config such as tiny)")
    p.add_argument("--no-search", action="store_true",
                   help="skip the plan's search for the largest micro-batch (a few more fake steps)")
    p.add_argument("--dry-run", action="store_true", help="print the plan only; no device needed")
    p.add_argument("--out", type=Path, help="append the markdown table to this file")
    p.add_argument("--json", type=Path, help="write plan, measurement and ratios as JSON")
    args, rest = p.parse_known_args(argv)
    if rest and not rest[0].startswith("--"):
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    for a in rest:
        if a.startswith("--") and "." not in a.split("=", 1)[0]:
            p.error(f"unrecognized argument {a} (config overrides are --section.key VALUE)")
    args.overrides = rest
    bench = _bench_gpu()
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in bench.ALL_CONFIGS]
    if unknown or not args.configs:
        p.error(f"unknown config(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(bench.ALL_CONFIGS)}")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 0 or args.seq_len < 0 or args.gpus < 0:
        p.error("--steps must be >= 1; --warmup, --batch-size, --seq-len and --gpus >= 0")
    return args


def strategy_of(bench_config: str) -> str:
    return "fsdp2" if bench_config.startswith("fsdp2") else "none"


def plan_key(bench_config: str, world: int) -> str:
    """The plan a bench configuration is compared with. One rank is planned unsharded whatever the
    bench runs (``plan`` plans FSDP2 only at two or more ranks; at one rank FSDP2 shards nothing)."""
    return strategy_of(bench_config) if world > 1 else "none"


def plan_config(args, strategy: str, world: int):
    """The run config planned: the recipe plus overrides, with the benchmark's geometry."""
    from substrate_lm.training.config import load_config

    base = load_config(args.config, args.overrides)
    b = args.batch_size or base.train.batch_size
    t = args.seq_len or base.train.seq_len
    extra = ["--train.batch_size", str(b), "--train.seq_len", str(t), "--train.grad_accum", "1",
             "--train.activation_checkpointing", "false"]
    if world > 1:
        extra += ["--dist.strategy", strategy]
    return load_config(args.config, list(args.overrides) + extra)


def gpu_name_for_plan(device_name: str) -> str | None:
    from substrate_lm.training.metrics import _GPU_PEAKS

    for key in _GPU_PEAKS:  # H200 before H100, A100 before A10, L40 before L4
        if key.lower() in device_name.lower():
            return key
    return None


def make_plans(args, world: int, gpu: str | None, peak_tflops: float | None, gpu_memory: int) -> dict:
    from substrate_lm.training.plan import make_plan

    plans = {}
    for c in args.configs:
        if world > 1 and not c.startswith("fsdp2"):
            continue  # not measured either: several ranks run sharded only
        strat = plan_key(c, world)
        if strat in plans:
            continue
        cfg = plan_config(args, strat, world)
        plans[strat] = make_plan(cfg, world, gpu_memory, strategy=strat if world > 1 else None,
                                 gpu=gpu or "H100", peak_tflops=peak_tflops, mfu=args.mfu,
                                 headroom=args.headroom, search=not args.no_search)
    if not plans and args.dry_run:  # e.g. --dry-run --gpus 8 with eager,compile: the config's own strategy
        from substrate_lm.training.config import load_config

        base = load_config(args.config, args.overrides)
        cfg = plan_config(args, base.dist.strategy if base.dist.strategy != "none" else "ddp", world)
        plans["config"] = make_plan(cfg, world, gpu_memory, gpu=gpu or "H100", peak_tflops=peak_tflops,
                                    mfu=args.mfu, headroom=args.headroom, search=not args.no_search)
    return plans


def compare(plan, row: dict) -> dict:
    """Measured vs planned, with ratios (measured / plan)."""
    planned_peak = plan.memory.peak / GIB
    planned_tok = plan.tokens_per_step / plan.step_time
    out = {"config": row["config"], "strategy": plan.strategy, "world_size": row["world_size"],
           "plan_peak_gib": planned_peak, "measured_peak_gib": row.get("peak_mem_gib"),
           "measured_reserved_gib": row.get("reserved_mem_gib"),
           "peak_ratio": (row["peak_mem_gib"] / planned_peak) if row.get("peak_mem_gib") else None,
           "plan_mfu": plan.mfu, "measured_mfu": row.get("mfu"),
           "plan_tokens_per_s": planned_tok, "measured_tokens_per_s": row["tokens_per_s"],
           "tokens_ratio": row["tokens_per_s"] / planned_tok,
           "plan_step_s": plan.step_time, "measured_step_s": row["median_step_s"],
           "plan_fits": plan.memory.peak <= plan.usable}
    return out


def table(rows: list[dict]) -> str:
    head = ("| config | peak GiB plan | peak GiB measured (reserved) | measured/plan | tokens/s plan "
            "(at plan MFU) | tokens/s measured | measured/plan | MFU plan | MFU measured | step s plan | "
            "step s measured |\n|---|---|---|---|---|---|---|---|---|---|---|\n")

    def f(v, spec):
        return "n/a" if v is None else format(v, spec)

    lines = []
    for r in rows:
        meas_mem = f(r["measured_peak_gib"], ".2f") + (f" ({r['measured_reserved_gib']:.2f})"
                                                        if r.get("measured_reserved_gib") else "")
        lines.append(f"| {r['config']} ({r['strategy']}, x{r['world_size']}) | {r['plan_peak_gib']:.2f} | {meas_mem} | "
                     f"{f(r['peak_ratio'], '.2f')} | {r['plan_tokens_per_s']:,.0f} | {r['measured_tokens_per_s']:,.0f} | "
                     f"{r['tokens_ratio']:.2f} | {100 * r['plan_mfu']:.0f}% | "
                     f"{f(None if r['measured_mfu'] is None else 100 * r['measured_mfu'], '.1f')}% | "
                     f"{r['plan_step_s']:.3f} | {r['measured_step_s']:.3f} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not args.dry_run and not any(c.startswith("fsdp2") for c in args.configs):
        print(f"error: {world} ranks run only the sharded configurations; pass --configs fsdp2-compile "
              "(or fsdp2)", file=sys.stderr)
        return 2
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = args.device == "cuda" and not args.dry_run
    if cuda and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device visible"
        print(f"error: no CUDA device (torch {torch.__version__}, {build}): this benchmark needs a GPU; use "
              "--dry-run for the plan alone or --device cpu --config tiny to check the script", file=sys.stderr)
        return 2
    from substrate_lm.errors import SubstrateError
    from substrate_lm.training.plan import format_plan, parse_memory

    try:
        if cuda:
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            device_name = torch.cuda.get_device_name(device)
            gpu = args.gpu or gpu_name_for_plan(device_name)
            gpu_memory = parse_memory(args.gpu_memory) if args.gpu_memory else \
                torch.cuda.get_device_properties(device).total_memory
            peak_tflops = None
        elif args.dry_run:
            device, device_name = None, "(dry run)"
            world = args.gpus or world
            gpu = args.gpu or "H100"
            gpu_memory = parse_memory(args.gpu_memory or "80GB")
            peak_tflops = None
        else:  # --device cpu: a check of the script; the CPU's own peak and memory
            from substrate_lm.training.metrics import peak_flops

            device = torch.device("cpu")
            device_name = platform.processor() or "cpu"
            gpu = None
            gpu_memory = parse_memory(args.gpu_memory) if args.gpu_memory else \
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            peak_tflops = (peak_flops(device, "bf16") or 1e12) / 1e12
        if cuda and gpu is None:
            from substrate_lm.training.metrics import peak_flops

            pk = peak_flops(device, "bf16")
            if not pk:
                print(f"error: no data-sheet peak for {device_name}; pass --gpu H100 (or A100, ...)", file=sys.stderr)
                return 2
            peak_tflops = pk / 1e12

        plans = {}
        if rank == 0:  # before any real process group: the plan brings its own fake one
            t0 = time.perf_counter()
            plans = make_plans(args, world, gpu, peak_tflops, gpu_memory)
            for strat, plan in plans.items():
                print(format_plan(plan), flush=True)
            print(f"[plan: {time.perf_counter() - t0:.1f} s]", flush=True)
    except SubstrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        if args.json:
            args.json.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in plans.items()}, indent=2))
        return 0

    bench = _bench_gpu()
    import torch.distributed as dist

    base = plan_config(args, "none", 1)
    bargs = argparse.Namespace(preset=base.model.preset, substrate=base.model.substrate or None,
                               overrides=dict(base.model.overrides) or None, batch_size=base.train.batch_size,
                               seq_len=base.train.seq_len, steps=args.steps, warmup=args.warmup,
                               precision=base.train.precision if base.train.precision in ("bf16", "fp32") else "fp32",
                               configs=args.configs, smoke=False)
    if any(c.startswith("fsdp2") for c in args.configs) or world > 1:
        bench.init_process_group(device)
    rows, compared = [], []
    for c in args.configs:
        if world > 1 and not c.startswith("fsdp2"):
            continue  # several ranks only make sense sharded (as bench_gpu_335m)
        if device.type == "cpu" and "compile" in c:
            print(f"skipping {c} on the CPU check", flush=True)
            continue
        row = bench.run_config(bargs, c, device)
        if device.type == "cuda":
            row["reserved_mem_gib"] = torch.cuda.max_memory_reserved(device) / GIB
        rows.append(row)
        if rank == 0:
            strat = plan_key(c, world)
            compared.append(compare(plans[strat], row))
            print(json.dumps(compared[-1]), flush=True)
    if rank == 0 and compared:
        md = (f"\n## {datetime.date.today().isoformat()}: first GPU: {args.config} on {device_name} x {world}, "
              f"{bargs.precision}, micro-batch {bargs.batch_size} x {bargs.seq_len}, median of {args.steps} steps\n\n"
              f"torch {torch.__version__}; plan: fake tensors, {gpu or f'{peak_tflops:g} TFLOP/s'} peak, "
              f"{gpu_memory / 1e9:.0f} GB, headroom {args.headroom:.0%}; command: "
              f"`{' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}`\n\n" + table(compared))
        bench.write_results(md, args.out, args.json,
                            {"device": device_name, "world_size": world, "rows": rows, "compared": compared,
                             "plans": {k: dataclasses.asdict(v) for k, v in plans.items()}})
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
