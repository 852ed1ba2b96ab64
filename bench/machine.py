"""What machine a benchmark ran on: every benchmark file names its CPU (and AMX or not), since
numbers are comparable only within one run on one machine. Imported by the bench scripts, which
run as ``python bench/NAME.py`` (so this folder is on ``sys.path``)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
