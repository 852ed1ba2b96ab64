"""Tolerant JSON reading for docking state files: a missing or unreadable file reads as None.

Docking outputs are written with the atomic writers of :mod:`substrate_lm.fsutil`.
"""

from __future__ import annotations

import json
import os
from typing import Any


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON in ``path``, or None when the file is missing or unreadable (a torn write)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
