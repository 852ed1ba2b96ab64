"""The first-GPU script (plan + measured step) must refuse a GPU-less machine in one line and run
its plan side and its comparison on a CPU with a tiny config."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_first_gpu", REPO / "bench" / "bench_first_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_it_stops_in_one_line(capsys):
    assert _load().main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA device") and "--dry-run" in err and "\n" not in err


def test_dry_run_prints_the_plan(tmp_path, capsys):
    raw = tmp_path / "plan.json"
    assert _load().main(["--dry-run", "--config", "tiny", "--no-search", "--train.seq_len", "32",
                         "--json", str(raw)]) == 0
    out = capsys.readouterr().out
    assert "plan: tiny" in out and "not searched" in out
    plan = json.loads(raw.read_text())["none"]
    assert plan["memory"]["peak"] > 0 and plan["seq_len"] == 32 and plan["grad_accum"] == 1


def test_cpu_check_compares_measurement_with_plan(tmp_path, capsys):
    raw, md = tmp_path / "r.json", tmp_path / "r.md"
    assert _load().main(["--device", "cpu", "--config", "tiny", "--configs", "eager", "--steps", "1",
                         "--warmup", "0", "--batch-size", "1", "--seq-len", "16", "--no-search",
                         "--json", str(raw), "--out", str(md)]) == 0
    row = json.loads(raw.read_text())["compared"][0]
    assert row["config"] == "eager" and row["plan_peak_gib"] > 0
    assert row["measured_tokens_per_s"] > 0 and row["tokens_ratio"] > 0 and row["plan_fits"]
    assert "| eager (none, x1) |" in md.read_text()


def test_bad_arguments_are_refused(capsys):
    bench = _load()
    for argv, needle in ((["--configs", "turbo"], "unknown config(s) turbo"),
                         (["--bogus"], "unrecognized argument --bogus")):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2 and needle in capsys.readouterr().err
