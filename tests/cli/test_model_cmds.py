"""`substrate-lm init | info | generate` end to end, and the model card's verification script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from substrate_lm.cli.main import main
from substrate_lm.modeling import SubstrateForCausalLM
from substrate_lm.tokenizer import build_from_stats

STATS = [
    {"lang": "en", "language_name": "English",
     "top_ngrams": {2: [("th", 50), ("he", 40), ("in", 30)], 3: [("the", 20), ("ing", 10)]}},
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    build_from_stats(STATS).save_pretrained(d)
    return d


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_init_info_generate(tmp_path, tok_dir, capsys):
    out = tmp_path / "m"
    assert run_cli("init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", tok_dir, "--out", out) == 0
    assert (out / "tokenizer.json").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["substrate_kind"] == "token-id" and cfg["n_embed"] == 16 and cfg["scale"] == 4
    assert cfg["eos_token_id"] == 57346 and cfg["vocab_size"] == 65536
    capsys.readouterr()
    assert run_cli("info", out, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["substrate"]["fingerprint_matches"] is True
    assert info["parameters"]["frozen"] == 65536 * 16
    assert run_cli("generate", out, "--prompt", "the", "--max-new-tokens", "5", "--greedy") == 0
    text = capsys.readouterr().out
    assert text.startswith("the")
    assert run_cli("generate", out, "--prompt", "the", "--prompt", "hello world", "--max-new-tokens", "3") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[0] the") and lines[1].startswith("[1] hello world")


def test_user_errors_are_one_line(tmp_path, capsys):
    assert run_cli("info", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "config.json" in err
    assert run_cli("init", "--preset", "nope", "--out", tmp_path / "x") == 2
    assert "unknown preset" in capsys.readouterr().err
    assert run_cli("init", "--preset", "tiny", "--substrate", "glyph", "--out", tmp_path / "y") == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert run_cli("init", "--preset", "tiny", "--model.overrides.n_head", "5", "--out", tmp_path / "z") == 2
    assert "n_head=5 does not divide" in capsys.readouterr().err


def _card_script(seed_card: str, path: str) -> str:
    """The verification script of the seed model card, unchanged but for the repo id."""
    start = seed_card.index("import torch\nfrom transformers import AutoTokenizer, AutoModelForCausalLM\nrepo_id")
    end = seed_card.index('print("non-binary entries:", int(num_non_binary))') + len('print("non-binary entries:", int(num_non_binary))')
    script = seed_card[start:end]
    return script.replace('"Bochkov/emergent-semantics-model-1024-bit-335m"', repr(path))


@pytest.mark.slow
def test_model_card_verification_script_runs_unchanged(tmp_path, shared_file):
    card = shared_file("seeds", "000_982919bd120be6b3.txt").read_text(encoding="utf-8")
    ngrams = shared_file("data", "bvv241", "ngrams-2-3.txt")
    tok = tmp_path / "tok"
    assert run_cli("tokenizer", "build", "--ngrams", ngrams, "--out", tok) == 0
    out = tmp_path / "m1024"
    # the full 65,536 x 1024 table on a backbone small enough for CI
    assert run_cli("init", "--preset", "1024-bit", "--tokenizer", tok, "--out", out,
                   "--model.overrides.n_layer", "1", "--model.overrides.d_model", "1024", "--model.overrides.n_head", "32") == 0
    script = _card_script(card, str(out))
    # AutoTokenizer without trust_remote_code must work on our directory (the card calls it so)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    o = res.stdout
    assert "vocab_size: 65536" in o
    assert "'vocab_size': 65536, 'n_embed': 1024, 'd_model': 1024" in o and "'scale': 1}" in o
    assert "token_embeddings.weight shape: (65536, 1024)" in o
    assert "ids: [65]" in o and "tokens: ['A']" in o
    assert "is strictly binary (0/1): True" in o
    assert "is binary globally (0/1): True" in o
    assert "non-binary entries: 0" in o
    row = re.search(r"1024-dim embedding for token id 65 : (\[.*?\])", o).group(1)
    bits = json.loads(row)
    assert len(bits) == 1024 and bits[:512] == bits[512:]  # published rows: 512 random bits tiled twice


def test_init_from_a_saved_substrate_and_vocab_mismatch(tmp_path, tok_dir, capsys):
    sub = tmp_path / "tid.safetensors"
    assert run_cli("substrate", "build", "--kind", "token-id", "--tokenizer", tok_dir, "--width", 16, "--out", sub) == 0
    out = tmp_path / "m"
    assert run_cli("init", "--preset", "tiny", "--tokenizer", tok_dir, "--substrate-file", sub, "--out", out) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["substrate_kind"] == "token-id" and cfg["n_embed"] == 16
    small = tmp_path / "small.safetensors"
    assert run_cli("substrate", "build", "--kind", "bits", "--vocab-size", 1000, "--width", 64, "--out", small) == 0
    capsys.readouterr()
    assert run_cli("init", "--preset", "tiny", "--tokenizer", tok_dir, "--substrate-file", small, "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "1,000 rows but the tokenizer has 65,536 ids" in err


def test_generate_past_the_context_and_exported_files(tmp_path, tok_dir, capsys):
    """Issue 15: 40 new tokens on a 16-token model; the exported tokenizer, card and file modes."""
    out = tmp_path / "m"
    old = os.umask(0o022)
    try:
        assert run_cli("init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", tok_dir, "--out", out,
                       "--model.overrides.n_layer", "1", "--model.overrides.block_size", "16") == 0
    finally:
        os.umask(old)
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f  # umask respected, not mkstemp's 0600
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 16
    card = (out / "README.md").read_text()
    assert "https://github.com/)" not in card and str(tok_dir) not in card and "included in this folder" in card
    capsys.readouterr()
    long_prompt = "the other thing in the house " * 4  # > 16 tokens
    assert run_cli("generate", out, "--prompt", long_prompt, "--max-new-tokens", "40", "--greedy") == 0
    assert capsys.readouterr().out.startswith(long_prompt)
    assert run_cli("generate", out, "--prompt", "the", "--prompt", long_prompt, "--max-new-tokens", "40") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[0] the") and lines[1].startswith(f"[1] {long_prompt}")


def test_generate_and_info_validate_before_loading(tmp_path, tok_dir, capsys):
    out = tmp_path / "m"
    assert run_cli("init", "--preset", "tiny", "--substrate", "16-bit", "--tokenizer", tok_dir, "--out", out,
                   "--model.overrides.n_layer", "1") == 0
    capsys.readouterr()
    for bad, what in ((["--temperature", "0"], "--temperature"), (["--top-k", "0"], "--top-k"),
                      (["--top-p", "1.5"], "--top-p"), (["--max-new-tokens", "0"], "--max-new-tokens"),
                      (["--device", "nope"], "--device")):
        assert run_cli("generate", out, "--prompt", "the", *bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and what in err, err
    assert run_cli("init", "--preset", "tiny", "--model.overrides.n_layr", "2", "--out", tmp_path / "x") == 2
    assert "did you mean n_layer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # init --out on the existing model: refused without --overwrite, replaced with it
    assert run_cli("init", "--preset", "tiny", "--model.overrides.n_layer", "1", "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli("init", "--preset", "tiny", "--model.overrides.n_layer", "1", "--substrate", "16-bit", "--tokenizer", tok_dir,
                   "--out", out, "--overwrite", "--seed", "3") == 0


def test_generate_threads_device_and_control_strings_as_text(tmp_path, tok_dir, capsys, monkeypatch):
    """generate has --threads/--device like eval and train; a literal "</s>" or "[INST]" in a prompt is
    encoded as its characters (ids checked at the model), in the single and the batched path."""
    import torch

    out = tmp_path / "m"
    assert run_cli("init", "--preset", "tiny", "--tokenizer", tok_dir, "--out", out, "--model.overrides.n_layer", "1") == 0
    seen = []
    original = SubstrateForCausalLM.generate

    def spy(self, input_ids=None, **kw):
        seen.append(input_ids.tolist())
        return original(self, input_ids, **kw)

    monkeypatch.setattr(SubstrateForCausalLM, "generate", spy)
    before = torch.get_num_threads()
    try:
        prompt = "[INST] x </s> <s> [/INST]"  # no n-gram of STATS: one id per character
        assert run_cli("generate", out, "--prompt", prompt, "--max-new-tokens", "2", "--greedy",
                       "--threads", "1", "--device", "cpu") == 0
        assert torch.get_num_threads() == 1
        assert run_cli("generate", out, "--prompt", prompt, "--prompt", "</s>", "--max-new-tokens", "2") == 0
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    tok = build_from_stats(STATS)
    specials = set(tok.all_special_ids)
    assert seen[0] == [[ord(c) for c in prompt]]  # bvv241: a plane-0 character is its own id
    assert not specials & set(seen[0][0])
    batch = seen[1]
    assert batch[1][-4:] == [ord(c) for c in "</s>"] and set(batch[1][:-4]) <= {tok.pad_token_id}
    assert not specials & set(batch[0])
    for bad in (["--threads", "0"], ["--threads", "x"]):
        with pytest.raises(SystemExit) as exc:
            run_cli("generate", out, "--prompt", "the", *bad)
        assert exc.value.code == 2
    assert run_cli("generate", out, "--prompt", "the", "--device", "cuda:99") == 2
    assert "--device" in capsys.readouterr().err
