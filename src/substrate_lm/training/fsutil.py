"""Crash-safe file writing: temp file in the same folder, fsync, rename, fsync the folder.

``os.replace`` is atomic on POSIX within one filesystem, so a reader sees either the old file or
the complete new one; the fsyncs make that true across a power cut too, not only a SIGKILL.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ..errors import SubstrateError


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to disk. A no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a directory
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush one file's data to disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def disk_error(exc: OSError, what: str) -> SubstrateError:
    """One line for an OSError while writing ``what``: disk full gets its own wording."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SubstrateError(f"disk full while writing {what}; nothing was overwritten: free some "
                              "space and rerun with --resume")
    return SubstrateError(f"could not write {what}: {exc.strerror or exc}; nothing was overwritten")
