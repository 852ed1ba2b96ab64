"""``substrate-lm corpus world``."""

from __future__ import annotations

import argparse
import json

import pytest

from substrate_lm.cli import corpus
from substrate_lm.errors import SubstrateError


def _run(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    corpus.register(sub)
    args = p.parse_args(argv)
    return args.func(args)


def test_world_command_writes_files_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "w"
    rc = _run(["corpus", "world", "--size", "100KB", "--langs", "en,zh", "--seed", "4", "--out", str(out),
               "--questions", "20", "--verify"])
    assert rc == 0
    for f in ("train.jsonl", "val.jsonl", "world.json", "questions/mc.jsonl", "questions/short.jsonl"):
        assert (out / f).is_file()
    printed = capsys.readouterr().out
    assert "train.jsonl" in printed and "MB/s" in printed and "verify: ok" in printed
    assert "40 multiple choice" in printed
    world = json.loads((out / "world.json").read_text(encoding="utf-8"))
    assert world["seed"] == 4 and world["langs"] == ["en", "zh"]


def test_world_command_json(tmp_path, capsys):
    rc = _run(["corpus", "world", "--size", "50KB", "--langs", "ru", "--out", str(tmp_path / "w"), "--json",
               "--questions", "5"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["langs"] == ["ru"] and summary["questions"]["mc"] == 5 and summary["verify"] is None


def test_bad_input_is_a_substrate_error(tmp_path):
    with pytest.raises(SubstrateError, match="size"):
        _run(["corpus", "world", "--size", "lots", "--out", str(tmp_path / "w")])
    with pytest.raises(SubstrateError, match="language"):
        _run(["corpus", "world", "--size", "100KB", "--langs", "en,fr", "--out", str(tmp_path / "w")])


def test_corpus_without_subcommand_prints_help(capsys):
    assert _run(["corpus"]) == 0
    assert "world" in capsys.readouterr().out


def test_world_command_multiple_choice_renderings(tmp_path, capsys):
    base = ["corpus", "world", "--size", "60KB", "--langs", "en", "--qa-fraction", "0.3", "--json"]
    assert _run([*base, "--out", str(tmp_path / "a"), "--mc-variants", "8", "--mc-share", "0.5"]) == 0
    capsys.readouterr()
    assert _run([*base, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    text_a = (tmp_path / "a" / "train.jsonl").read_text(encoding="utf-8")
    text_b = (tmp_path / "b" / "train.jsonl").read_text(encoding="utf-8")
    assert text_a != text_b and "Options:" in text_a  # the flags reach the generator
    with pytest.raises(SubstrateError, match="mc_share"):
        _run([*base, "--out", str(tmp_path / "c"), "--mc-share", "1.5"])
    with pytest.raises(SubstrateError, match="mc_variants"):
        _run([*base, "--out", str(tmp_path / "d"), "--mc-variants", "4097"])


def test_world_command_balanced_halves(tmp_path, capsys):
    base = ["corpus", "world", "--size", "30KB", "--langs", "en", "--json"]
    assert _run([*base, "--out", str(tmp_path / "a"), "--balanced-halves"]) == 0
    capsys.readouterr()
    corpus = json.loads((tmp_path / "a" / "corpus.json").read_text(encoding="utf-8"))
    world = json.loads((tmp_path / "a" / "world.json").read_text(encoding="utf-8"))
    assert corpus["balanced_halves"] is True and world["balanced_halves"] is True  # the flag reaches the generator
