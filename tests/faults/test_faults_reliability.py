"""Fault injection for issue 23: a foreign tokenizer, --overwrite on a user's corpus, an edited
frozen table with its flags switched off, debris of killed writers, dangling links, full disks,
binary sources and FIFOs. Each test is seconds; docs/faults.md tables them."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch

from substrate_lm.cli.main import main
from substrate_lm.errors import SubstrateError
from substrate_lm.export import EXPORT_MANIFEST, export_model
from substrate_lm.fsutil import TMP_PREFIX, clean_debris, hold_folder
from substrate_lm.loading import load_model_dir
from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM, substrate_fingerprint
from substrate_lm.substrates import build_substrate, verify_substrate
from substrate_lm.tokenizer import build_from_stats, tokenizer_fingerprint


def cli(*argv):
    return main([str(a) for a in argv])


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "internal error" not in err[0], err
    return err[0]


def tokenizer(ngrams):
    return build_from_stats([{"lang": "en", "language_name": "English",
                              "top_ngrams": {2: [(g, 50 - i) for i, g in enumerate(ngrams)], 3: []}}])


@pytest.fixture(scope="module")
def two_tokenizers(tmp_path_factory):
    """Two bvv241 tokenizers of the same size whose n-gram ids differ."""
    root = tmp_path_factory.mktemp("toks")
    a, b = tokenizer(["th", "he"]), tokenizer(["qz", "xj"])
    assert len(a) == len(b) and tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    a.save_pretrained(root / "a")
    b.save_pretrained(root / "b")
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def model_a(tmp_path_factory, two_tokenizers):
    out = tmp_path_factory.mktemp("model") / "m"
    assert cli("init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", two_tokenizers[0],
               "--model.overrides.n_layer", "1", "--model.overrides.d_model", "32", "--out", out) == 0
    return out


# -- 1. a model used with a tokenizer that is not its own ----------------------------------------


def test_export_records_its_tokenizer_and_generate_refuses_another(model_a, two_tokenizers, capsys):
    a, b = two_tokenizers
    cfg = json.loads((model_a / "config.json").read_text())
    assert cfg["tokenizer_fingerprint"] == tokenizer_fingerprint(tokenizer(["th", "he"]))
    assert cli("generate", model_a, "--tokenizer", b, "--prompt", "the", "--max-new-tokens", "2") == 2
    msg = one_line_error(capsys)
    assert "tokenizer mismatch" in msg and str(model_a) in msg and f"--tokenizer {b}" in msg
    assert "--allow-foreign-tokenizer" in msg
    assert cli("generate", model_a, "--tokenizer", a, "--prompt", "the", "--max-new-tokens", "2", "--greedy") == 0
    capsys.readouterr()
    assert cli("generate", model_a, "--tokenizer", b, "--prompt", "the", "--max-new-tokens", "2", "--greedy",
               "--allow-foreign-tokenizer") == 0
    assert "warning:" in capsys.readouterr().err


def test_init_from_refuses_data_of_another_tokenizer(model_a, two_tokenizers):
    from substrate_lm.training.build import build_run_model
    from substrate_lm.training.config import ModelSection
    from substrate_lm.loading import load_tokenizer

    other = load_tokenizer(two_tokenizers[1])
    with pytest.raises(SubstrateError, match="tokenizer mismatch.*--model.allow_foreign_tokenizer true"):
        build_run_model(ModelSection(init_from=str(model_a)), other)
    build_run_model(ModelSection(init_from=str(model_a), allow_foreign_tokenizer=True), other)
    build_run_model(ModelSection(init_from=str(model_a)), load_tokenizer(two_tokenizers[0]))


def test_fingerprint_ignores_truncation_and_padding(two_tokenizers):
    from substrate_lm.loading import load_tokenizer

    tok = load_tokenizer(two_tokenizers[0])
    before = tokenizer_fingerprint(tok)
    tok(["the the the"], truncation=True, max_length=2, padding="max_length")
    assert tok.backend_tokenizer.truncation is not None
    assert tokenizer_fingerprint(tok) == before


# -- 4. the frozen-table check cannot be switched off by editing config.json ----------------------


def _reseal(folder):
    """Recompute every hash after an edit, as a careful forger would."""
    from substrate_lm.modeling import file_sha256

    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = {"model.safetensors": file_sha256(folder / "model.safetensors")}
    (folder / "config.json").write_text(json.dumps(cfg))
    man = json.loads((folder / EXPORT_MANIFEST).read_text())
    for name in man["files"]:
        man["files"][name] = file_sha256(folder / name)
    (folder / EXPORT_MANIFEST).write_text(json.dumps(man))


def _edit_table(folder, **config):
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["token_embeddings.weight"][5] = 1 - weights["token_embeddings.weight"][5]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config)
    if "substrate_fingerprint" not in config:
        cfg["substrate_fingerprint"] = substrate_fingerprint(weights["token_embeddings.weight"])
    (folder / "config.json").write_text(json.dumps(cfg))
    _reseal(folder)


@pytest.mark.parametrize("edit", [
    {"substrate_frozen": False, "substrate_fingerprint": None},
    {"substrate_frozen": False},            # the edited table's own fingerprint, recomputed
    {"substrate_kind": "trainable", "substrate_frozen": False},
], ids=["unfrozen-null-fingerprint", "unfrozen-recomputed-fingerprint", "relabelled-trainable"])
def test_edited_table_with_flags_switched_off_is_refused(model_a, tmp_path, capsys, edit):
    folder = shutil.copytree(model_a, tmp_path / "m")
    _edit_table(folder, **edit)
    with pytest.raises(SubstrateError):
        load_model_dir(folder)
    assert cli("info", folder) == 2
    one_line_error(capsys)
    report = verify_substrate(folder)
    assert not report["ok"], report


def test_intact_models_of_every_seeded_kind_load(tmp_path):
    for kind, width in (("bits", 16), ("float", 16), ("token-id", 16)):
        sub = build_substrate(kind, 300, width, seed=3)
        cfg = SubstrateConfig(vocab_size=300, n_embed=width, d_model=32, n_layer=1, n_head=2, block_size=16,
                              substrate_kind=kind)
        model = SubstrateForCausalLM(cfg)
        model.set_substrate(sub.table, kind=kind, meta=sub.meta)
        out = export_model(model, tmp_path / kind)
        load_model_dir(out)
        assert verify_substrate(out)["ok"]
        other = build_substrate(kind, 300, width, seed=4)  # a table of another seed under seed 3's meta
        if kind != "token-id":
            model.set_substrate(other.table, kind=kind, meta=sub.meta)
            bad = export_model(model, tmp_path / f"{kind}-other")
            with pytest.raises(SubstrateError, match="regenerate"):
                load_model_dir(bad)


def test_glyph_table_without_unifont_is_one_line(tmp_path, monkeypatch):
    from substrate_lm.substrates.provenance import table_provenance_problem

    monkeypatch.setenv("SUBSTRATE_LM_UNIFONT", str(tmp_path / "no-such-font.otf"))
    cfg = {"substrate_kind": "glyph", "substrate_fingerprint": "sha256:" + "0" * 64, "vocab_size": 3,
           "n_embed": 4, "substrate_meta": {"kind": "glyph"}}
    problem = table_provenance_problem(cfg, None, vocab=["a", "b", "c"])
    assert problem and "Unifont not found" in problem and "\n" not in problem


# -- 2. corpus world --overwrite replaces only a world the tool wrote -----------------------------


def test_world_overwrite_keeps_a_users_own_corpus(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "train.jsonl").write_text('{"text": "my own"}\n')
    args = ("corpus", "world", "--size", "30KB", "--langs", "en", "--questions", "3")
    assert cli(*args, "--out", user, "--overwrite") == 2
    assert "not a world written by substrate-lm" in one_line_error(capsys)
    assert (user / "train.jsonl").read_text() == '{"text": "my own"}\n'
    world = tmp_path / "world"
    assert cli(*args, "--out", world) == 0
    (world / TMP_PREFIX).with_name(f"{TMP_PREFIX}train.jsonl.dead").write_text("debris")
    assert cli(*args, "--out", world, "--overwrite") == 0  # our own world, debris and all
    assert not list(world.glob(f"{TMP_PREFIX}*"))
    (world / "notes.txt").write_text("mine")
    assert cli(*args, "--out", world, "--overwrite") == 2
    assert "notes.txt" in one_line_error(capsys)
    (world / "notes.txt").unlink()
    (world / "train.jsonl").write_text('{"text": "edited by hand"}\n')
    assert cli(*args, "--out", world, "--overwrite") == 2
    assert "changed since" in one_line_error(capsys)


# -- 5. debris of killed writers is cleaned by the next run ---------------------------------------


def test_killed_export_debris_is_cleaned_and_a_live_one_kept(model_a, tmp_path):
    out = tmp_path / "exp"
    model = load_model_dir(model_a)
    dead = tmp_path / ".exp.tmp-dead"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"x" * 1000)
    live = tmp_path / ".exp.tmp-live"
    live.mkdir()
    fd = hold_folder(live)  # an export in progress in another process
    try:
        export_model(model, out)
        assert not dead.exists() and live.exists()
    finally:
        os.close(fd)
    user = tmp_path / ".exp.tmp-notes.txt"  # named like debris but a symlink: never touched
    user.symlink_to(model_a / "config.json")
    assert clean_debris(tmp_path, names=(), prefixes=(".exp.tmp-",)) == 1  # the released live one
    assert user.is_symlink() and (model_a / "config.json").is_file()


def test_export_killed_between_its_renames_gets_the_previous_export_back(model_a, tmp_path):
    out = tmp_path / "exp"
    export_model(load_model_dir(model_a), out)
    parked = tmp_path / ".exp.old-abc"
    os.replace(out, parked)  # the state a SIGKILL between the two renames leaves
    export_model(load_model_dir(model_a), out, overwrite=True)
    assert not parked.exists() and (out / EXPORT_MANIFEST).is_file()


def test_atomic_write_debris_is_cleaned_but_not_a_write_in_progress(tmp_path):
    (tmp_path / f"{TMP_PREFIX}index.json.abc").write_text("{")
    (tmp_path / f"{TMP_PREFIX}other.json.abc").write_text("{")
    (tmp_path / "index.json").write_text("{}")
    assert clean_debris(tmp_path, names=["index.json"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TMP_PREFIX}other.json.abc", "index.json"]


# -- 6. dangling symlinks as --out / --run.dir ----------------------------------------------------


@pytest.mark.parametrize("argv", [
    ("init", "--preset", "tiny", "--out", "{link}"),
    ("corpus", "world", "--size", "30KB", "--out", "{link}"),
    ("train", "--config", "tiny", "--run.dir", "{link}", "--print-config"),
    ("tokenizer", "build", "--corpus", "{txt}", "--out", "{link}"),
    ("substrate", "build", "--kind", "bits", "--vocab-size", "8", "--width", "4", "--out", "{link}"),
], ids=["init", "corpus", "train", "tokenizer", "substrate"])
def test_dangling_symlink_out_is_refused_and_its_target_never_made(tmp_path, capsys, argv):
    (tmp_path / "where").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "where" / "target")
    txt = tmp_path / "en.txt"
    txt.write_text("the cat sat\n" * 20)
    values = {"{link}": str(link), "{txt}": str(txt)}
    assert cli(*[values.get(a, a) for a in argv]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert not (tmp_path / "where" / "target").exists()


# -- 7. a full disk is one line everywhere --------------------------------------------------------


def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_in_init_and_tokenizer_build_is_one_line(tmp_path, capsys, monkeypatch, two_tokenizers):
    monkeypatch.setattr(os, "fsync", _no_space)
    assert cli("init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", two_tokenizers[0],
               "--model.overrides.n_layer", "1", "--out", tmp_path / "m") == 2
    assert "disk full while writing" in one_line_error(capsys)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.tmp-*"))
    txt = tmp_path / "en.txt"
    txt.write_text("the cat sat\n" * 20)
    assert cli("tokenizer", "build", "--corpus", txt, "--langs", "en", "--out", tmp_path / "tok") == 2
    assert "disk full while writing" in one_line_error(capsys)


def test_full_disk_while_train_bootstraps_its_world_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "fsync", _no_space)
    rc = cli("train", "--config", "tiny", "--data.path", tmp_path / "data", "--data.world", "30KB",
             "--run.dir", tmp_path / "run", "--train.steps", "1")
    assert rc == 2
    assert "disk full while writing" in one_line_error(capsys)


# -- 8. binary and non-UTF-8 sources --------------------------------------------------------------


def test_binary_and_non_utf8_files_are_skipped_with_a_count_or_refused(tmp_path, capsys, two_tokenizers):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("the cat sat on the mat\n" * 30)
    (src / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (src / "latin1.txt").write_bytes(("caf\u00e9 d\u00e9j\u00e0 " * 200).encode("latin-1"))
    assert cli("data", "prepare", "--source", src, "--tokenizer", two_tokenizers[0], "--out", tmp_path / "d") == 0
    err = capsys.readouterr().err
    assert "warning: skipped 2 file(s)" in err
    assert json.loads((tmp_path / "d" / "stats.json").read_text())["skipped_files"] == 2
    assert cli("data", "prepare", "--source", f"text:{src / 'blob.txt'}", "--tokenizer", two_tokenizers[0],
               "--out", tmp_path / "d2") == 2
    assert "binary" in one_line_error(capsys)


# -- 9. FIFOs never block -------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ("tokenizer", "encode", "-t", "{tok}", "--file", "{fifo}"),
    ("tokenizer", "inspect", "-t", "{tok}", "--file", "{fifo}"),
    ("tokenizer", "build", "--ngrams", "{fifo}", "--out", "{new}"),
    ("data", "prepare", "--source", "{fifo}", "--tokenizer", "{tok}", "--out", "{new}"),
    ("data", "prepare", "--source", "jsonl:{fifo}", "--tokenizer", "{tok}", "--out", "{new}"),
], ids=["encode", "inspect", "build-ngrams", "prepare-text", "prepare-jsonl"])
def test_a_fifo_is_refused_not_read(tmp_path, capsys, two_tokenizers, argv):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    values = {"{fifo}": str(fifo), "{tok}": str(two_tokenizers[0]), "{new}": str(tmp_path / "new")}
    for key, value in values.items():
        argv = [a.replace(key, value) for a in argv]
    assert cli(*argv) == 2
    assert "FIFO" in one_line_error(capsys)


def test_a_fifo_in_a_source_folder_is_skipped(tmp_path, capsys, two_tokenizers):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("the cat sat on the mat\n" * 30)
    os.mkfifo(src / "pipe.txt")
    assert cli("data", "prepare", "--source", src, "--tokenizer", two_tokenizers[0], "--out", tmp_path / "d") == 0
    assert "skipped 1 file(s)" in capsys.readouterr().err
