"""Helpers shared by the subcommands: argument types that reject bad numbers, and runtime settings.

Argument types (``type=`` of ``add_argument``) make argparse reject a bad value with its usual
usage error (exit 2) before any work starts::

    p.add_argument("--window", type=positive_int)
    p.add_argument("--val-fraction", type=fraction)

Runtime flags, the same on every command that computes (:data:`RUNTIME_RULE`)::

    add_runtime_args(parser)             # --device auto|cpu|cuda (default auto), --threads N
    device = apply_runtime(args)         # validates both, sets torch's threads, returns the device
    overrides = runtime_overrides(args, overrides, {"device": "run.device", "threads": "run.threads"})
                                         # commands with settings: the flags become their keys

Settings, the same on every command that takes them (``train``, ``finetune``, ``init``, ``grow``,
``demo``, ``ablate``): one syntax, ``--<section>.<key> VALUE``, read by the command's
:class:`~substrate_lm.settings.SettingsEngine`::

    add_settings_args(parser, old_set="model.overrides.")   # --help-config; --section.key VALUE
    overrides = settings_overrides(args)                     # the collected --section.key arguments

Nothing here imports torch at module level: ``substrate-lm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os

from ..errors import SubstrateError
from ..fsutil import check_not_dangling, check_regular_file

__all__ = [
    "positive_int", "nonneg_int", "positive_float", "nonneg_float", "finite_float", "fraction",
    "unit_interval", "add_runtime_args", "apply_runtime", "resolve_device", "check_output_file",
    "check_output_dir", "check_input_file", "check_input_dir", "check_model_folder", "check_safetensors",
    "is_local_path", "SettingsParser", "add_settings_args", "settings_overrides", "load_settings",
    "override_keys", "refuse_shortcut_clash", "runtime_overrides", "apply_threads", "RUNTIME_RULE", "RUN_KEYS",
]


# -- settings ------------------------------------------------------------------------------------


class SettingsParser(argparse.ArgumentParser):
    """Collects unknown ``--section.key VALUE`` arguments into ``args.overrides`` instead of failing.

    The command's settings engine validates them (unknown keys are errors naming the valid ones),
    so the command line accepts exactly the keys its settings dataclasses define.
    """

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102
        ns, extras = super().parse_known_args(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + list(extras)
        return ns, []


def add_settings_args(p: argparse.ArgumentParser, *, old_set: str | None = None) -> None:
    """Give subcommand ``p`` the settings command line: ``--<section>.<key> VALUE`` overrides and
    ``--help-config``. ``old_set``: the section prefix that the command's former ``--set KEY=VALUE``
    meant (``--set`` now fails in one line showing the new spelling)."""
    p.__class__ = SettingsParser
    p.add_argument("--help-config", action="store_true",
                   help="list every setting (--section.key) with its value and meaning, then exit")
    if old_set is not None:
        p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(overrides=[], _old_set=old_set)


def settings_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--section.key VALUE`` arguments given; a former ``--set KEY=VALUE`` is a one-line error
    that names the new spelling."""
    old = list(getattr(args, "set", None) or [])
    if old:
        key, _, value = old[0].partition("=")
        new = f"--{getattr(args, '_old_set', '') or ''}{key.strip()} {value}".rstrip()
        raise SubstrateError(f"--set is gone: every command takes settings as --section.key VALUE; "
                             f"write {new} (list them with --help-config)")
    return list(getattr(args, "overrides", None) or [])


def override_keys(overrides: list[str]) -> set[str]:
    """The dotted keys of ``--section.key VALUE`` / ``--section.key=VALUE`` arguments."""
    return {o[2:].split("=", 1)[0] for o in overrides if o.startswith("--")}


def refuse_shortcut_clash(shortcuts: dict[str, str], overrides: list[str]) -> None:
    """One-line error when a shortcut flag and the ``--section.key`` it stands for are both given.

    ``shortcuts``: ``{flag as typed: settings key}`` of the shortcut flags that were given, e.g.
    ``{"--device": "run.device"}``; ``overrides``: the ``--section.key VALUE`` arguments."""
    given = override_keys(overrides)
    both = [(flag, key) for flag, key in shortcuts.items() if key in given]
    if both:
        flag, key = both[0]
        raise SubstrateError(f"{flag} and --{key} both set {key}; pass one of them")


def load_settings(args: argparse.Namespace, engine, load, *, missing: str):
    """A config-file command's settings: ``load(args.config, overrides)`` with the ``--section.key``
    overrides given; with ``--help-config`` they (or the defaults) are printed and None returned;
    no ``--config`` is the one-line error ``missing``."""
    overrides = settings_overrides(args)
    if args.help_config:
        print(engine.describe(load(args.config, overrides) if args.config else None))
        return None
    if not args.config:
        raise SubstrateError(missing)
    return load(args.config, overrides)


# -- argument types -------------------------------------------------------------------------------


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    return _float(text)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A share in [0, 1)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in (0, 1] (e.g. top-p)."""
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


# -- paths ----------------------------------------------------------------------------------------


def check_input_file(path, what: str = "file") -> None:
    """A readable regular file, or a one-line error naming it."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SubstrateError(f"{what} {p} does not exist; check the path")
    if os.path.isdir(p):
        raise SubstrateError(f"{what} {p} is a folder; pass a file")
    check_regular_file(p, what)  # a FIFO or device would block or never end
    if not os.access(p, os.R_OK):
        raise SubstrateError(f"{what} {p} is not readable; check its permissions")


def check_input_dir(path, what: str = "folder", needs: str | None = None) -> None:
    """An existing folder (holding ``needs`` when given), or a one-line error naming it."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SubstrateError(f"{what} {p} does not exist; check the path")
    if not os.path.isdir(p):
        raise SubstrateError(f"{what} {p} is a file, not a folder")
    if needs and not os.path.exists(os.path.join(p, needs)):
        raise SubstrateError(f"{what} {p} holds no {needs}")


def check_output_file(path, what: str = "--out") -> None:
    """An output file path: not a folder, and its parent (if it exists) is a folder."""
    p = os.fspath(path)
    check_not_dangling(p, what)
    if os.path.isdir(p):
        raise SubstrateError(f"{what} {p} is a folder; pass a file path")
    parent = os.path.dirname(os.path.abspath(p))
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise SubstrateError(f"{what} {p}: {probe} is a file, not a folder; choose another path")


def check_output_dir(path, what: str = "--out", *, overwrite: bool = False, ours: tuple[str, ...] = (),
                     remedy: str = "or pass --overwrite") -> None:
    """An output folder: not a file; if it exists and is not empty, only with ``overwrite``.

    ``ours``: files whose presence marks the folder as one this command wrote (the error then says
    so); any other non-empty folder is refused unless ``overwrite``. ``remedy``: the way out the
    non-empty error offers besides a new folder (a command without ``--overwrite`` names its own).
    """
    p = os.fspath(path)
    check_not_dangling(p, what)
    if os.path.exists(p) and not os.path.isdir(p):
        raise SubstrateError(f"{what} {p} is a file; pass a folder path")
    probe = os.path.dirname(os.path.abspath(p))
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise SubstrateError(f"{what} {p}: {probe} is a file, not a folder; choose another path")
    if overwrite or not os.path.isdir(p):
        return
    entries = os.listdir(p)
    if not entries:
        return
    if any(name in entries for name in ours):
        raise SubstrateError(f"{what} {p} already holds output ({', '.join(n for n in ours if n in entries)}); "
                             "pass --overwrite to replace it or choose another folder")
    raise SubstrateError(f"{what} {p} is not empty ({len(entries)} entries); choose a new or empty folder, "
                         f"{remedy}")


def is_local_path(path: str) -> bool:
    """A filesystem path rather than a hub id (``gpt2``, ``org/name``)."""
    path = os.fspath(path)
    return os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1 or path.endswith("/")


def check_safetensors(path) -> None:
    """The header of a .safetensors file parses and the file is as long as the header says (cheap)."""
    import json
    import struct

    p = os.fspath(path)
    size = os.path.getsize(p)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 * 2**20):
                raise ValueError("header length beyond the file")
            header = json.loads(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise SubstrateError(f"{p} is not a valid safetensors file ({exc}); copy or export it again") from None
    if 8 + n + end != size:
        raise SubstrateError(f"{p} is truncated or padded ({size:,} bytes, the header says {8 + n + end:,}); "
                             "copy or export it again")


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_folder(path, what: str = "--model", *, tokenizer: bool = False) -> None:
    """A local model folder: config.json is a JSON object, a weights file exists (a single safetensors
    file's header matches its size), and with ``tokenizer`` its tokenizer files exist.

    Hub ids (``gpt2``, ``org/name``) pass unchecked: loading reports their problems.
    """
    import json

    p = os.fspath(path)
    if not is_local_path(p):
        return
    if not os.path.exists(p):
        raise SubstrateError(f"{what} {p} is not a model folder (no such folder); pass a folder written by "
                             "init/export (or a hub id)")
    if not os.path.isdir(p):
        raise SubstrateError(f"{what} {p} is not a model folder (it is a file); pass a folder with config.json "
                             "and model.safetensors")
    cfg = os.path.join(p, "config.json")
    if not os.path.isfile(cfg):
        raise SubstrateError(f"{p} is not a model folder (no config.json); pass a folder written by init/export")
    try:
        with open(cfg, encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SubstrateError(f"{cfg} is not valid JSON ({str(exc).splitlines()[0]}); copy or export the model again") from None
    if not isinstance(data, dict):
        raise SubstrateError(f"{cfg} is not a JSON object; copy or export the model again")
    weights = [f for f in WEIGHT_FILES if os.path.isfile(os.path.join(p, f))]
    if not weights:
        raise SubstrateError(f"{p} holds no weights (model.safetensors); copy or export the model again")
    if weights[0] == "model.safetensors":
        check_safetensors(os.path.join(p, "model.safetensors"))
    if tokenizer and not any(os.path.isfile(os.path.join(p, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        raise SubstrateError(f"{p} holds no tokenizer (tokenizer.json); copy it there or export with --tokenizer")


# -- runtime: device and threads ------------------------------------------------------------------


#: the rule every command that computes follows (``tests/cli/test_runtime_flags.py`` checks it)
RUNTIME_RULE = ("--device {auto,cpu,cuda} (default auto: CUDA when available, else the CPU) and --threads N "
                "(torch's CPU threads, N >= 1; default torch's choice) on every command that computes; "
                "commands that only run on the CPU (init, plan) take --threads alone")

DEVICE_HELP = ("auto (CUDA when available, else cpu), cpu or cuda{extra}; default auto")
THREADS_HELP = ("CPU threads for torch, N >= 1 (default: torch's choice, usually the core count; 1 is often "
                "fastest for tiny models on a busy machine)")


def add_runtime_args(parser: argparse.ArgumentParser, *, device: bool = True, settings: str | None = None,
                     cuda_index: bool = True) -> None:
    """Add ``--device`` and ``--threads``: the same flags, meaning and default on every command that
    computes (:data:`RUNTIME_RULE`; use :func:`apply_runtime` in the command, or
    :func:`runtime_overrides` where the flags stand for settings keys).

    ``device=False``: ``--threads`` only (a command that runs on the CPU whatever the machine).
    ``settings``: the settings keys the flags stand for (``"run"``: ``run.device``/``run.threads``),
    named in the help. ``cuda_index``: ``cuda:N`` and ``mps`` are accepted too (commands that load a
    model directly; a settings key takes auto, cpu or cuda). The flags' values default to None,
    meaning ``auto`` and torch's choice (or the config's values where the flags stand for settings
    keys).
    """
    same = f"same as --{settings}.device: " if settings else ""
    if device:
        parser.add_argument("--device", default=None, metavar="{auto,cpu,cuda}",
                            help=same + DEVICE_HELP.format(extra=", cuda:N or mps" if cuda_index else ""))
    same = f"same as --{settings}.threads: " if settings else ""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help=same + THREADS_HELP)


#: the trainer's settings keys behind ``--device`` / ``--threads`` (train, finetune, grow)
RUN_KEYS = {"device": "run.device", "threads": "run.threads"}


def runtime_overrides(args: argparse.Namespace, overrides: list[str], keys: dict[str, str]) -> list[str]:
    """``overrides`` plus the ``--section.key VALUE`` that the runtime shortcut flags given stand for.

    ``keys``: ``{"device": "run.device", "threads": "run.threads"}`` (the flags' dests and their
    settings keys). A flag given together with the key it stands for is refused in one line
    (:func:`refuse_shortcut_clash`); ``--device`` is checked against auto, cpu, cuda first."""
    given = {dest: getattr(args, dest, None) for dest in keys}
    given = {dest: v for dest, v in given.items() if v is not None}
    if given.get("device") is not None and given["device"] not in ("auto", "cpu", "cuda"):
        raise SubstrateError(f"--device {given['device']!r} is not one of auto, cpu, cuda")
    refuse_shortcut_clash({f"--{dest}": keys[dest] for dest in given}, overrides)
    out = list(overrides)
    for dest, value in given.items():
        out += [f"--{keys[dest]}", str(value)]
    return out


def resolve_device(device: str | None) -> str:
    """``auto``/None -> ``cuda`` or ``cpu``; any other value must name an available device (a one-line
    error otherwise). The check itself is :func:`substrate_lm.evaluation.models.resolve_device`."""
    from ..evaluation.models import resolve_device as _resolve

    return str(_resolve(device))


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU threads from ``args.threads`` when given (commands with ``--threads`` only)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise SubstrateError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(int(threads))


def apply_runtime(args: argparse.Namespace) -> str:
    """Validate ``args.device`` and ``args.threads``, set torch's thread count; return the device.

    Call it at the start of a command, before any model is loaded, so that a bad value fails at once.
    """
    device = resolve_device(getattr(args, "device", None))
    apply_threads(args)
    return device
