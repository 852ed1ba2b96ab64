"""Fault injection for loading and exporting model folders (issue 13): hostile folders run no code,
damaged files are refused with one line, and ``--out`` never deletes what the tool did not write.

Each test names the fault it injects; ``FAULTS`` at the bottom is the table for docs/faults.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest
import torch

from substrate_lm.cli.main import main
from substrate_lm.errors import SubstrateError
from substrate_lm.export import EXPORT_MANIFEST, export_model
from substrate_lm.loading import load_model_dir, load_tokenizer
from substrate_lm.modeling import HF_FILES, ComposedConfig, SubstrateConfig, SubstrateForCausalLM, substrate_fingerprint

V = 260

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
raise ImportError("hostile module ran")
"""


def token_id_model(seed=0, kind="token-id"):
    torch.manual_seed(seed)
    cfg = SubstrateConfig(vocab_size=V, n_embed=16, d_model=32, n_layer=1, n_head=4, block_size=32, substrate_kind=kind)
    model = SubstrateForCausalLM(cfg).eval()
    if kind == "trainable":
        return model
    bits = torch.tensor([[(i >> (15 - b)) & 1 for b in range(16)] for i in range(V)], dtype=torch.float32)
    model.set_substrate(bits, kind=kind)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A clean export; tests copy it before damaging it."""
    return export_model(token_id_model(), tmp_path_factory.mktemp("clean") / "m")


@pytest.fixture
def copy(exported, tmp_path):
    def make(name="m"):
        return shutil.copytree(exported, tmp_path / name)

    return make


def cli(*argv):
    return main([str(a) for a in argv])


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# -- hostile folders -------------------------------------------------------------------------------


def plant_evil_code(folder, marker):
    """Replace every .py of an export by code that writes ``marker`` when imported."""
    for name in (*HF_FILES[ComposedConfig.model_type], "tokenization_evil.py"):
        (folder / name).write_text(EVIL.format(marker=str(marker)))


def test_our_folder_with_hostile_code_loads_with_our_classes(copy, tmp_path, capsys):
    folder = copy()
    marker = tmp_path / "MARKER"
    plant_evil_code(folder, marker)
    model = load_model_dir(folder)
    assert type(model).__module__ == "substrate_lm.modeling.modeling_substrate"
    assert cli("info", folder, "--json") == 0
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(folder)  # trust_remote_code off: our registered class
    from substrate_lm.docking.compose import load_expert
    from substrate_lm.evaluation.models import load_model

    load_expert(folder)
    with pytest.raises(SubstrateError):  # no tokenizer in this folder; the model is still not run
        load_model(folder)
    assert not marker.exists()


def test_foreign_folder_needing_its_own_code_is_refused(tmp_path, capsys):
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "MARKER"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil_lm", "architectures": ["EvilForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(EVIL.format(marker=str(marker)))
    assert cli("info", folder) == 2
    assert "--trust-remote-code" in one_line_error(capsys)
    with pytest.raises(SubstrateError, match="trust-remote-code"):
        load_model_dir(folder)
    assert not marker.exists()
    # the flag is what lets a trusted folder's code run (here it fails, after running)
    assert cli("info", folder, "--trust-remote-code") == 2
    one_line_error(capsys)
    assert marker.exists()


def test_hostile_tokenizer_code_is_not_run(copy, tmp_path):
    folder = copy()
    marker = tmp_path / "MARKER"
    plant_evil_code(folder, marker)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    with pytest.raises(SubstrateError, match="trust-remote-code"):
        load_tokenizer(folder)
    assert not marker.exists()


# -- damaged files ---------------------------------------------------------------------------------


def test_sixteen_random_bit_flips_are_all_refused(copy, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = copy()
    weights = folder / "model.safetensors"
    clean = weights.read_bytes()
    rng = random.Random(13)
    refused = 0
    for i in range(16):
        data = bytearray(clean)
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        weights.write_bytes(bytes(data))
        with pytest.raises(SubstrateError, match="model.safetensors does not match"):
            load_model_dir(folder)
        if i < 4:  # the exported modeling file checks the same hash on its own
            with pytest.raises(ValueError, match="model.safetensors does not match"):
                AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        refused += 1
    assert refused == 16
    weights.write_bytes(clean)
    load_model_dir(folder)  # the undamaged file still loads


@pytest.mark.parametrize("fault", ["weights-truncated", "weights-empty", "weights-missing", "config-truncated",
                                   "config-missing", "config-not-utf8", "config-list"])
def test_damaged_export_is_one_line_error(copy, capsys, fault):
    folder = copy()
    weights, config = folder / "model.safetensors", folder / "config.json"
    if fault == "weights-truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif fault == "weights-empty":
        weights.write_bytes(b"")
    elif fault == "weights-missing":
        weights.unlink()
    elif fault == "config-truncated":
        config.write_bytes(config.read_bytes()[:100])
    elif fault == "config-missing":
        config.unlink()
    elif fault == "config-not-utf8":
        config.write_bytes(b"\xff\xfe" + config.read_bytes())
    elif fault == "config-list":
        config.write_text("[]")
    assert cli("info", folder) == 2
    line = one_line_error(capsys)
    assert ("model.safetensors" in line) if fault.startswith("weights") else ("config.json" in line)


def test_edited_config_is_refused_by_the_manifest(copy):
    folder = copy()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["n_head"] = 2
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SubstrateError, match="config.json does not match the sha256 recorded in substrate_export.json"):
        load_model_dir(folder)


def test_frozen_table_without_fingerprint_is_refused(copy):
    folder = copy()
    (folder / EXPORT_MANIFEST).unlink()  # past the manifest: the model's own checks must still refuse
    cfg = json.loads((folder / "config.json").read_text())
    cfg["substrate_fingerprint"] = None
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SubstrateError, match="no substrate_fingerprint"):
        load_model_dir(folder)
    del cfg["substrate_fingerprint"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SubstrateError, match="no substrate_fingerprint"):
        load_model_dir(folder)


def test_unfrozen_flag_does_not_skip_the_check(copy):
    folder = copy()
    (folder / EXPORT_MANIFEST).unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["substrate_fingerprint"] = "sha256:" + "0" * 64
    cfg["substrate_frozen"] = False  # claims a trainable table to dodge the check
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SubstrateError, match="fingerprint"):
        load_model_dir(folder)


def test_hash_list_without_files_or_damaged_manifest_is_refused(copy):
    folder = copy()
    (folder / EXPORT_MANIFEST).unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = {}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SubstrateError, match="records no weights_sha256"):
        load_model_dir(folder)
    cfg["weights_sha256"] = {"../../etc/passwd.safetensors": "sha256:00"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SubstrateError, match="not a weight file name"):
        load_model_dir(folder)
    other = copy("m2")
    (other / EXPORT_MANIFEST).write_text(json.dumps({"format": "substrate-lm/export", "files": {}}))
    with pytest.raises(SubstrateError, match="damaged"):
        load_model_dir(other)


def test_trainable_export_records_the_trained_fingerprint(tmp_path, capsys):
    from substrate_lm.substrates.verify import verify_substrate

    model = token_id_model(kind="trainable")
    initial = substrate_fingerprint(model.token_embeddings.weight)
    model.config.substrate_fingerprint = initial  # as the factory records it
    with torch.no_grad():
        model.token_embeddings.weight.add_(0.1)  # "training"
    out = export_model(model, tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["substrate_fingerprint"] == substrate_fingerprint(model.token_embeddings.weight) != initial
    assert cli("info", out, "--json") == 0
    assert json.loads(capsys.readouterr().out)["substrate"]["fingerprint_matches"] is True
    report = verify_substrate(out)
    assert report["ok"] and report["fingerprint_match"] is True and report["weights_sha256_ok"] is True


# -- --out never deletes what the tool did not write --------------------------------------------


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_init_refuses_a_non_empty_user_folder_even_with_overwrite(tmp_path, capsys):
    user = tmp_path / "notes"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    before = snapshot(user)
    assert cli("init", "--preset", "tiny", "--model.overrides.n_layer", "1", "--out", user) == 2
    assert "not empty" in one_line_error(capsys)
    assert cli("init", "--preset", "tiny", "--model.overrides.n_layer", "1", "--out", user, "--overwrite") == 2
    assert "not a substrate-lm export" in one_line_error(capsys)
    assert snapshot(user) == before


def test_overwrite_replaces_only_our_own_export(copy, capsys):
    folder = copy()
    model = token_id_model(seed=1)
    with pytest.raises(SubstrateError, match="not empty"):
        export_model(model, folder, overwrite=False)
    (folder / "my_eval_results.json").write_text("{}")  # the user's file inside an export
    with pytest.raises(SubstrateError, match="my_eval_results.json"):
        export_model(model, folder, overwrite=True)
    assert (folder / "my_eval_results.json").exists()
    (folder / "my_eval_results.json").unlink()
    old = (folder / "model.safetensors").read_bytes()
    export_model(model, folder, overwrite=True)
    assert (folder / "model.safetensors").read_bytes() != old
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no debris left
    load_model_dir(folder)


def test_export_never_replaces_the_run_folder_or_its_parent(tmp_path):
    from substrate_lm.training.export import export_checkpoint

    run = tmp_path / "runs" / "tiny"
    (run / "checkpoints" / "step_00000010").mkdir(parents=True)
    (run / "log.jsonl").write_text("{}\n")
    before = snapshot(tmp_path)
    for out in (run, run.parent, run / "checkpoints"):
        with pytest.raises(SubstrateError, match="contains the source|not a substrate-lm export"):
            export_checkpoint(run, out, overwrite=True)
        with pytest.raises(SubstrateError, match="not empty|contains the source"):
            export_checkpoint(run, out)
    assert snapshot(tmp_path) == before


def test_out_that_is_a_file_or_a_symlink_is_refused(tmp_path, exported):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    with pytest.raises(SubstrateError, match="not a folder"):
        export_model(token_id_model(), f, overwrite=True)
    link = tmp_path / "link"
    os.symlink(exported, link)
    with pytest.raises(SubstrateError, match="symbolic link"):
        export_model(token_id_model(), link, overwrite=True)
    assert f.read_text() == "keep" and (exported / "model.safetensors").exists()


def test_generate_refuses_a_prompt_that_is_not_utf8(tmp_path, capsys):
    from substrate_lm.cli.model_cmds import check_prompts

    with pytest.raises(SubstrateError, match="not valid UTF-8"):
        check_prompts(["fine", "caf\udcc3\udc28 \udcff"])


# -- every command that loads a folder: no foreign code without the flag, clean stderr -------------


def char_tokenizer(max_len: int = 16):
    """A fast tokenizer with ids 0-3 specials, one id per printable character, unused ids up to V."""
    import string

    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    filler = [f"<unused{i}>" for i in range(V - len(specials) - len(chars))]  # never produced by BPE
    vocab = {t: i for i, t in enumerate(specials + chars + filler)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=max_len)


def foreign_folder_needing_code(tmp_path, marker):
    """A complete-looking foreign model folder (weights, tokenizer) whose config asks for its own code."""
    from safetensors.torch import save_file

    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil_lm", "architectures": ["EvilForCausalLM"], "vocab_size": V,
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(EVIL.format(marker=str(marker)))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    char_tokenizer().save_pretrained(folder)
    return folder


def test_eval_and_analyze_run_no_foreign_code_without_the_flag(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    folder = foreign_folder_needing_code(tmp_path, marker)
    text = tmp_path / "t.txt"
    text.write_text("some held-out text\n")
    bench = tmp_path / "bench"
    (bench / "ai2_arc/ARC-Easy").mkdir(parents=True)
    (bench / "ai2_arc/ARC-Easy/validation.jsonl").write_text(json.dumps(
        {"id": "q1", "question": "Which?", "choices": {"label": ["A", "B"], "text": ["a", "b"]},
         "answerKey": "A"}) + "\n")
    commands = [
        ("eval", "ppl", "--model", folder, "--text", text, "--device", "cpu"),
        ("eval", "--model", folder, "--bench", "arc-e", "--data-dir", bench, "--out", tmp_path / "o1",
         "--protocol", "loglik", "--device", "cpu", "--no-charts"),
        ("eval", "harness", "--model", folder, "--bench", "arc-e", "--data-dir", bench, "--out", tmp_path / "o2"),
        ("analyze", "--model", folder, "--out", tmp_path / "o3", "--device", "cpu", "--maps", "none"),
    ]
    for argv in commands:
        assert cli(*argv) == 2, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        if argv[:2] == ("eval", "--model"):  # `eval` logs its progress first ("arc-e: 1 items ...", "loading evil ...")
            assert [line.split()[0] for line in lines[:-1]] == ["arc-e:", "loading"], lines
            lines = lines[-1:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--trust-remote-code" in lines[0], (argv, lines)
        assert not marker.exists(), argv
    # the flag is what lets the folder's code run (here it fails after running: one line still)
    assert cli("eval", "ppl", "--model", folder, "--text", text, "--device", "cpu", "--trust-remote-code") == 2
    one_line_error(capsys)
    assert marker.exists()


def test_substrate_build_runs_no_tokenizer_code(copy, tmp_path, capsys):
    folder = copy()
    marker = tmp_path / "MARKER"
    plant_evil_code(folder, marker)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    assert cli("substrate", "build", "--kind", "bits", "--width", "16", "--tokenizer", folder,
               "--out", tmp_path / "t.safetensors") == 2
    assert "--trust-remote-code" in one_line_error(capsys)
    assert not marker.exists()


def test_loading_our_folder_leaves_stderr_clean(tmp_path, pinned_env):
    """Real CLI runs: loading our folder logs nothing (no "[transformers] You are using a model of type"),
    long held-out text gives no "sequence length is longer" warning, so an error is one line."""
    import subprocess
    import sys

    folder = export_model(token_id_model(), tmp_path / "m", tokenizer=char_tokenizer(max_len=32))
    text = tmp_path / "t.txt"
    text.write_text("held-out text </s> with <s> control strings. " * 8)  # > 32 tokens
    base = [sys.executable, "-m", "substrate_lm.cli.main", "eval", "ppl", "--model", str(folder),
            "--text", str(text), "--device", "cpu", "--threads", "1", "--no-progress"]
    env = pinned_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    ok = subprocess.run(base + ["--window", "16"], capture_output=True, text=True, env=env, timeout=300)
    # the only stderr line is eval ppl's own note of the window and stride it uses
    assert ok.returncode == 0 and ok.stderr.count("\n") == 1, ok.stderr
    assert ok.stderr.startswith(f"{folder}: window 16, stride 16 (the default"), ok.stderr
    assert "perplexity" in ok.stdout
    bad = subprocess.run(base + ["--window", "64"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1 and "context length" in bad.stderr


#: fault | how injected | expected behaviour | test (for docs/faults.md)
FAULTS = [
    ("hostile .py in our own model folder", "every modeling_*/configuration_*.py replaced by code writing a marker file",
     "info, load_model_dir, AutoModelForCausalLM (no trust flag), load_expert, eval load_model load with substrate-lm's "
     "classes; marker never written", "test_our_folder_with_hostile_code_loads_with_our_classes"),
    ("foreign folder that needs its own code", "config.json with unknown model_type + auto_map to a marker-writing module",
     "one-line error naming --trust-remote-code, marker not written; with the flag the code runs",
     "test_foreign_folder_needing_its_own_code_is_refused"),
    ("hostile tokenizer code", "tokenizer_config.json auto_map to a marker-writing tokenization_evil.py",
     "one-line error naming --trust-remote-code; marker not written", "test_hostile_tokenizer_code_is_not_run"),
    ("random bit flips in model.safetensors", "16 single-bit flips at seeded random offsets",
     "16/16 refused (sha256 in config.json) by load_model_dir and by the exported modeling file",
     "test_sixteen_random_bit_flips_are_all_refused"),
    ("truncated / empty / missing weights", "model.safetensors cut to half, to 0 bytes, deleted",
     "`info` exits 2 with one line naming model.safetensors", "test_damaged_export_is_one_line_error"),
    ("truncated / missing / non-UTF-8 / non-object config.json", "config.json cut at 100 bytes, deleted, BOM-like bytes, `[]`",
     "`info` exits 2 with one line naming config.json", "test_damaged_export_is_one_line_error"),
    ("edited config.json", "n_head changed in place", "refused: differs from substrate_export.json",
     "test_edited_config_is_refused_by_the_manifest"),
    ("null or missing fingerprint of a frozen table", "substrate_fingerprint set to null / removed (manifest deleted)",
     "refused: no substrate_fingerprint", "test_frozen_table_without_fingerprint_is_refused"),
    ("substrate_frozen flipped to false", "wrong fingerprint + substrate_frozen false", "refused: fingerprint mismatch",
     "test_unfrozen_flag_does_not_skip_the_check"),
    ("empty hash list / path in hash list / empty manifest", "weights_sha256 {} or '../../etc/passwd.safetensors'; "
     "manifest with no files", "refused with one line each", "test_hash_list_without_files_or_damaged_manifest_is_refused"),
    ("trainable table exported after training", "table changed after its initial fingerprint was recorded",
     "export records the trained table's fingerprint; info and substrate verify agree (match)",
     "test_trainable_export_records_the_trained_fingerprint"),
    ("--out is a non-empty user folder", "init --out DIR holding a user file, with and without --overwrite",
     "exit 2, one line; folder byte-identical", "test_init_refuses_a_non_empty_user_folder_even_with_overwrite"),
    ("--overwrite on an export holding a user file", "extra file in a previous export",
     "refused naming the file; a clean previous export is replaced, no debris",
     "test_overwrite_replaces_only_our_own_export"),
    ("--out is the run folder, its parent or its checkpoints", "export runs/tiny --out runs/tiny (and parents)",
     "refused before loading; tree byte-identical", "test_export_never_replaces_the_run_folder_or_its_parent"),
    ("--out is a file or a symlink", "regular file / symlink to another export", "refused; targets untouched",
     "test_out_that_is_a_file_or_a_symlink_is_refused"),
    ("prompt not valid UTF-8", "lone surrogates as argv decodes invalid bytes", "one-line error",
     "test_generate_refuses_a_prompt_that_is_not_utf8"),
    ("foreign folder needing its own code, in eval and analyze", "complete folder (weights, tokenizer) whose "
     "config.json auto_map names a marker-writing module", "eval, eval ppl, eval harness, analyze: one-line error "
     "naming --trust-remote-code, marker not written; with the flag the code runs",
     "test_eval_and_analyze_run_no_foreign_code_without_the_flag"),
    ("hostile tokenizer code given to substrate build", "tokenizer_config.json auto_map to a marker-writing module",
     "one-line error naming --trust-remote-code; marker not written", "test_substrate_build_runs_no_tokenizer_code"),
    ("transformers warnings around a load", "our export with a tokenizer, held-out text longer than model_max_length",
     "eval ppl stderr empty on success, exactly one error line on failure",
     "test_loading_our_folder_leaves_stderr_clean"),
]
