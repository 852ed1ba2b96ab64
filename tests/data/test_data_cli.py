"""``substrate-lm data prepare|stats``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import expected_stream, random_docs, read_split, write_jsonl

from substrate_lm.cli import data as data_cli
from substrate_lm.cli import main as cli_main


@pytest.fixture
def cli():
    """Run ``substrate-lm ARGS``; returns the exit code."""
    return cli_main.main


def test_prepare_then_stats(cli, tok, tok_dir, tmp_path, capsys):
    docs = random_docs(30, seed=41)
    write_jsonl(tmp_path / "a.jsonl", docs[:20], field="body")
    write_jsonl(tmp_path / "b.jsonl", docs[20:], field="body")
    out = tmp_path / "out"
    rc = cli(["data", "prepare", "--source", str(tmp_path / "a.jsonl"),
              "--source", f"jsonl:{tmp_path / 'b.jsonl'}", "--tokenizer", str(tok_dir),
              "--out", str(out), "--val-fraction", "0", "--text-field", "body",
              "--shard-tokens", "256", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "chars/token" in printed and "57346" in printed
    np.testing.assert_array_equal(read_split(out, "train"), expected_stream(tok, docs))

    assert cli(["data", "stats", str(out), "--json", "--verify"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["documents"] == 30 and stats["shard_tokens"] == 256
    assert cli(["data", "stats", str(out)]) == 0
    assert "<unk> share" in capsys.readouterr().out


def test_errors_are_one_line(cli, tok_dir, tmp_path, capsys):
    rc = cli(["data", "prepare", "--source", str(tmp_path / "missing.jsonl"),
              "--tokenizer", str(tok_dir), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: corpus not found:") and err.count("\n") == 1
    assert str(tmp_path / "missing.jsonl") in err
    rc = cli(["data", "prepare", "--source", "nosuchkind:x", "--tokenizer", str(tok_dir),
              "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown source kind 'nosuchkind'" in err and err.count("\n") == 1
    assert cli(["data", "stats", str(tmp_path)]) == 2
    assert "not a finished prepared directory" in capsys.readouterr().err


def test_register_alone_with_argparse(tok_dir, tmp_path):
    import argparse

    write_jsonl(tmp_path / "d.jsonl", ["one doc", "two doc"])
    p = argparse.ArgumentParser()
    data_cli.register(p.add_subparsers())
    args = p.parse_args(["data", "prepare", "--source", str(tmp_path / "d.jsonl"), "--tokenizer",
                         str(tok_dir), "--out", str(tmp_path / "o"), "--no-progress", "--json"])
    assert args.func(args) == 0
    assert (tmp_path / "o" / "stats.json").is_file()
