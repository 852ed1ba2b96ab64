"""Quieting known, harmless library output without muting it: one log message at a time, and
transformers' per-file progress bars (in the CLI and in the experiments' worker processes)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def drop_log_records(logger: str, fragment: str) -> Iterator[None]:
    """Within the block, drop records of ``logger`` whose message contains ``fragment``."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return fragment not in record.getMessage()

    log = logging.getLogger(logger)
    flt = _Drop()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


# transformers' per-file bars between our own output (and before a one-line error); ours stay
QUIET_BARS = ("Loading weights", "Writing model shards")
HF_LOGGING = "transformers.utils.logging"


def quiet_transformers_bars(hf_logging=None) -> None:
    """Hide transformers' "Loading weights" / "Writing model shards" bars (a tqdm hook; idempotent).

    ``hf_logging``: the ``transformers.utils.logging`` module (default: imported here)."""
    if hf_logging is None:
        from transformers.utils import logging as hf_logging
    if not hasattr(hf_logging, "set_tqdm_hook"):  # older transformers: no per-bar control
        return
    previous = hf_logging.set_tqdm_hook(None)
    if getattr(previous, "substrate_quiet", False):
        hf_logging.set_tqdm_hook(previous)
        return

    def hook(factory, args, kwargs):
        desc = kwargs.get("desc")
        if isinstance(desc, str) and desc.startswith(QUIET_BARS):
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    hook.substrate_quiet = True
    hf_logging.set_tqdm_hook(hook)


class _QuietBarsWhenImported(importlib.abc.MetaPathFinder):
    """Hides transformers' bars the moment ``transformers.utils.logging`` is first imported, so a
    command that never loads transformers (``--help``, ``info --presets``, ``corpus``, ``tokenizer``)
    does not pay its import (0.6-2 s) for the bars' sake."""

    def find_spec(self, name, path=None, target=None):
        if name != HF_LOGGING:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            quiet_transformers_bars(module)

        spec.loader.exec_module = exec_module
        return spec


def quiet_transformers_bars_when_imported() -> None:
    """:func:`quiet_transformers_bars` now if transformers is loaded, else as soon as it is (idempotent)."""
    if HF_LOGGING in sys.modules:
        quiet_transformers_bars(sys.modules[HF_LOGGING])
    elif not any(isinstance(f, _QuietBarsWhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietBarsWhenImported())
