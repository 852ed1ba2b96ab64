"""Crash-safe file writing shared by every subpackage.

A file is written to a temporary name in the same folder, flushed and fsynced, renamed over its
final name with ``os.replace`` (atomic on POSIX within one filesystem, and on NTFS), and then the
folder is fsynced so the rename itself is durable. A reader therefore sees either the old complete
file or the new complete one, after a SIGKILL and after a power cut alike; a failed or interrupted
write removes its temporary file and leaves the old file untouched.

Temporary names start with :data:`TMP_PREFIX`, so a folder owner can recognise (and delete) the
debris of a process killed mid-write, when no cleanup code could run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import SubstrateError

#: Prefix of temporary files written by :func:`atomic_write_bytes`; a file starting with it is
#: either being written right now or debris from an interrupted write.
TMP_PREFIX = ".tmp-"


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to disk. A no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush one file's data to disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    # os.umask can only be read by setting it; between the two calls another thread creating a
    # file would get umask 0. Linux (>= 4.7) reports it read-only in /proc, so prefer that.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: Any, sync_dir: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; an interrupted write leaves the old file intact.

    Args:
        path: final file name; its folder is created if missing.
        data: bytes, bytearray or memoryview, or a numpy array (anything ``np.ascontiguousarray``
            takes) written in its native C-order byte layout without a bytes copy.
        sync_dir: fsync the folder after the rename. A caller writing several files and then a
            commit record in the same folder may pass False for all but the record: the folder
            fsync after the last rename makes every earlier rename durable too.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        import numpy as np  # only arrays get here; numpy is not needed for plain bytes

        if not isinstance(data, np.ndarray) or data.dtype.hasobject:
            # an object array's buffer holds pointers, never data worth writing
            raise TypeError(f"atomic_write_bytes takes bytes, memoryview or a numpy array of plain "
                            f"values, not {type(data).__name__}"
                            + (" of Python objects" if isinstance(data, np.ndarray) else ""))
        data = np.ascontiguousarray(data)  # C order; the buffer is written as is, no bytes copy
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        _hold(fd)  # a live temp file is locked: clean_debris never takes it for debris
        with os.fdopen(fd, "wb") as fh:
            # mkstemp creates 0600; give the file the permissions a plain open() would (umask)
            os.chmod(tmp, 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a failed or interrupted write leaves no half file behind under either name
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Text variant of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as UTF-8 JSON (plus a final newline) to ``path`` atomically.

    Args:
        path: final file name.
        obj: anything ``json.dumps`` takes.
        indent: ``json.dumps`` indent.
        default: ``json.dumps`` fallback for objects JSON cannot encode (e.g. ``str``).
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=default) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates (e.g. a reported unknown character) have no UTF-8 form: escape them
        data = (json.dumps(obj, indent=indent, ensure_ascii=True, default=default) + "\n").encode("ascii")
    return atomic_write_bytes(path, data)


#: Marks :func:`read_json`'s ``missing``/``corrupt`` as "raise a one-line error" (the default).
RAISE: Any = object()


def read_json(path: str | os.PathLike, *, missing: Any = RAISE, corrupt: Any = RAISE,
              fix: str = "write it again", what: str | None = None, kind: type | None = None) -> Any:
    """The JSON document in ``path``: the one reader of the project's JSON files.

    Args:
        path: the file.
        missing: returned when the file does not exist; by default a one-line
            ``<what> <path> not found; <fix>`` error.
        corrupt: returned when the file cannot be read, is not valid UTF-8 JSON, or is not a
            ``kind``; by default a one-line ``<what> <path> is unreadable (...); <fix>`` error.
            A torn write (a process killed mid-write) reads as corrupt.
        fix: the remedy the error messages name.
        what: how the messages name the file (e.g. ``"manifest"``); omitted, just the path.
        kind: the type the document must have (e.g. ``dict``); None accepts any JSON value.
    """
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing is not RAISE:
            return missing
        raise SubstrateError(f"{name} not found; {fix}") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        if corrupt is not RAISE:
            return corrupt
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise SubstrateError(f"{name} is unreadable ({reason}); {fix}") from None
    if kind is not None and not isinstance(data, kind):
        if corrupt is not RAISE:
            return corrupt
        raise SubstrateError(f"{name} is damaged (not a JSON {_JSON_NAMES.get(kind, kind.__name__)}); {fix}")
    return data


_JSON_NAMES = {dict: "object", list: "array", str: "string"}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _hold(fd: int) -> None:
    """Take a shared ``flock`` on an open file or folder (dropped when it is closed or the process dies)."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except (ImportError, OSError):  # pragma: no cover - Windows, or a filesystem without flock
        pass


def hold_folder(path: str | os.PathLike) -> int | None:
    """Mark a temporary folder as in use until the returned descriptor is closed (``os.close``).

    :func:`clean_debris` leaves a held folder alone; a process killed while holding it drops the
    hold, so its folder is debris on the next run. Returns None where folders cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return None
    _hold(fd)
    return fd


def in_use(path: str | os.PathLike) -> bool:
    """Whether a live process holds ``path`` (see :func:`hold_folder`); False where unknowable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: only age could tell; keep everything young
        return True
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def clean_debris(folder: str | os.PathLike, names=None, prefixes=()) -> int:
    """Delete the temporary entries a killed writer of ours left in ``folder``; returns how many.

    Debris is, in ``folder`` only (never below it): a file named ``.tmp-<name>.*`` for each
    ``name`` in ``names`` (the temp files of :func:`atomic_write_bytes`; ``names=None``: any
    ``.tmp-*`` file), and any file or folder whose name starts with one of ``prefixes`` (e.g. an
    export's ``.<out>.tmp-`` folder). An entry a live process still holds (a write in progress,
    see :func:`hold_folder`) and symbolic links are left alone; nothing else is touched.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    if names is None:
        temp = (TMP_PREFIX,)
    else:
        temp = tuple(f"{TMP_PREFIX}{n}." for n in names)
    removed = 0
    for entry in entries:
        name = entry.name
        ours = (name.startswith(temp) and entry.is_file(follow_symlinks=False)) or name.startswith(tuple(prefixes))
        if not ours or entry.is_symlink() or in_use(entry.path):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass  # another cleaner got there first, or no permission: it stays, harmlessly
    return removed


def check_not_dangling(path: str | os.PathLike, what: str = "--out") -> None:
    """Refuse a path that is a symbolic link to nothing: writing through it would create its
    target wherever the link points."""
    p = os.fspath(path)
    if os.path.islink(p) and not os.path.exists(p):
        raise SubstrateError(f"{what} {p} is a symbolic link to a missing target ({os.readlink(p)}); "
                             "pass a real folder or remove the link")


def check_regular_file(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse a FIFO, socket or device given as an input file: reading it could block for ever
    or never end. A missing path or a folder passes (the caller reports those its own way)."""
    p = os.fspath(path)
    kind = special_file_kind(p)
    if kind:
        raise SubstrateError(f"{what} {p} is {kind}, not a regular file; save its contents to a file and "
                             "pass that")


def special_file_kind(path: str | os.PathLike) -> str | None:
    """``"a FIFO (named pipe)"``, ``"a socket"`` or ``"a device"`` for such a path, else None (a
    regular file, a folder, or nothing there)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def disk_error(exc: OSError, what: str, fix: str = "rerun with --resume") -> SubstrateError:
    """One line for an OSError while writing ``what``: disk full gets its own wording.

    ``fix``: what to do once space is free (``"rerun with --resume"``, ``"run it again"``).
    """
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SubstrateError(f"disk full while writing {what}; nothing was overwritten: free some "
                              f"space and {fix}")
    return SubstrateError(f"could not write {what}: {exc.strerror or exc}; nothing was overwritten")


#: Name of the lock file :class:`FolderLock` keeps in a folder while it is held.
LOCK_NAME = ".lock"


class FolderLock:
    """An exclusive, crash-safe lock on a folder (one writer per run folder).

    The lock is an ``fcntl.flock`` on ``<folder>/.lock``, which holds the owner's pid and host. The
    kernel drops the lock when its process dies, however it dies, so a lock left by a killed
    process is simply taken over (:attr:`took_over` names the dead pid). Where ``fcntl`` does not
    exist (Windows) the file is created exclusively and a stale one is taken over when its pid no
    longer runs. Use as a context manager or call :meth:`acquire` / :meth:`release`.

    Args:
        folder: the folder to lock (created when missing).
        what: how the error names the folder (``"run folder"``).

    Raises:
        SubstrateError: from :meth:`acquire` when another live process holds the lock (the message
            names its pid and host).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None
        self.took_over: str | None = None

    def _holder(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            return "another process"
        if len(text) >= 2:
            return f"pid {text[0]} on {text[1]}"
        return f"pid {text[0]}" if text else "another process"

    def _busy(self) -> SubstrateError:
        return SubstrateError(f"{self.what} {self.folder} is in use by another trainer "
                              f"({self._holder()}); wait for it to finish, stop it, or choose "
                              "another folder")

    def acquire(self) -> "FolderLock":
        import socket

        self.folder.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n".encode()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self._acquire_pidfile(me)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._busy() from None
            # the holder before us may have unlinked the file between our open and flock: then
            # we locked an orphan inode; start again on the file that is there now
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = os.read(fd, 200).decode("utf-8", "replace").split()
        if old and old[0] != str(os.getpid()):
            self.took_over = old[0]
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, me)
        except OSError:
            pass  # e.g. a full disk: the lock holds all the same, only the holder is unnamed
        self._fd = fd
        return self

    def _acquire_pidfile(self, me: bytes) -> "FolderLock":  # pragma: no cover - Windows
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                parts = self.path.read_text(errors="replace").split()
                pid = int(parts[0]) if parts and parts[0].isdigit() else None
                if pid is not None and _pid_alive(pid):
                    raise self._busy() from None
                self.took_over = str(pid)
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, me)
            self._fd = fd
            return self
        raise self._busy()

    def release(self) -> None:
        """Remove the lock file (while still holding the lock) and drop the lock."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:  # pragma: no cover - only the Windows path uses it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
