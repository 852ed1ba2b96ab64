"""What --resume refuses (the run's identity) and allows (noted in the log); checkpoint debris."""

from __future__ import annotations

import pytest
from training_helpers import read_log, tiny_config

from substrate_lm.errors import SubstrateError
from substrate_lm.training import CheckpointManager, Trainer, build_run_model
from substrate_lm.training.build import load_run_data, load_run_tokenizer
from substrate_lm.training.config import resume_changes

SHORT = {"train.steps": 4, "checkpoint.interval": 2, "eval.interval": 2}


@pytest.fixture
def run4(tmp_path, prepared):
    run = tmp_path / "run"
    Trainer(tiny_config(run, prepared, **SHORT)).fit()
    return run


def resume(run, prepared, **over):
    return Trainer(tiny_config(run, prepared, **{**SHORT, **over}), resume=True).fit()


def test_identity_changes_are_refused_in_one_line_listing_them(run4, prepared):
    before = sorted(p.name for p in (run4 / "checkpoints").iterdir())
    log = (run4 / "log.jsonl").read_text()
    with pytest.raises(SubstrateError) as err:
        resume(run4, prepared, **{"train.seed": 1, "train.seq_len": 16, "train.batch_size": 8,
                                  "train.steps": 6})
    msg = str(err.value)
    assert "\n" not in msg and "--resume cannot change" in msg
    for part in ("train.seed 0 -> 1", "train.seq_len 32 -> 16", "global batch 4 -> 8",
                 "train.batch_size 4 -> 8", "new --run.dir"):
        assert part in msg
    assert "train.steps" not in msg  # allowed changes are not what it refuses
    with pytest.raises(SubstrateError, match=r"model.overrides.n_layer None -> 3") as err:
        resume(run4, prepared, **{"model.overrides": {"n_layer": 3}})
    assert "\n" not in str(err.value)
    # nothing was touched
    assert sorted(p.name for p in (run4 / "checkpoints").iterdir()) == before
    assert (run4 / "log.jsonl").read_text() == log


def test_a_handed_in_model_of_another_depth_is_refused(run4, prepared):
    cfg = tiny_config(run4, prepared, **SHORT)
    other = tiny_config(run4, prepared, **{**SHORT, "model.overrides": {"n_layer": 3}})
    data = load_run_data(cfg.data)
    tok = load_run_tokenizer(cfg.model, data)
    model = build_run_model(other.model, tok, seed=0)
    with pytest.raises(SubstrateError, match=r"cannot change the model .*n_layer 2 -> 3") as err:
        Trainer(cfg, model=model, tokenizer=tok, resume=True).fit()
    assert "\n" not in str(err.value)


def test_safe_changes_are_allowed_and_noted(run4, prepared, capsys):
    capsys.readouterr()
    res = resume(run4, prepared, **{"train.steps": 6, "eval.interval": 3, "log.interval": 2,
                                    "checkpoint.interval": 3})
    assert res.step == 6
    note = [ln for ln in capsys.readouterr().err.splitlines() if "changed settings" in ln]
    assert len(note) == 1
    for part in ("train.steps 4 -> 6", "eval.interval 2 -> 3", "log.interval 1 -> 2",
                 "checkpoint.interval 2 -> 3"):
        assert part in note[0]
    assert [r["step"] for r in read_log(run4)][:4] == [1, 2, 3, 4]


def test_world_size_rules():
    from substrate_lm.training import load_config

    saved = load_config("tiny", {"train.batch_size": 4, "train.grad_accum": 1}).to_dict()
    # 4 ranks x 4 -> 2 ranks x 4 x accum 2: the global batch of 16 is kept
    cfg = load_config("tiny", {"train.batch_size": 4, "train.grad_accum": 2})
    refused, allowed = resume_changes(saved, 4, cfg, 2)
    assert refused == [] and allowed == [
        "train.grad_accum 1 -> 2, world size 4 -> 2 (global batch 16 kept)"]
    # ... or 2 ranks x 8 rows
    refused, allowed = resume_changes(saved, 4, load_config("tiny", {"train.batch_size": 8}), 2)
    assert refused == [] and "global batch 16 kept" in allowed[0]
    # 4 ranks -> 2 with the same grad_accum halves the global batch: refused
    refused, _ = resume_changes(saved, 4, load_config("tiny", {"train.batch_size": 4}), 2)
    assert refused and refused[0].startswith("global batch 16 -> 8 sequences (world size 4 -> 2;")
    # the same world size and config: nothing to say
    assert resume_changes(saved, 1, load_config("tiny", {"train.batch_size": 4}), 1) == ([], [])


def test_debris_of_killed_saves_and_prunes_is_cleaned_on_the_next_run(run4, prepared, capsys, monkeypatch):
    import shutil

    from substrate_lm.training import checkpoint as ckmod

    root = run4 / "checkpoints"
    # a kill while pruning: the folder was renamed, its deletion cut short
    real = shutil.rmtree

    def killed(path, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckmod.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        CheckpointManager(root, keep_last=1, keep_best=False).prune()
    monkeypatch.setattr(ckmod.shutil, "rmtree", real)
    assert [p.name for p in root.iterdir() if p.name.startswith(".del-step-00000002")]
    assert not (root / "step-00000002").exists()  # never a half-deleted step-N
    # older debris: a killed save, a replaced step, a step half-deleted by an older version
    (root / ".tmp-step-00000006-99").mkdir()
    (root / ".tmp-step-00000006-99" / "model.safetensors").write_bytes(b"x")
    (root / ".old-step-00000004-98").mkdir()
    (root / ".tmp-index.json.k1ll3d").write_text('{"latest": ')  # a killed index.json write
    half = root / "step-00000001"
    half.mkdir()
    (half / "state.json").write_text("{}")
    mine = root / "step-00000000"  # not ours: a user file inside; kept
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    capsys.readouterr()
    resume(run4, prepared, **{"train.steps": 6})
    names = sorted(p.name for p in root.iterdir())
    assert not [n for n in names if n.startswith((".tmp-", ".old-", ".del-"))]
    assert "step-00000001" not in names and "step-00000000" in names
    assert "removed" in capsys.readouterr().err
