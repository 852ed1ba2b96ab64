"""``substrate-lm train`` and ``substrate-lm export``.

    substrate-lm train --config tiny                      # a checked-in recipe by name
    substrate-lm train --config my.toml --train.lr 3e-4   # any TOML file, dotted overrides
    substrate-lm train --config runs/tiny --resume        # a run folder: its saved config.toml
    substrate-lm train --help-config                      # every key, its default and meaning
    substrate-lm export runs/tiny --out models/tiny       # newest valid checkpoint -> HF folder
    torchrun --standalone --nproc_per_node 2 -m substrate_lm.cli.main train --config tiny
"""

from __future__ import annotations

import argparse
import sys

from .common import RUN_KEYS, add_runtime_args, add_settings_args, runtime_overrides, settings_overrides


def register(subparsers) -> None:
    """Add ``train`` and ``export`` to the ``substrate-lm`` command."""
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe or TOML config (resumable, DDP/FSDP2 under torchrun)",
        description="Train from a config: a recipe name (tiny, small, paper-1024-bit, ...), a TOML "
                    "file, or a run folder. Any config key can be overridden as --section.key VALUE "
                    "(e.g. --train.lr 3e-4 --model.substrate 16-bit); see --help-config.",
    )
    add_settings_args(p)
    p.add_argument("--config", metavar="RECIPE|FILE|RUN_DIR",
                   help="recipe name, TOML file, or a run folder holding config.toml")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest valid checkpoint of the run folder")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as TOML and exit")
    add_runtime_args(p, settings="run", cuda_index=False)
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser(
        "export",
        help="export a training checkpoint as a Hugging Face model folder (tokenizer, substrate)",
        description="Export the newest valid checkpoint of a run folder (or a given checkpoint "
                    "folder) as a self-contained HF model folder. --out must be missing or empty, "
                    "or a previous export with --overwrite.",
    )
    e.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR")
    e.add_argument("--out", required=True, metavar="DIR", help="destination folder")
    e.add_argument("--tokenizer", default=None, metavar="DIR_OR_HUB_ID",
                   help="tokenizer to include (default: the run's own copy)")
    e.add_argument("--allow-foreign-tokenizer", action="store_true",
                   help="include --tokenizer even though the run's data was prepared with another one")
    e.add_argument("--overwrite", action="store_true",
                   help="replace a previous export at --out (never any other folder)")
    e.set_defaults(func=cmd_export)


def _resolve_source(config: str | None):
    from pathlib import Path

    if config is None:
        return None
    path = Path(config)
    if path.is_dir():
        if not (path / "config.toml").is_file():
            from ..errors import SubstrateError

            raise SubstrateError(f"{path} is a folder without config.toml; pass a recipe or a TOML file")
        return path / "config.toml"
    return config


def _run_folder_of(config: str):
    from pathlib import Path

    path = Path(config)
    return path if path.is_dir() else path.parent


def _is_run_folder(config: str | None) -> bool:
    """``--config`` names a run folder, or the ``config.toml`` inside one (it has checkpoints or a log)."""
    from pathlib import Path

    if config is None:
        return False
    path = Path(config)
    if path.is_dir():
        return True
    return path.name == "config.toml" and path.is_file() and any(
        (path.parent / n).exists() for n in ("checkpoints", "log.jsonl"))


def cmd_train(args) -> int:
    from ..errors import SubstrateError
    from ..training.config import describe_config, load_config

    args.overrides = runtime_overrides(args, settings_overrides(args), RUN_KEYS)
    if args.help_config:
        cfg = load_config(_resolve_source(args.config), args.overrides) if args.config else None
        print(describe_config(cfg))
        return 0
    if not args.config:
        raise SubstrateError("pass --config RECIPE|FILE|RUN_DIR (recipes: tiny, small, paper-1024-bit, ...)")
    source = _resolve_source(args.config)
    cfg = load_config(source, args.overrides)
    if args.print_config:
        print(cfg.to_toml())
        return 0
    if _is_run_folder(args.config) and not any(
            o.split("=")[0] in ("--run.dir", "--run.name") for o in args.overrides):
        # a run folder's own config: the run is the folder given, wherever config.toml says it
        # was first written (a copied run trains into the copy, never into the original)
        cfg.run.dir = str(_run_folder_of(args.config))
    from ..training.trainer import Trainer

    result = Trainer(cfg, resume=args.resume).fit()
    if result.val:
        extra = f", val loss {result.val['val_loss']:.4f}"
    else:
        extra = ""
    print(f"done: {result.step} steps{extra}; checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from ..training.export import export_checkpoint

    tok = None
    if args.tokenizer:
        from ..data.encoding import load_tokenizer_any

        tok, _ = load_tokenizer_any(args.tokenizer)
    out = export_checkpoint(args.checkpoint, args.out, tokenizer=tok,
                            warn=lambda m: print(f"warning: {m}", file=sys.stderr),
                            overwrite=bool(getattr(args, "overwrite", False)),
                            allow_foreign_tokenizer=args.allow_foreign_tokenizer)
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m substrate_lm.cli.train train ...`
    parser = argparse.ArgumentParser(prog="substrate-lm")
    register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args()
    from ..errors import SubstrateError

    try:
        sys.exit(ns.func(ns))
    except SubstrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
