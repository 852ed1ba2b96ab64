"""Interrupted preparations resume to byte-identical shards and never leave a corrupt directory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from data_helpers import random_docs, write_jsonl

from substrate_lm.data import TokenShards, load_stats, prepare_data
from substrate_lm.data import prepare as P
from substrate_lm.errors import SubstrateError

KW = dict(val_fraction=0.2, seed=1, shard_tokens=400, progress=False, batch_chars=300)


@pytest.fixture
def sources(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", random_docs(60, seed=21))
    big = "\n".join(random_docs(40, seed=22))  # one document read in several pieces
    (tmp_path / "b.txt").write_text(big, encoding="utf-8")
    write_jsonl(tmp_path / "c.jsonl", random_docs(30, seed=23))
    return [str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt"), str(tmp_path / "c.jsonl")]


def snapshot(out):
    """Every data file's bytes, plus stats without the timing."""
    files = {f.name: f.read_bytes() for f in sorted(out.glob("*.bin"))}
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    stats.pop("seconds")
    return files, stats


@pytest.fixture
def reference(tok, sources, tmp_path):
    out = tmp_path / "ref"
    prepare_data(sources, tok, out, piece_chars=500, **KW)
    return snapshot(out)


class Boom(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("stop_at", [1, 4, 9, 15])
def test_interrupt_between_batches_then_resume(tok, sources, reference, tmp_path, monkeypatch,
                                               stop_at):
    out = tmp_path / "out"
    real = P._Preparer.process
    calls = {"n": 0}

    def process(self, batch):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise Boom()
        return real(self, batch)

    monkeypatch.setattr(P._Preparer, "process", process)
    with pytest.raises(Boom):
        prepare_data(sources, tok, out, piece_chars=500, **KW)
    monkeypatch.setattr(P._Preparer, "process", real)
    with pytest.raises(SubstrateError, match="not fully prepared"):
        TokenShards(out)
    with pytest.raises(SubstrateError, match="(not finished|not a finished)"):
        load_stats(out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8")) \
        if (out / "manifest.json").exists() else {"position": 0}
    seen = {"items": 0}

    def counting(self, batch):
        seen["items"] += len(batch)
        return real(self, batch)

    monkeypatch.setattr(P._Preparer, "process", counting)
    prepare_data(sources, tok, out, piece_chars=500, **KW)
    assert snapshot(out) == reference
    # the resumed run tokenised only what the last commit had not covered
    total = sum(1 for _ in P._Preparer._stream(_stream_owner(sources)))
    assert seen["items"] == total - manifest["position"]
    assert not list(out.glob("*.tail-*")) and not list(out.glob(".tmp-*"))


def _stream_owner(sources):
    """A bare object with what _Preparer._stream needs, to count the stream's items."""
    class StreamOwner:
        srcs = [P.DataSource.parse(s) for s in sources]
        piece_chars = 500
    return StreamOwner()


def test_interrupt_inside_a_commit_then_resume(tok, sources, reference, tmp_path, monkeypatch):
    # dies after shards and tails are renamed into place but before the manifest points at them
    out = tmp_path / "out"
    real = P.atomic_write_json
    calls = {"n": 0}

    def write_json(path, obj):
        if path.name == "manifest.json":
            calls["n"] += 1
            if calls["n"] == 3:
                raise Boom()
        return real(path, obj)

    monkeypatch.setattr(P, "atomic_write_json", write_json)
    with pytest.raises(Boom):
        prepare_data(sources, tok, out, piece_chars=500, **KW)
    monkeypatch.setattr(P, "atomic_write_json", real)
    # shards beyond the manifest exist now; they are redone, not trusted
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    listed = {sh["file"] for s in ("train", "val") for sh in manifest["splits"][s]["shards"]}
    assert set(f.name for f in out.glob("*-0*.bin")) - listed
    prepare_data(sources, tok, out, piece_chars=500, **KW)
    assert snapshot(out) == reference


def test_damaged_tail_or_debris_restarts_cleanly(tok, sources, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = P._Preparer.process
    calls = {"n": 0}

    def process(self, batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise Boom()
        return real(self, batch)

    monkeypatch.setattr(P._Preparer, "process", process)
    with pytest.raises(Boom):
        prepare_data(sources, tok, out, piece_chars=500, **KW)
    monkeypatch.setattr(P._Preparer, "process", real)
    tails = list(out.glob("*.tail-*.bin"))
    assert tails
    tails[0].write_bytes(tails[0].read_bytes()[:-2])  # truncated tail
    (out / ".tmp-train-00009.bin.4242").write_bytes(b"\0" * 3)  # a half-written temp file
    (out / "val-00077.bin").write_bytes(b"\1" * 10)  # a shard no manifest lists
    prepare_data(sources, tok, out, piece_chars=500, **KW)
    assert snapshot(out) == reference
    assert not (out / "val-00077.bin").exists() and not list(out.glob(".tmp-*"))


def test_killed_process_mid_write_resumes_identically(tok_dir, sources, tmp_path):
    """A real process exit (no cleanup, no finally) in the middle of writing a shard."""
    out = tmp_path / "out"
    ref = tmp_path / "ref"
    script = textwrap.dedent("""
        import os, sys, json
        from substrate_lm.data import prepare as P
        kill_at = int(sys.argv[1])
        calls = [0]
        real = P.atomic_write_bytes
        def dying(path, data, *rest):
            calls[0] += 1
            if calls[0] == kill_at:
                with open(path.with_name(".tmp-" + path.name + ".999"), "wb") as f:
                    f.write(b"\\0" * 7)
                os._exit(137)
            real(path, data, *rest)
        P.atomic_write_bytes = dying
        P.prepare_data(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], piece_chars=500,
                       **json.loads(sys.argv[5]))
    """)
    kw = json.dumps(KW)
    args = [json.dumps(sources), str(tok_dir)]
    r = subprocess.run([sys.executable, "-c", script, "6", *args, str(out), kw],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 137, r.stderr
    assert list(out.glob(".tmp-*"))  # the debris a kill leaves
    prepare_data(sources, str(tok_dir), out, piece_chars=500, **KW)  # resume
    prepare_data(sources, str(tok_dir), ref, piece_chars=500, **KW)
    assert snapshot(out) == snapshot(ref)
