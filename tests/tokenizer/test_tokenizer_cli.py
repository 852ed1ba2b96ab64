"""``substrate-lm tokenizer build|encode|decode|inspect`` through the module's register()."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from substrate_lm.cli import main as main_mod, tokenizer as cli
from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import save_tokenizer, write_ngram_file


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="substrate-lm")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def small_dir(small_tok, tmp_path_factory):
    return save_tokenizer(small_tok, tmp_path_factory.mktemp("tok"))


def test_build_published(ngrams_path, tmp_path, capsys):
    out = tmp_path / "bvv"
    assert run("tokenizer", "build", "--ngrams", str(ngrams_path), "--out", str(out)) == 0
    assert capsys.readouterr().out.strip() == f"bvv241-2-3: 65,536 entries, 8,177 n-grams, 12,224 merges -> {out}"
    assert run("tokenizer", "encode", "-t", str(out), "hello", "the", "test") == 0
    assert capsys.readouterr().out.strip() == "104 56035 111 32 57811 32 116 56117"
    with pytest.raises(SubstrateError, match="already holds a tokenizer"):
        run("tokenizer", "build", "--ngrams", str(ngrams_path), "--out", str(out))


def test_build_overwrite_and_langs(small_stats, tmp_path, capsys):
    stats = write_ngram_file(small_stats, tmp_path / "stats.json")
    out = tmp_path / "tok"
    assert run("tokenizer", "build", "--ngrams", str(stats), "--out", str(out), "--langs", "ru") == 0
    assert "65,536 entries, 3 n-grams, 3 merges" in capsys.readouterr().out
    assert run("tokenizer", "build", "--ngrams", str(stats), "--out", str(out), "--overwrite") == 0
    assert "65,536 entries, 10 n-grams" in capsys.readouterr().out
    assert run("tokenizer", "build", "--ngrams", str(stats), "--out", str(tmp_path / "max"), "--layout", "bvv241-max") == 0
    assert "bvv241-max: 131,072 entries, 10 n-grams" in capsys.readouterr().out


def test_build_corpus(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    rows = [{"text": "the theme of the thesis", "lang": "en"}, {"text": "теория тем", "lang": "ru"}]
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "tok"
    assert run("tokenizer", "build", "--corpus", str(corpus), "--langs", "en,ru", "--top-k", "4", "--out", str(out)) == 0
    line = capsys.readouterr().out
    assert "65,536 entries, 16 n-grams" in line and "ngrams.txt" in line
    assert (out / "ngrams.txt").is_file() and (out / "tokenizer.json").is_file()
    with pytest.raises(SubstrateError, match="unknown tokenizer layout"):
        run("tokenizer", "build", "--corpus", str(corpus), "--layout", "nope", "--out", str(tmp_path / "x"))
    with pytest.raises(SystemExit):  # --ngrams or --corpus is required
        run("tokenizer", "build", "--out", str(tmp_path / "y"))


def test_encode_decode(small_dir, tmp_path, capsys, monkeypatch):
    assert run("tokenizer", "encode", "-t", str(small_dir), "--json", "the 😀") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ids"][1:] == [32, 57347] and data["tokens"] == ["the", " ", "<unk>"]
    the_id = data["ids"][0]
    assert run("tokenizer", "encode", "-t", str(small_dir), "--pieces", "a b") == 0
    assert capsys.readouterr().out == "97\ta\n32\t' '\n98\tb\n"
    f = tmp_path / "in.txt"
    f.write_text("the", encoding="utf-8")
    assert run("tokenizer", "encode", "-t", str(small_dir), "--file", str(f)) == 0
    assert capsys.readouterr().out.strip() == str(the_id)
    monkeypatch.setattr("sys.stdin", io.StringIO("the"))
    assert run("tokenizer", "encode", "-t", str(small_dir)) == 0
    assert capsys.readouterr().out.strip() == str(the_id)

    assert run("tokenizer", "decode", "-t", str(small_dir), str(the_id), "32", "57347") == 0
    assert capsys.readouterr().out == "the <unk>\n"
    assert run("tokenizer", "decode", "-t", str(small_dir), "--skip-special-tokens", f"[{the_id}, 32, 57347]") == 0
    assert capsys.readouterr().out == "the \n"
    monkeypatch.setattr("sys.stdin", io.StringIO("104,105\n"))
    assert run("tokenizer", "decode", "-t", str(small_dir)) == 0
    assert capsys.readouterr().out == "hi\n"
    with pytest.raises(SubstrateError, match="outside the vocabulary"):
        run("tokenizer", "decode", "-t", str(small_dir), "70000")
    with pytest.raises(SubstrateError, match="ids must be integers"):
        run("tokenizer", "decode", "-t", str(small_dir), "abc")


def test_inspect(small_dir, tmp_path, capsys):
    assert run("tokenizer", "inspect", "-t", str(small_dir), "--text", "the thing") == 0
    out = capsys.readouterr().out
    assert "layout bvv241-2-3" in out and "ngram 10" in out and "unused 8,183" in out
    assert "special 23" in out and "unk '<unk>'=57347" in out
    assert "9 chars" in out and " ngram     the" in out
    sample = tmp_path / "s.jsonl"
    sample.write_text('{"text": "the"}\n{"text": "her 😀"}\n', encoding="utf-8")
    assert run("tokenizer", "inspect", "-t", str(small_dir), "--file", str(sample), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sample"]["documents"] == 2 and data["sample"]["unk_tokens"] == 1
    assert data["tokens"][0]["piece"] == "the" and data["vocab_size"] == 65536
    with pytest.raises(SubstrateError, match="cannot load tokenizer"):
        run("tokenizer", "inspect", "-t", str(tmp_path / "missing"))


def test_main_prints_one_line_errors(tmp_path, capsys):
    rc = main_mod.main(["tokenizer", "build", "--ngrams", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: n-gram file") and "does not exist" in err


def test_imports_stay_light():
    # `substrate-lm --help` must not pay for transformers; the tokenizer package imports it lazily.
    import subprocess
    import sys

    code = (
        "import sys, substrate_lm.cli.tokenizer, substrate_lm.tokenizer; "
        "print(sorted(m for m in ('transformers', 'tokenizers', 'torch', 'regex') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
