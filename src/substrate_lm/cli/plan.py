"""``substrate-lm plan``: per-GPU memory and throughput of a training config, from a fake-tensor step.

    substrate-lm plan --config paper-1024-bit --gpus 8 --gpu-memory 80GB
    substrate-lm plan --config paper-1024-bit --gpus 8 --gpu-memory 80GB --dist.strategy fsdp2
    substrate-lm plan --config small --gpus 64 --gpu-memory 80GiB --model.overrides.n_layer 48

The model is built and wrapped as the trainer does and one training step runs on fake tensors
under a fake process group of ``--gpus`` ranks (see :mod:`substrate_lm.training.plan`).
"""

from __future__ import annotations

import json

from .common import add_runtime_args, add_settings_args, apply_threads, positive_float, positive_int, settings_overrides


def register(subparsers) -> None:
    """Add ``plan`` to the ``substrate-lm`` command."""
    p = subparsers.add_parser(
        "plan",
        help="per-GPU memory, largest micro-batch and step time of a config (fake-tensor step)",
        description="Build the config's model, wrap it as the trainer does (FSDP2/DDP, activation "
                    "checkpointing as configured, compile off), and run one training step on fake "
                    "tensors with a fake process group of --gpus ranks, measuring each rank's "
                    "memory with torch's FSDPMemTracker. Prints params / grads / optimizer state / "
                    "activations / peak per rank, the largest micro-batch that fits, tokens per "
                    "step, FLOPs per token and the step time at --mfu. Any config key can be "
                    "overridden as --section.key VALUE (e.g. --dist.strategy fsdp2).",
    )
    add_settings_args(p)
    p.add_argument("--config", metavar="RECIPE|FILE", help="recipe name or TOML file")
    p.add_argument("--gpus", type=positive_int, default=1, metavar="N",
                   help="number of GPUs (data-parallel ranks); default 1")
    p.add_argument("--gpu-memory", default="80GB", metavar="SIZE",
                   help="memory of one GPU: 80GB (decimal) or 80GiB (binary); default 80GB")
    p.add_argument("--gpu", default="H100", metavar="NAME",
                   help="GPU whose data-sheet peak FLOP/s sets the step time (H100, A100, ...)")
    p.add_argument("--peak-tflops", type=positive_float, default=None, metavar="TFLOPS",
                   help="peak TFLOP/s of one GPU, instead of --gpu's data sheet")
    p.add_argument("--mfu", type=float, default=0.4, metavar="FRACTION",
                   help="model FLOPs utilisation assumed for the step time; default 0.4")
    p.add_argument("--headroom", type=float, default=0.10, metavar="FRACTION",
                   help="share of GPU memory kept free for the CUDA context, workspaces and "
                        "fragmentation (not modelled); default 0.10")
    p.add_argument("--no-search", action="store_true",
                   help="skip the search for the largest micro-batch (one fake step only)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_runtime_args(p, device=False)  # fake tensors on the CPU: threads only
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    import dataclasses

    from ..errors import SubstrateError
    from ..training.config import describe_config, load_config
    from ..training.plan import format_plan, make_plan, parse_memory

    overrides = settings_overrides(args)
    if args.help_config:
        print(describe_config(load_config(args.config, overrides) if args.config else None))
        return 0
    if not args.config:
        raise SubstrateError("pass --config RECIPE|FILE (recipes: tiny, small, paper-1024-bit, ...)")
    memory = parse_memory(args.gpu_memory)
    apply_threads(args)
    cfg = load_config(args.config, overrides)
    plan = make_plan(cfg, args.gpus, memory, gpu=args.gpu, peak_tflops=args.peak_tflops,
                     mfu=args.mfu, headroom=args.headroom, search=not args.no_search)
    if args.json:
        print(json.dumps(dataclasses.asdict(plan), indent=2))
    else:
        print(format_plan(plan))
    return 0

