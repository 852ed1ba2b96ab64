"""Shared crash-safe writers: round trips, permissions, failed writes, disk-full wording."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat

import numpy as np
import pytest

from substrate_lm import fsutil
from substrate_lm.errors import SubstrateError
from substrate_lm.fsutil import (TMP_PREFIX, atomic_write_bytes,
                                 atomic_write_json, atomic_write_text, disk_error, fsync_dir,
                                 read_json, sha256_file)


def test_round_trips(tmp_path):
    p = atomic_write_bytes(tmp_path / "new" / "sub" / "a.bin", b"\x00\x01abc")  # folders created
    assert p == tmp_path / "new" / "sub" / "a.bin" and p.read_bytes() == b"\x00\x01abc"
    atomic_write_bytes(p, memoryview(b"xyz0123")[1:5])
    assert p.read_bytes() == b"yz01"

    assert atomic_write_text(tmp_path / "t.txt", "héllo 世界\n").read_text(encoding="utf-8") == "héllo 世界\n"
    atomic_write_text(tmp_path / "l.txt", "é", encoding="latin-1")
    assert (tmp_path / "l.txt").read_bytes() == b"\xe9"

    obj = {"a": [1, 2.5, None], "ключ": "значение", "p": tmp_path}
    raw = atomic_write_json(tmp_path / "o.json", obj, default=str).read_text(encoding="utf-8")
    assert raw.endswith("}\n") and "ключ" in raw  # UTF-8, not \u escapes
    assert json.loads(raw) == {**obj, "p": str(tmp_path)}
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"p": tmp_path})  # no default: JSON refuses it
    # a lone surrogate has no UTF-8 form: written escaped instead of failing
    atomic_write_json(tmp_path / "s.json", {"c": "\udc80"})
    assert json.loads((tmp_path / "s.json").read_text(encoding="ascii")) == {"c": "\udc80"}
    assert not [q for q in tmp_path.rglob("*") if q.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("arr", [
    np.arange(10, dtype="<u2"),
    np.arange(24, dtype=np.float32).reshape(4, 6),
    np.arange(40, dtype=np.int64).reshape(5, 8)[:, ::3],  # not contiguous: written in C order
])
def test_ndarray_written_in_native_layout(tmp_path, arr):
    p = atomic_write_bytes(tmp_path / "x.bin", arr)
    assert p.read_bytes() == np.ascontiguousarray(arr).tobytes()
    assert np.array_equal(np.fromfile(p, dtype=arr.dtype).reshape(arr.shape), arr)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_permissions_follow_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = atomic_write_bytes(tmp_path / "f", b"x")
        q = tmp_path / "plain"
        q.write_bytes(b"x")  # what a plain open() gives
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask == stat.S_IMODE(q.stat().st_mode)


def test_temp_file_lives_next_to_target(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(src), os.path.basename(src)))
        real(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spy)
    atomic_write_text(tmp_path / "out.txt", "x")
    assert seen[0][0] == str(tmp_path) and seen[0][1].startswith(TMP_PREFIX + "out.txt.")


@pytest.mark.parametrize("where, exc", [
    ("fsync", OSError(errno.ENOSPC, "No space left on device")),
    ("replace", KeyboardInterrupt()),  # not an Exception: cleanup must still run
])
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where, exc):
    p = tmp_path / "data.json"
    atomic_write_json(p, {"v": 1})
    before = p.read_bytes()

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(fsutil.os, where, boom)
    with pytest.raises(type(exc)):
        atomic_write_json(p, {"v": 2})
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["data.json"]


@pytest.mark.parametrize("bad", ["text, not bytes", {"not": "a buffer"},
                                 np.array([{"a": 1}], dtype=object)])
def test_non_buffer_data_is_refused_and_touches_nothing(tmp_path, bad):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, bad)  # an object array would write its pointers
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["a.bin"]


def test_sha256_file_and_fsync_dir(tmp_path):
    data = os.urandom(3 * 1000 + 7)
    p = atomic_write_bytes(tmp_path / "r.bin", data)
    assert sha256_file(p, chunk=1000) == hashlib.sha256(data).hexdigest()
    fsync_dir(tmp_path / "missing")  # unsupported or missing folder: a no-op, not an error


def test_disk_error_messages():
    full = disk_error(OSError(errno.ENOSPC, "No space left on device"), "checkpoint step-3")
    assert isinstance(full, SubstrateError)
    assert str(full) == ("disk full while writing checkpoint step-3; nothing was overwritten: free "
                         "some space and rerun with --resume")
    assert str(disk_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "x")).startswith("disk full")
    other = disk_error(OSError(errno.EACCES, "Permission denied"), "run/config.toml")
    assert str(other) == "could not write run/config.toml: Permission denied; nothing was overwritten"
    assert "\n" not in str(full) + str(other)


def test_folder_lock_is_exclusive_names_the_holder_and_cleans_up(tmp_path):
    folder = tmp_path / "run"
    with fsutil.FolderLock(folder, "run folder") as held:
        assert held.took_over is None
        assert (folder / fsutil.LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(SubstrateError) as exc:
            fsutil.FolderLock(folder, "run folder").acquire()
        msg = str(exc.value)
        assert f"pid {os.getpid()}" in msg and "in use" in msg and "\n" not in msg
    assert not (folder / fsutil.LOCK_NAME).exists()
    with fsutil.FolderLock(folder):  # free again
        pass


def test_folder_lock_takes_over_the_file_of_a_dead_process(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / fsutil.LOCK_NAME).write_text("4194304 otherhost\n")  # a holder that died: no flock
    lock = fsutil.FolderLock(folder).acquire()
    try:
        assert lock.took_over == "4194304"
        assert (folder / fsutil.LOCK_NAME).read_text().split()[0] == str(os.getpid())
    finally:
        lock.release()


# -- read_json: the one JSON reader -----------------------------------------------------------


def test_read_json_reads_a_document(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"x": [1, 2]}', encoding="utf-8")
    assert read_json(p) == {"x": [1, 2]}
    assert read_json(p, kind=dict) == {"x": [1, 2]}


def test_read_json_missing_raises_one_line_or_returns_the_given_value(tmp_path):
    p = tmp_path / "absent.json"
    with pytest.raises(SubstrateError) as err:
        read_json(p, what="manifest", fix="run prepare first")
    assert str(err.value) == f"manifest {p} not found; run prepare first"
    assert read_json(p, missing=None) is None
    assert read_json(p, missing={}) == {}


@pytest.mark.parametrize("content", [b'{"x": 1', b"\xff\xfe not utf-8", b""])
def test_read_json_corrupt_raises_one_line_or_returns_the_given_value(tmp_path, content):
    p = tmp_path / "torn.json"
    p.write_bytes(content)
    with pytest.raises(SubstrateError) as err:
        read_json(p, fix="prepare the data again")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{p} is unreadable (") and msg.endswith("; prepare the data again")
    assert read_json(p, corrupt=None) is None
    # a missing-file default does not swallow a corrupt file
    with pytest.raises(SubstrateError):
        read_json(p, missing=None)


def test_read_json_wrong_kind_is_damaged(tmp_path):
    p = tmp_path / "list.json"
    p.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(SubstrateError, match=r"is damaged \(not a JSON object\); write it again"):
        read_json(p, kind=dict)
    assert read_json(p, kind=dict, corrupt="x") == "x"
    assert read_json(p, kind=list) == [1, 2]


def test_read_json_directory_is_unreadable(tmp_path):
    with pytest.raises(SubstrateError, match="is unreadable"):
        read_json(tmp_path)
