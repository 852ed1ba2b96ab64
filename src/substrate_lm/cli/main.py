"""``substrate-lm``: one entry point with subcommands.

Each subcommand group is a module in this package exposing ``register(subparsers)``; it adds its
parsers and sets ``func`` on them. Modules import their heavy dependencies inside the command
functions so that ``substrate-lm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import SubstrateError

# Subcommand modules, in the order they appear in --help.
COMMAND_MODULES = [
    "model_cmds",  # info, init, generate
    "tokenizer",  # tokenizer build|encode|decode|inspect
    "substrate",  # substrate build|verify|show
    "corpus",  # corpus world
    "data",  # data prepare|stats
    "train",  # train, export
    "eval",  # eval, eval ppl|harness|tasks
    "analyze",  # analyze
    "experiments",  # demo, ablate
    "docking",  # compose, grow
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="substrate-lm",
        description="Language models on a frozen, non-semantic token-embedding substrate.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"substrate-lm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except SubstrateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `substrate-lm tokenizer encode ... | head`; silence the flush at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
