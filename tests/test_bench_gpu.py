"""The prepared GPU benchmark script must at least run: a CPU smoke run of its eager path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu_335m", REPO / "bench" / "bench_gpu_335m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_run_reports_throughput_and_mfu(tmp_path, capsys):
    bench = _load()
    out, raw = tmp_path / "gpu.md", tmp_path / "gpu.json"
    assert bench.main(["--smoke", "--configs", "eager", "--out", str(out), "--json", str(raw)]) == 0
    rows = json.loads(raw.read_text())["rows"]
    assert [r["config"] for r in rows] == ["eager"]
    r = rows[0]
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["flops_per_token"] > 0
    assert "| eager (1.00x) |" in out.read_text()


def test_unknown_config_is_refused(capsys):
    bench = _load()
    try:
        bench.main(["--configs", "turbo"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "unknown config(s) turbo" in capsys.readouterr().err
