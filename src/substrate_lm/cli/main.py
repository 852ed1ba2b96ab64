"""``substrate-lm``: one entry point with subcommands.

Each subcommand group is a module in this package exposing ``register(subparsers)``; it adds its
parsers and sets ``func`` on them. Modules import their heavy dependencies inside the command
functions so that ``substrate-lm --help`` stays fast.

Errors: a :class:`~substrate_lm.errors.SubstrateError` prints ``error: <message>`` (one line) and
exits 2; argparse's usage errors exit 2 as argparse prints them. Anything else is caught by a
backstop that still prints one line: a failing system call names the file and the fix (full disk,
permissions: exit 1; a wrong path: exit 2), an undecodable user file names the file (exit 2), a
library's own OSError keeps its message (exit 1; e.g. a hub id that cannot be resolved), and any
other exception is reported as ``error: internal error: <Type>: <message> (a bug: ...)`` with
exit 1. ``SUBSTRATE_LM_DEBUG=1`` lets unexpected exceptions propagate with their traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from ..errors import SubstrateError
from ..logutil import quiet_transformers_bars_when_imported

# Subcommand modules, in the order they appear in --help.
COMMAND_MODULES = [
    "model_cmds",  # info, init, generate
    "tokenizer",  # tokenizer build|encode|decode|inspect
    "substrate",  # substrate build|verify|show
    "corpus",  # corpus world
    "data",  # data prepare|stats
    "train",  # train, export
    "plan",  # plan (memory and throughput on fake tensors)
    "finetune",  # finetune
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


DEBUG_ENV = "SUBSTRATE_LM_DEBUG"  # set to 1: unexpected exceptions propagate with their traceback

# OSErrors that mean "the path you gave is wrong" (bad input, exit 2) rather than "the system failed"
_INPUT_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}
_ERRNO_HINTS = {
    errno.ENOSPC: "free some disk space or write to another disk",
    errno.EDQUOT: "free some space within your quota or write elsewhere",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOENT: "check the path",
    errno.EISDIR: "pass a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EEXIST: "remove it or choose another path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EIO: "the disk reported an I/O error; check it",
}


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _shown(arg: str) -> str:
    """An argument that may hold surrogate-escaped bytes, printable."""
    try:
        return repr(arg.encode("utf-8", "surrogateescape"))[2:-1]
    except UnicodeEncodeError:
        return arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")


def _check_argv_utf8(argv: list[str]) -> None:
    """Text arguments must be UTF-8; invalid bytes reach Python as lone surrogates (surrogateescape)."""
    for k, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            if os.path.lexists(arg):  # an existing path with a non-UTF-8 name is fine
                continue
            raise SubstrateError(
                f"argument {k} ('{_shown(arg)}') is not valid UTF-8 text; pass UTF-8 "
                "(check the terminal's locale, e.g. LANG=C.UTF-8)"
            ) from None


def _file_in_traceback(exc: BaseException) -> str | None:
    """The innermost file a failing frame was reading: an open file object or a path to a file."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) if hasattr(value, "read") else None
            if isinstance(name, str) and os.path.isfile(name):
                return name
        for value in frame.f_locals.values():
            if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
                try:
                    if len(os.fspath(value)) < 4096 and os.path.isfile(value):
                        return os.fspath(value)
                except (OSError, TypeError, ValueError):
                    continue
    return None


def describe_exception(exc: BaseException) -> tuple[str, int]:
    """The one-line message (without ``error: ``) and the exit status for an unexpected exception."""
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate" in str(exc)
                                        and "memory" in str(exc)):
        return (f"out of memory: {_one_line(exc) or 'MemoryError'}; use a smaller model, batch or context, "
                f"or a machine with more memory", 1)
    if isinstance(exc, UnicodeDecodeError):
        where = _file_in_traceback(exc)
        what = where if where else "an input"
        return (f"{what} is not valid UTF-8 text ({exc.reason}, byte {exc.object[exc.start:exc.start + 1]!r} "
                f"at offset {exc.start}); convert it to UTF-8, e.g. iconv -f LATIN1 -t UTF-8", 2)
    if isinstance(exc, OSError) and exc.errno is not None:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        where = " -> ".join(names) if names else (_file_in_traceback(exc) or "a file")
        reason = exc.strerror or errno.errorcode.get(exc.errno, str(exc.errno))
        hint = _ERRNO_HINTS.get(exc.errno)
        return f"{where}: {reason}" + (f"; {hint}" if hint else ""), (2 if exc.errno in _INPUT_ERRNOS else 1)
    if isinstance(exc, OSError) and _one_line(exc):
        # raised by a library with a message of its own (e.g. a hub id that cannot be resolved offline)
        return _one_line(exc), 1
    return (f"internal error: {type(exc).__name__}: {_one_line(exc) or '(no message)'} (a bug: please report it; "
            f"rerun with {DEBUG_ENV}=1 for the traceback)", 1)


def main(argv: list[str] | None = None) -> int:
    """Run ``substrate-lm``; returns the exit status.

    0 success; 2 bad input (:class:`SubstrateError`, a wrong path, a non-UTF-8 file; argparse's own
    usage errors exit 2 too); 1 anything else: a failing system call (full disk, permissions), or an
    unexpected exception, printed as one ``error: internal error: ...`` line (set
    ``SUBSTRATE_LM_DEBUG=1`` to get the traceback instead); 130 interrupted.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        _check_argv_utf8(argv)
        quiet_transformers_bars_when_imported()
        rc = args.func(args)
    except SubstrateError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `substrate-lm tokenizer encode ... | head`; silence the flush at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the backstop: one line, never a traceback (unless asked for)
        if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        message, code = describe_exception(exc)
        print(f"error: {message}", file=sys.stderr)
        return code
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
