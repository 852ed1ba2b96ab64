"""Atomic file writes for prepared data directories.

A prepared directory must survive SIGKILL at any instant: every file is written to a temporary
name in the same folder, flushed and fsynced, then renamed over its final name (rename is atomic
on POSIX and on NTFS), and the folder itself is fsynced so the rename is durable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

#: Prefix of temporary files; anything starting with it in a prepared directory is debris from an
#: interrupted write and may be deleted.
TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview | np.ndarray,
                       sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    Args:
        path: final file name.
        data: bytes, or a numpy array written in its native (C-order) byte layout.
        sync_dir: fsync the folder after the rename. A caller writing several files and then a
            commit record in the same folder may pass False for all but the record: the
            folder fsync after the last rename makes every earlier rename durable too.
    """
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, np.ndarray):
                # tofile() streams the buffer without a bytes copy of a large shard
                np.ascontiguousarray(data).tofile(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a failed or interrupted write leaves no half file behind under either name
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates (e.g. a reported unknown character) have no UTF-8 form: escape them
        data = (json.dumps(obj, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    atomic_write_bytes(path, data)
