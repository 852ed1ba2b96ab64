"""Checkpoints: round trip, verification, corrupt/truncated fallback, SIGKILL mid-save, full disk."""

from __future__ import annotations

import errno
import json
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from substrate_lm.errors import SubstrateError
from substrate_lm.training.checkpoint import (CheckpointCorrupt, CheckpointManager,
                                              capture_rng_state, load_checkpoint,
                                              resolve_checkpoint, restore_rng_state,
                                              verify_checkpoint)


def payload(seed: int):
    g = torch.Generator().manual_seed(seed)
    model = {"a.weight": torch.randn(8, 4, generator=g), "a.bias": torch.randn(8, generator=g)}
    optim = {"state": {"a.weight": {"step": torch.tensor(3.0), "exp_avg": torch.randn(8, 4, generator=g)}},
             "param_groups": [{"lr": 1e-3, "params": ["a.weight"]}]}
    state = {"tokens": 123, "rng": capture_rng_state(), "config": {"train": {"lr": 1e-3}}}
    return model, optim, state


def save(mgr, step, val=None):
    model, optim, state = payload(step)
    return mgr.save(step, model_state=model, optimizer_state=optim, state=state, val_loss=val)


def test_round_trip(tmp_path):
    mgr = CheckpointManager(tmp_path / "ck")
    path = save(mgr, 7, val=1.5)
    ck = load_checkpoint(path)
    model, optim, _ = payload(7)
    assert ck.step == 7 and ck.state["tokens"] == 123 and ck.state["val_loss"] == 1.5
    for k, v in model.items():
        assert torch.equal(ck.model_state[k], v)
    assert torch.equal(ck.optimizer_state["state"]["a.weight"]["exp_avg"],
                       optim["state"]["a.weight"]["exp_avg"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.json",
                                      "optimizer.safetensors", "state.json", "state.safetensors"}
    # no pickles anywhere: every file is JSON or safetensors
    assert not [p for p in path.iterdir() if p.suffix in (".pt", ".pkl", ".bin")]
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith(".tmp")]


def test_rng_state_round_trip():
    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_keep_last_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path / "ck", keep_last=2, keep_best=True)
    for step, val in zip(range(1, 6), [5.0, 1.0, 4.0, 3.0, 2.0]):
        save(mgr, step, val)
    names = [p.name for p in mgr.step_dirs()]
    assert names == ["step-00000005", "step-00000004", "step-00000002"]
    index = json.loads((tmp_path / "ck" / "index.json").read_text())
    assert index["latest"] == "step-00000005" and index["best"]["name"] == "step-00000002"
    mgr2 = CheckpointManager(tmp_path / "ck", keep_last=1, keep_best=False)
    save(mgr2, 6)
    assert [p.name for p in mgr2.step_dirs()] == ["step-00000006"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest"])
def test_corrupt_latest_falls_back_with_one_line(tmp_path, damage):
    mgr = CheckpointManager(tmp_path / "ck", keep_last=3)
    save(mgr, 1)
    latest = save(mgr, 2)
    target = latest / "model.safetensors"
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        (latest / "manifest.json").unlink()
    with pytest.raises(CheckpointCorrupt):
        verify_checkpoint(latest)
    warnings = []
    found = mgr.latest_valid(warn=warnings.append)
    assert found.name == "step-00000001"
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "step-00000002" in warnings[0] and "using step-00000001" in warnings[0]
    assert resolve_checkpoint(tmp_path / "ck", warn=lambda m: None).name == "step-00000001"
    with pytest.raises(SubstrateError, match="unusable"):
        resolve_checkpoint(latest)


def test_full_disk_overwrites_nothing(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path / "ck")
    good = save(mgr, 1)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    index_before = (tmp_path / "ck" / "index.json").read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    from substrate_lm.training import checkpoint as ckpt_module

    monkeypatch.setattr(ckpt_module, "save_file", no_space)
    with pytest.raises(SubstrateError) as exc:
        save(mgr, 2)
    msg = str(exc.value)
    assert "disk full" in msg and "\n" not in msg and "nothing was overwritten" in msg
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.is_dir()] == ["step-00000001"]
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert (tmp_path / "ck" / "index.json").read_bytes() == index_before
    verify_checkpoint(good)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    from substrate_lm.training import checkpoint as C
    root, kill_at = sys.argv[1], sys.argv[2]
    mgr = C.CheckpointManager(root, keep_last=5)
    def save(step):
        g = torch.Generator().manual_seed(step)
        mgr.save(step, model_state={"w": torch.randn(256, 256, generator=g)},
                 optimizer_state={"state": {}, "param_groups": []}, state={"tokens": step})
    save(1)
    real_fsync, real_replace, real_dump = C.fsync_file, C.os.replace, C.json.dump
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if kill_at == "payload":      # model.safetensors written, before its fsync
        C.fsync_file = die
    elif kill_at == "manifest":   # in the middle of writing the manifest
        def half_dump(obj, fh, **k):
            fh.write('{"format": 1, "files": {')
            fh.flush()
            die()
        C.json.dump = half_dump
    elif kill_at == "rename":     # everything written, just before the rename into place
        C.os.replace = die
    save(2)
    print("not killed")
""")


@pytest.mark.parametrize("kill_at", ["payload", "manifest", "rename"])
def test_sigkill_during_save_leaves_latest_loadable(tmp_path, kill_at):
    root = tmp_path / "ck"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root), kill_at],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    mgr = CheckpointManager(root, keep_last=5)
    warnings = []
    found = mgr.latest_valid(warn=warnings.append)
    assert found.name == "step-00000001" and not warnings
    ck = load_checkpoint(found)
    assert ck.state["tokens"] == 1
    assert [p for p in root.iterdir() if p.name.startswith(".tmp-")]  # the killed save's debris
    save(mgr, 2)  # the next save cleans it up and succeeds
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert mgr.latest_valid().name == "step-00000002"


def test_resolve_accepts_run_dir_and_step_dir(tmp_path):
    mgr = CheckpointManager(tmp_path / "run" / "checkpoints")
    p = save(mgr, 4)
    assert resolve_checkpoint(tmp_path / "run") == p
    assert resolve_checkpoint(p) == p
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubstrateError, match="no usable checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


def test_plain_file_round_trip_and_every_bit_flip_is_caught(tmp_path):
    from substrate_lm.training.checkpoint import load_plain_file, save_plain_file

    model, optim, state = payload(3)
    obj = {"step": 3, "optimizer": optim, "rng": state["rng"], "bf16": torch.ones(3, dtype=torch.bfloat16),
           "keys": {1: "a", (2, 3): [1.5, float("inf"), None, True]}, "losses": (4.0, 3.5)}
    path = save_plain_file(tmp_path / "s.safetensors", obj)
    back = load_plain_file(path)
    assert back["keys"] == obj["keys"] and back["losses"] == (4.0, 3.5) and back["step"] == 3
    assert torch.equal(back["optimizer"]["state"]["a.weight"]["exp_avg"],
                       optim["state"]["a.weight"]["exp_avg"])
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["rng"]["torch"], obj["rng"]["torch"])
    raw = path.read_bytes()
    rng = random.Random(0)
    for _ in range(30):
        bad = bytearray(raw)
        i = rng.randrange(len(bad))
        bad[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointCorrupt):
            load_plain_file(path)
    with pytest.raises(TypeError):
        save_plain_file(tmp_path / "x.safetensors", {"obj": object()})
    assert not (tmp_path / "x.safetensors").exists()
