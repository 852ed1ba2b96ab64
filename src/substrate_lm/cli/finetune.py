"""``substrate-lm finetune``: full or LoRA fine-tuning of an exported model.

    substrate-lm finetune --model models/tiny --data sft.jsonl --out runs/sft --steps 300
    substrate-lm finetune --model models/tiny --data data/world --out runs/ft --lora --lora-r 16
    substrate-lm finetune --out runs/sft --resume                 # model, data, LoRA from the record
    substrate-lm finetune ... --train.grad_accum 4 --eval.interval 100   # any train config key
    substrate-lm finetune ... --lora --lora.r 16 --lora.targets qkv,fc   # the [lora] keys too

The run folder gets the trainer's files, ``finetune.json`` and, at the end, ``model/`` (LoRA
merged), loadable by ``generate``/``eval`` and ``from_pretrained(..., trust_remote_code=True)``.
"""

from __future__ import annotations

import sys

from .common import (add_runtime_args, add_settings_args, check_model_folder, fraction, nonneg_float, nonneg_int,
                     positive_float, positive_int, refuse_shortcut_clash, settings_overrides)

#: the [lora] keys (also as --lora-KEY shortcut flags)
LORA_KEYS = ("r", "alpha", "dropout", "targets")
#: shortcut flag -> RunConfig key
SHORTCUTS = {
    "steps": "train.steps", "lr": "train.lr", "batch_size": "train.batch_size", "seq_len": "train.seq_len",
    "warmup": "train.warmup", "seed": "train.seed", "val_fraction": "data.val_fraction",
    "device": "run.device", "threads": "run.threads",
}


def register(subparsers) -> None:
    """Add ``finetune`` to the ``substrate-lm`` command."""
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune an exported model (full or LoRA) on instructions or prepared data",
        description="Fine-tune a substrate-lm model folder on a JSONL file of {\"prompt\", \"response\"} "
                    "(the prompt is masked, the response + eos learned) or {\"text\"} records, or on a "
                    "prepared data folder. Trains through the same trainer as `train` (resumable "
                    "checkpoints; any config key as --section.key VALUE, LoRA ones as --lora.key VALUE; "
                    "see --help-config), "
                    "then exports RUN_DIR/model with LoRA merged.",
    )
    add_settings_args(p)
    p.add_argument("--model", metavar="DIR", help="exported model folder (with its tokenizer)")
    p.add_argument("--data", metavar="SRC", help="instruction JSONL file or prepared data folder")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="run folder: new or empty (or, with --resume, the run to continue)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint (--model/--data optional)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters on every block instead of all weights")
    p.add_argument("--lora-r", type=positive_int, default=None, metavar="R", help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=positive_float, default=None, metavar="A", help="LoRA alpha (default 16)")
    p.add_argument("--lora-dropout", type=unit_interval_open, default=None, metavar="P",
                   help="dropout on the LoRA input (default 0)")
    p.add_argument("--lora-targets", default=None, metavar="NAMES",
                   help="comma-separated block linears to adapt (default qkv,proj,fc)")
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default 200)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default 1e-4; 1e-3 with --lora); the final one is a tenth of it")
    p.add_argument("--batch-size", type=positive_int, default=None, help="rows per micro-batch (default 8)")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="tokens per row; longer examples are cut (default: min(256, context))")
    p.add_argument("--warmup", type=nonneg_int, default=None, help="warmup steps (default 20)")
    p.add_argument("--val-fraction", type=fraction, default=None,
                   help="share of JSONL examples held out for validation (default 0.05, at least one)")
    p.add_argument("--seed", type=nonneg_int, default=None, help="seed of the split, batches and LoRA init")
    add_runtime_args(p, settings="run", cuda_index=False)
    p.set_defaults(func=cmd_finetune)


def unit_interval_open(text: str) -> float:
    """A number in [0, 1)."""
    import argparse

    value = nonneg_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _split_overrides(args) -> tuple[list[str], dict[str, str]]:
    """``(RunConfig overrides, [lora] values)`` of the command line, shortcut flags included.

    Raises:
        SubstrateError: a shortcut flag given together with the key it sets (``--lr`` and
            ``--train.lr``, ``--lora-r`` and ``--lora.r``).
    """
    from ..training.config import parse_override_args

    raw = settings_overrides(args)
    shortcuts = {f"--{flag.replace('_', '-')}": key for flag, key in SHORTCUTS.items() if getattr(args, flag, None) is not None}
    shortcuts.update({f"--lora-{k}": f"lora.{k}" for k in LORA_KEYS if getattr(args, f"lora_{k}") is not None})
    refuse_shortcut_clash(shortcuts, raw)
    given = parse_override_args(raw)
    lora = {k.partition(".")[2]: v for k, v in given.items() if k.startswith("lora.")}
    overrides = [f"--{k}={v}" for k, v in given.items() if not k.startswith("lora.")]
    for flag, key in SHORTCUTS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"--{key}={value}")
    lora.update({k: str(getattr(args, f"lora_{k}")) for k in LORA_KEYS if getattr(args, f"lora_{k}") is not None})
    return overrides, lora


def cmd_finetune(args) -> int:
    from ..errors import SubstrateError
    from ..training.finetune import describe_lora, finetune, finetune_config

    overrides, lora_given = _split_overrides(args)
    if args.help_config:
        from ..training.config import describe_config

        print(describe_config(finetune_config(overrides, lora=args.lora)))
        print(describe_lora(lora_given))
        return 0
    if not args.out:
        raise SubstrateError("pass --out RUN_DIR: a new folder for the run (or the run to --resume)")
    if lora_given and not args.lora:
        k = next(iter(lora_given))
        raise SubstrateError(f"--lora.{k} (--lora-{k}) needs --lora")
    lora = (lora_given or True) if args.lora else None
    if not args.resume:
        if not args.model or not args.data:
            raise SubstrateError("pass --model DIR and --data SRC (or --resume to continue a run in --out)")
    if args.model:
        check_model_folder(args.model, "--model", tokenizer=True)
    res = finetune(args.model, args.data, args.out, lora=lora, overrides=overrides, resume=args.resume,
                   warn=lambda m: print(m, file=sys.stderr))
    val, base = res.record.get("val_loss"), res.record.get("base_val_loss")
    extra = f", val loss {val:.4f}" if val is not None else ""
    if val is not None and base is not None:
        extra = f", val loss {base:.4f} (base model) -> {val:.4f}"
    print(f"done: {res.train.step} steps ({res.record['method']}){extra}; model {res.model_dir}", file=sys.stderr)
    print(res.model_dir)
    return 0


__all__ = ["register", "cmd_finetune"]
