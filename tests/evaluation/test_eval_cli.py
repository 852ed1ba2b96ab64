"""``substrate-lm eval`` (module ``substrate_lm.cli.eval``), registered on a private parser."""

from __future__ import annotations

import argparse
import json

import pytest

from substrate_lm.cli import eval as eval_cli
from substrate_lm.errors import SubstrateError


def run(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    eval_cli.register(sub)
    args = p.parse_args(argv)
    return args.func(args)


def test_eval_command_writes_results(tiny_model_dir, bench_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run(["eval", "--model", str(tiny_model_dir), "--bench", "arc-c,bleu-en-ru,world-short",
              "--data-dir", str(bench_dir), "--protocol", "both", "--n-runs", "2", "--limit", "3",
              "--seed", "1", "--device", "cpu", "--greedy", "--out", str(out), "--no-charts"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["greedy"] is True and res["settings"]["seed"] == 1
    assert set(res["benchmarks"]) == {"arc-c", "bleu-en-ru", "world-short"}
    name = tiny_model_dir.name
    assert res["models"][name]["results"]["bleu-en-ru"]["paper"]["metric"] == "bleu"
    stdout = capsys.readouterr().out
    assert f"{name} ARC-c: " in stdout and f"{name} BLEU [en-ru]: " in stdout
    assert not (out / "chart_paper.png").exists()


def test_eval_ppl_and_tasks_subcommands(tiny_model_dir, bench_dir, tmp_path, capsys):
    text = tmp_path / "held_out.txt"
    text.write_text("a held-out text for perplexity. " * 10)
    assert run(["eval", "ppl", "--model", str(tiny_model_dir), "--text", str(text), "--window", "64",
                "--out", str(tmp_path / "ppl.json")]) == 0
    r = json.loads((tmp_path / "ppl.json").read_text())[str(tiny_model_dir)]
    assert r["characters"] == 320 and r["window"] == 64 and r["stride"] == 64
    assert "bpc" in capsys.readouterr().out
    assert run(["eval", "tasks", "--data-dir", str(bench_dir), "--out", str(tmp_path / "tasks")]) == 0
    assert (tmp_path / "tasks" / "substrate_arc_e.yaml").is_file()
    assert "substrate_world_short" in capsys.readouterr().out


def test_eval_errors_are_one_line(tiny_model_dir, tmp_path):
    with pytest.raises(SubstrateError, match=r"ai2_arc/ARC-Easy/validation.jsonl"):
        run(["eval", "--model", str(tiny_model_dir), "--bench", "arc-e", "--data-dir", str(tmp_path),
             "--out", str(tmp_path / "o")])
    with pytest.raises(SubstrateError, match="--bench"):
        run(["eval", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")])
    with pytest.raises(SubstrateError, match="sample-size"):
        run(["eval", "--model", str(tiny_model_dir), "--bench", "arc-e", "--sample-size", "many",
             "--out", str(tmp_path / "o")])


def test_main_prints_the_error_without_traceback(tmp_path, capsys):
    from substrate_lm.cli import main as main_mod

    rc = main_mod.main(["eval", "--model", str(tmp_path), "--bench", "hellaswag", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown benchmark 'hellaswag'") and "Traceback" not in err


def test_parameter_counts_in_paper_lines_use_m_below_1b():
    from substrate_lm.evaluation.runner import format_params

    assert format_params(8_487_552) == "8.5M"
    assert format_params(335_600_000) == "335.6M"
    assert format_params(1_300_000_000) == "1.3B"
    assert format_params(52_000) == "52.0K"


def test_eval_threads_and_device_are_applied(tiny_model_dir, bench_dir, tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        rc = run(["eval", "--model", str(tiny_model_dir), "--bench", "arc-e", "--data-dir", str(bench_dir),
                  "--limit", "2", "--n-runs", "1", "--threads", "1", "--device", "cpu", "--out",
                  str(tmp_path / "o"), "--no-charts"])
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    import re

    from substrate_lm.evaluation.runner import format_params

    shown = re.search(r"Total parameters:\s+(\S+)\n", out).group(1)
    n = json.loads((tmp_path / "o" / "results.json").read_text())["models"][tiny_model_dir.name]["parameters"]
    assert n < 1e6 and shown == format_params(n) and shown.endswith("K")  # was "0.0B"
    with pytest.raises(SubstrateError, match="--device 'tpu9'"):
        run(["eval", "ppl", "--model", str(tiny_model_dir), "--text", str(tmp_path), "--device", "tpu9"])
