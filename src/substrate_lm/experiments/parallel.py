"""Independent training cells side by side, one process and one thread each.

The experiments' models are tiny: one thread trains one of them faster than two threads do (the
step is bound by per-op overhead), so on a machine with several cores the way to use them is to
train independent cells (substrate x seed, the docking experiment's experts) in separate processes.
Each cell seeds everything it uses and writes its result to its own folder, so the numbers do not
depend on how many run at once: ``jobs=2`` gives the same results as ``jobs=1``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

import torch

from ..errors import SubstrateError
from ..logutil import quiet_transformers_bars_when_imported


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_jobs() -> int:
    """2 on a machine with at least two cores, else 1."""
    return min(2, available_cores())


def check_jobs(jobs: int) -> int:
    """``jobs`` capped by the cores available; a value below 1 is a one-line error."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SubstrateError(f"jobs must be an integer >= 1 (processes side by side), got {jobs!r}")
    return min(jobs, available_cores())


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet_transformers_bars_when_imported()  # as the CLI does: no per-file bars in the demo's log


def run_tasks(fn: Callable[..., Any], args: Sequence[tuple], jobs: int = 1, threads: int = 1) -> list:
    """``[fn(*a) for a in args]``, up to ``jobs`` at a time in separate processes.

    ``fn`` must be a module-level function (it is pickled by name); with ``jobs == 1`` or a single
    task everything runs in this process, in order. Each worker process uses ``threads`` torch
    threads; the results come back in the order of ``args``. The first task that raises stops
    the rest (the exception is raised here).
    """
    if jobs <= 1 or len(args) <= 1:
        return [fn(*a) for a in args]
    # spawn, not fork: a forked child would inherit this process's torch thread pools and locks
    with ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, *a) for a in args]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


__all__ = ["available_cores", "check_jobs", "default_jobs", "run_tasks"]
