"""`substrate-lm substrate build|verify|show|dump` through the real entry point."""

from __future__ import annotations

import pytest

import substrate_lm.cli.main as cli_main
import substrate_lm.tokenizer as tok_mod
from substrate_lm.substrates import build_substrate, load_substrate, read_embeddings_txt, save_substrate


@pytest.fixture
def run(capsys):
    def _run(*argv):
        rc = cli_main.main(["substrate", *map(str, argv)])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    stats = [{"lang": "en", "language_name": "English",
              "top_ngrams": {2: [("th", 9), ("he", 8)], 3: [("the", 7)]}}]
    path = tmp_path_factory.mktemp("tok") / "bvv"
    tok_mod.save_tokenizer(tok_mod.build_from_stats(stats), path)
    return path


def test_build_verify_dump(run, tmp_path):
    out = tmp_path / "b.safetensors"
    rc, stdout, _ = run("build", "--kind", "bits", "--vocab-size", 4096, "--width", 1024, "--paper", "--seed", 3,
                        "--out", out, "--dump-txt", tmp_path / "emb.txt")
    assert rc == 0 and "verify: OK" in stdout and "tile_period: 512" in stdout
    sub = load_substrate(out)
    assert sub.seed == 3 and sub.meta["tile_period"] == 512 and sub.fingerprint in stdout
    assert (read_embeddings_txt(tmp_path / "emb.txt") == sub.table.numpy()).all()
    rc, stdout, _ = run("verify", out)
    assert rc == 0 and stdout.rstrip().endswith("OK") and "non_binary_entries   : 0" in stdout
    rc, stdout, _ = run("verify", out, "--fingerprint", "sha256:00")
    assert rc == 1 and "FAILED" in stdout
    rc, _, _ = run("dump", out, "--out", tmp_path / "again.txt")
    assert rc == 0 and (tmp_path / "again.txt").read_bytes() == (tmp_path / "emb.txt").read_bytes()


def test_build_refuses_overwrite_and_bad_flags(run, tmp_path):
    out = tmp_path / "t.safetensors"
    assert run("build", "--kind", "token-id", "--vocab-size", 65536, "--width", 16, "--out", out)[0] == 0
    rc, _, err = run("build", "--kind", "token-id", "--vocab-size", 65536, "--width", 16, "--out", out)
    assert rc == 2 and "--force" in err and err.count("\n") == 1
    rc, _, err = run("build", "--kind", "bits", "--vocab-size", 10, "--width", 8, "--bit-order", "lsb",
                     "--out", tmp_path / "x.safetensors")
    assert rc == 2 and "applies to --kind token-id" in err
    rc, _, err = run("build", "--kind", "glyph", "--vocab-size", 10, "--width", 8, "--out", tmp_path / "g.safetensors")
    assert rc == 2 and "token strings" in err
    rc, _, err = run("verify", tmp_path / "missing")
    assert rc == 2 and err.startswith("error:")


def test_build_from_tokenizer_and_show(run, tmp_path, tokenizer_dir, otf_font):
    out = tmp_path / "b.safetensors"
    rc, _, err = run("build", "--kind", "glyph", "--tokenizer", tokenizer_dir, "--width", 8,
                     "--font", tmp_path / "none.otf", "--out", out)
    assert rc == 2 and "apt-get install" in err and err.count("\n") == 1 and not out.exists()
    rc, stdout, _ = run("build", "--kind", "bits", "--tokenizer", tokenizer_dir, "--width", 64, "--out", out)
    assert rc == 0
    sub = load_substrate(out)
    assert sub.table.shape == (65536, 64) and sub.meta["vocab_sha256"].startswith("sha256:")
    png = tmp_path / "a.png"
    rc, stdout, _ = run("show", "A", "--tokenizer", tokenizer_dir, "--substrate", out, "--font", otf_font,
                        "--png", png, "--top", 3)
    assert rc == 0 and "id: 65" in stdout and png.is_file() and "hamming" in stdout
    grid = [ln for ln in stdout.splitlines() if len(ln) == 32 and set(ln) <= {"#", "."}]
    assert len(grid) == 32 and sum(ln.count("#") for ln in grid) > 20
    rc, stdout, _ = run("show", "the", "--tokenizer", tokenizer_dir, "--font", otf_font)
    assert rc == 0 and "'the'" in stdout and "id: 55" in stdout
    rc, _, err = run("show", "no-such-token", "--tokenizer", tokenizer_dir)
    assert rc == 2 and "--id" in err


def test_show_glyph_nearest_rows(run, tmp_path, otf_font):
    vocab = [chr(i) for i in range(0x500)]  # bvv241 convention: id == code point
    path = save_substrate(build_substrate("glyph", vocab, 64, font=otf_font), tmp_path / "g.safetensors")
    rc, stdout, _ = run("show", "A", "--substrate", path, "--font", otf_font, "--top", 2)
    assert rc == 0 and "cosine" in stdout
    lines = stdout.splitlines()
    top = lines[lines.index("nearest rows (cosine):") + 1 :]
    # Greek capital Alpha (913) and Cyrillic capital A (1040) have the same glyph as Latin A
    assert {int(ln.split()[0]) for ln in top} == {913, 1040}
    assert all(ln.split()[1] == "1.0000" for ln in top)


def test_show_binary_row_by_id_without_tokenizer(run, tmp_path):
    out = tmp_path / "t.safetensors"
    run("build", "--kind", "token-id", "--vocab-size", 65536, "--width", 16, "--out", out)
    rc, stdout, _ = run("show", 65, "--id", "--substrate", out, "--top", 2, "--values", 0)
    assert rc == 0 and "[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]" in stdout
    assert "hamming" in stdout and "     64         1" in stdout  # 65 ^ 64 differ in one bit
