"""Small helpers of the docking experiment: its result files and its clock."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...fsutil import read_json


def read_done(path: Path) -> Any:
    """A finished part's JSON file, or None when it is missing or damaged (then it is recomputed)."""
    return read_json(path, missing=None, corrupt=None)


class Clock:
    """Wall and process-CPU seconds per part (CPU counts every thread of this process)."""

    def __init__(self):
        self.parts: dict[str, dict[str, float]] = {}

    @contextmanager
    def part(self, name: str):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            p = self.parts.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
            p["wall_s"] = round(p["wall_s"] + time.perf_counter() - w0, 2)
            p["cpu_s"] = round(p["cpu_s"] + time.process_time() - c0, 2)
