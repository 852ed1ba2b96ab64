"""Fault injection for training runs, checkpoints and data folders (see docs/faults.md).

Every test breaks something on purpose (a kill, a truncation, a bit flip, a full disk, a second
trainer, a doctored folder) and checks the promise: one line naming the problem, nothing of the
user's lost or touched, and the run able to continue from the last intact state. Tiny configs,
seconds each; the subprocess tests pin the thread count (``pinned_env``) so numbers compare.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from training_helpers import make_char_tokenizer, make_corpus, read_log, tiny_config  # noqa: E402

from substrate_lm.errors import SubstrateError  # noqa: E402
from substrate_lm.fsutil import FolderLock  # noqa: E402
from substrate_lm.training import Trainer, load_checkpoint, model_from_checkpoint  # noqa: E402
from substrate_lm.training import checkpoint as C  # noqa: E402
from substrate_lm.training.checkpoint import (CheckpointCorrupt, CheckpointManager,  # noqa: E402
                                              verify_checkpoint)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A prepared data folder of a small patterned corpus and its character tokenizer."""
    from substrate_lm.data import prepare_data

    root = tmp_path_factory.mktemp("fault_data")
    tok_dir = root / "tok"
    make_char_tokenizer().save_pretrained(str(tok_dir))
    corpus = make_corpus(root / "corpus.jsonl", n_docs=200, seed=0)
    out = root / "data"
    prepare_data(str(corpus), str(tok_dir), out, val_fraction=0.1, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data):
    """A 4-step run with checkpoints at steps 2 and 4 (copied by the tests that damage it)."""
    run = tmp_path_factory.mktemp("fault_run") / "run"
    Trainer(tiny_config(run, data, **{"train.steps": 4, "checkpoint.interval": 2,
                                      "eval.interval": 2})).fit()
    return run


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _one_line(msg: str) -> bool:
    return bool(msg) and "\n" not in msg and "Traceback" not in msg


def _flip_bit(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def _rewrite_manifest(step_dir: Path, edit) -> None:
    """Edit a manifest and re-seal its own hash: damage that only the structure checks can see."""
    man = json.loads((step_dir / "manifest.json").read_text())
    edit(man)
    man["self_sha256"] = C._manifest_digest(man)
    (step_dir / "manifest.json").write_text(json.dumps(man))


# ----------------------------------------------------------------------------------------------
# Checkpoints: plain data only, every byte checked


def test_checkpoint_files_are_json_toml_or_safetensors(finished_run):
    step = finished_run / "checkpoints" / "step-00000004"
    names = sorted(p.name for p in step.iterdir())
    assert names == ["config.toml", "manifest.json", "model.safetensors", "optimizer.json",
                     "optimizer.safetensors", "state.json", "state.safetensors"]
    for p in step.iterdir():
        raw = p.read_bytes()
        assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # no pickle, no zip
        if p.suffix == ".json":
            json.loads(raw)
        elif p.suffix == ".safetensors":
            n = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8:8 + n])
            assert all(isinstance(v, dict) for k, v in header.items() if k != "__metadata__")


def test_crafted_model_spec_never_imports_or_calls_anything(finished_run, tmp_path, monkeypatch):
    # a module that would leave a marker if anything imported it
    (tmp_path / "evil_mod.py").write_text(
        f"open({str(tmp_path / 'PWNED')!r}, 'w').write('x')\nclass Evil:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for bad_class in ("evil_mod:Evil", "os:system", "substrate_lm.fsutil:FolderLock",
                      "substrate_lm.training.build:shutil.rmtree", "builtins:eval"):
        run = _copy_run(finished_run, tmp_path / f"run-{abs(hash(bad_class))}")
        step = run / "checkpoints" / "step-00000004"
        doc = json.loads((step / "state.json").read_text())
        doc["tree"]["model_spec"]["class"] = bad_class
        (step / "state.json").write_text(json.dumps(doc))
        _rewrite_manifest(step, lambda m: m["files"]["state.json"].update(
            sha256=hashlib.sha256((step / "state.json").read_bytes()).hexdigest(),
            bytes=(step / "state.json").stat().st_size))
        verify_checkpoint(step)  # a consistent forgery: the hashes cannot catch it ...
        with pytest.raises(SubstrateError) as exc:  # ... the class allow-list does
            model_from_checkpoint(step)
        assert _one_line(str(exc.value)) and bad_class in str(exc.value)
    assert not (tmp_path / "PWNED").exists() and "evil_mod" not in sys.modules


def test_pickled_legacy_checkpoint_is_refused_unread(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    import pickle

    step = tmp_path / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(step / "model.safetensors"))
    (step / "state.pt").write_bytes(pickle.dumps({"step": 2, "x": Boom()}))
    files = {n: {"sha256": hashlib.sha256((step / n).read_bytes()).hexdigest(),
                 "bytes": (step / n).stat().st_size} for n in ("model.safetensors", "state.pt")}
    (step / "manifest.json").write_text(json.dumps({"format": 1, "step": 2, "files": files}))
    with pytest.raises(CheckpointCorrupt, match="pickled format"):
        verify_checkpoint(step)
    with pytest.raises(CheckpointCorrupt, match="pickled format"):
        load_checkpoint(step, verify=False)
    with pytest.raises(SubstrateError, match="pickled format"):
        model_from_checkpoint(step)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", ["no-files", "files-list", "drop-bytes", "bad-sha", "bad-name",
                                     "path-escape", "step-mismatch", "edited-unsealed",
                                     "not-json", "flip-manifest-byte"])
def test_damaged_manifest_is_corrupt_and_resume_uses_the_previous(finished_run, data, tmp_path,
                                                                  capsys, damage):
    run = _copy_run(finished_run, tmp_path / "run")
    step = run / "checkpoints" / "step-00000004"
    edits = {
        "no-files": lambda m: m.update(files={}),
        "files-list": lambda m: m.update(files=list(m["files"])),
        "drop-bytes": lambda m: m["files"]["model.safetensors"].pop("bytes"),
        "bad-sha": lambda m: m["files"]["state.json"].update(sha256="zz"),
        "bad-name": lambda m: m["files"].update({"": m["files"]["state.json"]}),
        "path-escape": lambda m: m["files"].update({"../../config.toml": m["files"]["state.json"]}),
        "step-mismatch": lambda m: m.update(step=2),
    }
    if damage in edits:
        _rewrite_manifest(step, edits[damage])
    elif damage == "edited-unsealed":
        man = json.loads((step / "manifest.json").read_text())
        man["files"]["model.safetensors"]["bytes"] += 0  # same values, but drop a key:
        man["files"]["model.safetensors"]["byte"] = man["files"]["model.safetensors"].pop("bytes")
        (step / "manifest.json").write_text(json.dumps(man))
    elif damage == "not-json":
        (step / "manifest.json").write_bytes(b"\xff\xfe{not json")
    else:
        _flip_bit(step / "manifest.json", random.Random(3))
    with pytest.raises(CheckpointCorrupt) as exc:
        verify_checkpoint(step)
    assert _one_line(str(exc.value))
    capsys.readouterr()
    result = Trainer(tiny_config(run, data, **{"train.steps": 6}), resume=True).fit()
    err = capsys.readouterr().err
    warns = [ln for ln in err.splitlines() if "unusable" in ln]
    assert len(warns) == 1 and "step-00000004" in warns[0] and "using step-00000002" in warns[0]
    assert "(step 2)" in err and result.step == 6
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4, 5, 6]


def test_random_bit_flips_in_any_checkpoint_file_are_all_caught(finished_run, tmp_path):
    rng = random.Random(0)
    src = finished_run / "checkpoints" / "step-00000004"
    names = sorted(p.name for p in src.iterdir())
    caught = 0
    trials = 40
    for t in range(trials):
        step = tmp_path / f"t{t}" / "step-00000004"
        shutil.copytree(src, step)
        _flip_bit(step / names[t % len(names)], rng)
        try:
            verify_checkpoint(step)
        except CheckpointCorrupt as exc:
            assert _one_line(str(exc))
            caught += 1
        shutil.rmtree(step.parent)
    assert caught == trials


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "state.json",
                                  "optimizer.json", "state.safetensors", "manifest.json"])
def test_truncated_checkpoint_files_are_caught(finished_run, tmp_path, name):
    step = tmp_path / "step-00000004"
    shutil.copytree(finished_run / "checkpoints" / "step-00000004", step)
    raw = (step / name).read_bytes()
    (step / name).write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CheckpointCorrupt):
        verify_checkpoint(step)
    with pytest.raises(SubstrateError) as exc:
        model_from_checkpoint(step)
    assert _one_line(str(exc.value))


def test_all_checkpoints_damaged_refuses_to_start_over(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    for step in (run / "checkpoints").glob("step-*"):
        (step / "model.safetensors").write_bytes(b"")
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    cfg = tiny_config(run, data, **{"train.steps": 6})
    with pytest.raises(SubstrateError, match="no usable checkpoint") as exc:
        Trainer(cfg, resume=True).fit()
    assert _one_line(str(exc.value))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


# ----------------------------------------------------------------------------------------------
# Kills: mid-save and mid-log, in a real trainer process

KILL_TRAINER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[3])
    from training_helpers import tiny_config
    from substrate_lm.training import Trainer
    from substrate_lm.training import checkpoint as C, metrics as M
    run, data, where, interval = sys.argv[1], sys.argv[2], sys.argv[4], int(sys.argv[5])
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if where == "save":            # the 2nd checkpoint: payload written, before its fsync
        real = C.fsync_file
        def fsync(path):
            if "step-00000004" in str(path):
                die()
            return real(path)
        C.fsync_file = fsync
    elif where == "log":           # a record cut inside a UTF-8 character, at step 3
        real_log = M.RunLogger.log
        def log(self, record):
            if record.get("step") == 3 and record.get("event") == "train":
                self._fh.flush()
                with open(self.jsonl_path, "ab") as fh:
                    fh.write('{"event": "train", "step": 3, "x": "\u00e9'.encode()[:-1])
                die()
            return real_log(self, record)
        M.RunLogger.log = log
    Trainer(tiny_config(run, data, **{"train.steps": 6, "checkpoint.interval": interval,
                                      "eval.interval": 2})).fit()
    print("not killed")
""")


def _kill_run(run: Path, data: Path, where: str, env, interval: int) -> subprocess.CompletedProcess:
    helpers = str(Path(__file__).resolve().parent.parent / "training")
    proc = subprocess.run([sys.executable, "-c", KILL_TRAINER, str(run), str(data), helpers, where,
                           str(interval)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_sigkill_mid_save_then_resume_is_bit_identical(tmp_path, data, pinned_env):
    over = {"train.steps": 6, "checkpoint.interval": 2, "eval.interval": 2}
    ref = Trainer(tiny_config(tmp_path / "ref", data, **over)).fit()
    run = tmp_path / "run"
    _kill_run(run, data, "save", pinned_env(), 2)
    ck = run / "checkpoints"
    assert [p.name for p in CheckpointManager(ck).step_dirs()] == ["step-00000002"]
    assert [p for p in ck.iterdir() if p.name.startswith(".tmp-")]  # the killed save's debris
    # the lock of the killed trainer is stale: taken over, not an error
    resumed = Trainer(tiny_config(run, data, **over), resume=True).fit()
    assert not [p for p in ck.iterdir() if p.name.startswith(".tmp-")]
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in read_log(run)] == [r["loss"] for r in read_log(tmp_path / "ref")]
    for (k, p), (_, q) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), k


def test_sigkill_mid_log_before_first_checkpoint_leaves_no_duplicates(tmp_path, data, pinned_env,
                                                                      capsys):
    run = tmp_path / "run"
    _kill_run(run, data, "log", pinned_env(), 4)
    raw = (run / "log.jsonl").read_bytes()
    assert raw.endswith(b"\xc3")  # cut inside a UTF-8 character
    assert not (run / "checkpoints").exists()
    # a plain rerun (nothing to resume) starts the log afresh: no duplicates, no broken line
    Trainer(tiny_config(run, data, **{"train.steps": 4, "checkpoint.interval": 2,
                                      "eval.interval": 2})).fit()
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2, 3, 4]


def test_log_cut_inside_utf8_then_resume(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    with open(run / "log.jsonl", "ab") as fh:
        fh.write('{"event": "train", "step": 3, "loss": 1.0, "note": "\u00e9\u4e2d'.encode()[:-2])
    Trainer(tiny_config(run, data, **{"train.steps": 5}), resume=True).fit()
    steps = [json.loads(x)["step"] for x in
             (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
             if json.loads(x)["event"] == "train"]
    assert steps == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------------------------
# Full disk


class _FullDiskFile:
    """A text file whose writes fail with ENOSPC (stands in for a full disk without root)."""

    def __init__(self, *a, **k):
        pass

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["checkpoint", "log"])
def test_full_disk_injected_is_one_line_and_keeps_the_previous_checkpoint(
        finished_run, data, tmp_path, monkeypatch, where):
    from substrate_lm.training import metrics

    run = _copy_run(finished_run, tmp_path / "run")
    if where == "checkpoint":
        def no_space(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(C, "fsync_file", no_space)
    else:
        import builtins

        def full_open(path, *a, **k):
            return _FullDiskFile() if str(path).endswith("log.jsonl") else builtins.open(path, *a, **k)
        monkeypatch.setattr(metrics, "open", full_open, raising=False)
    with pytest.raises(SubstrateError) as exc:
        Trainer(tiny_config(run, data, **{"train.steps": 6, "checkpoint.interval": 1}),
                resume=True).fit()
    msg = str(exc.value)
    assert _one_line(msg) and "disk full" in msg and "--resume" in msg
    monkeypatch.undo()
    assert CheckpointManager(run / "checkpoints").latest_valid().name == "step-00000004"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    result = Trainer(tiny_config(run, data, **{"train.steps": 6}), resume=True).fit()
    assert result.step == 6


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 48 MiB tmpfs (root only), unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root; the injected "
                    "ENOSPC tests cover the same code paths")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:100]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> None:
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("fill_at", ["checkpoint", "log"])
def test_real_full_disk_on_tmpfs(small_tmpfs, data, fill_at):
    run = small_tmpfs / "run"
    over = {"train.steps": 4, "checkpoint.interval": 1, "eval.interval": 0}

    def filler(record):
        # after step 2 is logged the next write is its checkpoint; after checkpoint 2 the log
        if record["step"] == 2 and record["event"] == ("train" if fill_at == "checkpoint"
                                                       else "checkpoint"):
            _fill(small_tmpfs / "filler")

    with pytest.raises(SubstrateError) as exc:
        Trainer(tiny_config(run, data, **over), callbacks=[filler]).fit()
    msg = str(exc.value)
    assert _one_line(msg) and "disk full" in msg
    good = CheckpointManager(run / "checkpoints").latest_valid()
    assert good is not None and good.name == ("step-00000001" if fill_at == "checkpoint"
                                              else "step-00000002")
    load_checkpoint(good)
    (small_tmpfs / "filler").unlink()
    result = Trainer(tiny_config(run, data, **over), resume=True).fit()
    assert result.step == 4
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------
# Run identity: locks, copies, refused configs

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from substrate_lm.fsutil import FolderLock
    FolderLock(sys.argv[1], "run folder").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_second_trainer_on_a_locked_folder_fails_at_once_then_takes_over_a_dead_lock(
        tmp_path, data, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SubstrateError) as exc:
            Trainer(tiny_config(run, data, **{"train.steps": 2})).fit()
        msg = str(exc.value)
        assert _one_line(msg) and f"pid {holder.pid}" in msg and "in use" in msg
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing else was written
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    Trainer(tiny_config(run, data, **{"train.steps": 2, "eval.interval": 0})).fit()
    assert f"pid {holder.pid}" in capsys.readouterr().err  # the stale lock was taken over
    assert not (run / ".lock").exists()  # released at the end


def test_two_trainers_in_one_process_are_refused_too(tmp_path, data):
    run = tmp_path / "run"
    with FolderLock(run, "run folder"):
        with pytest.raises(SubstrateError, match=f"pid {os.getpid()}"):
            Trainer(tiny_config(run, data, **{"train.steps": 1})).fit()
    Trainer(tiny_config(run, data, **{"train.steps": 1, "eval.interval": 0})).fit()


def test_resume_of_a_copied_run_folder_trains_into_the_copy(finished_run, tmp_path):
    from substrate_lm.cli.main import main

    original = _copy_run(finished_run, tmp_path / "original")
    # the saved config names the original folder; move it so a write there would be visible
    (original / "config.toml").write_text((original / "config.toml").read_text().replace(
        str(finished_run), str(original)))
    snapshot = {p: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    copy = _copy_run(original, tmp_path / "copy")
    assert main(["train", "--config", str(copy), "--resume", "--train.steps", "6"]) == 0
    assert CheckpointManager(copy / "checkpoints").latest_valid().name == "step-00000006"
    assert {p: p.read_bytes() for p in original.rglob("*") if p.is_file()} == snapshot
    assert [r["step"] for r in read_log(copy)] == [1, 2, 3, 4, 5, 6]


def test_a_refused_config_leaves_no_files(tmp_path, data):
    run = tmp_path / "run"
    cfg = tiny_config(run, data, **{"train.seq_len": 100000, "log.tensorboard": True})
    with pytest.raises(SubstrateError, match="seq_len") as exc:
        Trainer(cfg).fit()
    assert _one_line(str(exc.value))
    assert not run.exists()
    with pytest.raises(SubstrateError, match="missing corpus"):
        Trainer(tiny_config(run, tmp_path / "nowhere", **{"log.tensorboard": True})).fit()
    assert not run.exists()


# ----------------------------------------------------------------------------------------------
# Hostile data folders


def _prepare_half(tmp_path: Path, tok_dir: Path) -> tuple[Path, dict]:
    from substrate_lm.data import prepare_data

    src = tmp_path / "src.jsonl"
    make_corpus(src, n_docs=60, seed=1)
    out = tmp_path / "prepared"
    prepare_data(str(src), str(tok_dir), out, val_fraction=0.1, seed=0, shard_tokens=500,
                 progress=False)
    return out, dict(src=src, tok=tok_dir)


@pytest.mark.parametrize("victim_rel", ["../victim.bin", "../../victim.bin", "/ABS/victim.bin"])
def test_doctored_manifest_never_deletes_outside_out(tmp_path, data, victim_rel):
    from substrate_lm.data import prepare_data

    tok_dir = data.parent / "tok"
    out, kw = _prepare_half(tmp_path / "w", tok_dir)
    victim = (out / victim_rel).resolve() if not victim_rel.startswith("/ABS") else \
        tmp_path / "victim.bin"
    victim.parent.mkdir(parents=True, exist_ok=True)
    arr = np.arange(10, dtype="<u2")
    victim.write_bytes(arr.tobytes())
    name = str(victim) if victim_rel.startswith("/ABS") else victim_rel
    man = json.loads((out / "manifest.json").read_text())
    man["complete"] = False  # "half-prepared": a resume will load the tail and later delete it
    man["splits"]["train"]["tail"] = {
        "file": name, "tokens": 10,
        "sha256": "sha256:" + hashlib.sha256(arr.tobytes()).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(man))
    prepare_data(str(kw["src"]), str(tok_dir), out, val_fraction=0.1, seed=0, shard_tokens=500,
                 progress=False)
    assert victim.read_bytes() == arr.tobytes()
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


@pytest.mark.parametrize("entry", ["../../etc/hostname", "train-00000.bin\n", 5, None])
def test_doctored_shard_list_is_one_line_and_never_read(tmp_path, data, entry):
    from substrate_lm.data import TokenShards

    out = tmp_path / "d"
    shutil.copytree(data, out)
    man = json.loads((out / "manifest.json").read_text())
    man["splits"]["train"]["shards"][0]["file"] = entry
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(SubstrateError) as exc:
        TokenShards(out, "train")
    assert _one_line(str(exc.value)) and "damaged" in str(exc.value)


def test_a_folder_named_like_a_shard_is_not_ours_to_delete(tmp_path, data):
    from substrate_lm.data import prepare_data

    out, kw = _prepare_half(tmp_path / "w", data.parent / "tok")
    keep = out / "train-99999.bin"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    prepare_data(str(kw["src"]), str(kw["tok"]), out, val_fraction=0.1, seed=0, shard_tokens=500,
                 progress=False, overwrite=True)
    assert (keep / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["meta-list", "manifest-string", "splits-list", "vocab-text",
                                    "tokenizer-string"])
def test_damaged_json_of_a_data_folder_is_one_line_for_training(tmp_path, data, damage):
    out = tmp_path / "d"
    shutil.copytree(data, out)
    meta = json.loads((out / "meta.json").read_text())
    man = json.loads((out / "manifest.json").read_text())
    if damage == "meta-list":
        meta = [meta]
    elif damage == "manifest-string":
        man = "complete"
    elif damage == "splits-list":
        man["splits"] = [man["splits"]]
    elif damage == "vocab-text":
        meta["tokenizer"]["vocab_size"] = "many"
    else:
        meta["tokenizer"] = "char"
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(SubstrateError) as exc:
        Trainer(tiny_config(tmp_path / "run", out, **{"train.steps": 1})).fit()
    assert _one_line(str(exc.value))
    assert not (tmp_path / "run").exists()
