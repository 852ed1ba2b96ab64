"""`substrate-lm demo --quick` end to end in a temporary folder."""

from __future__ import annotations

import json
import re

import pytest
from safetensors import safe_open

from substrate_lm.cli.main import main
from substrate_lm.modeling import substrate_fingerprint


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--demo.seeds", "2", "--train.steps", "40", "--no-docking", "--substrates", "bits,16-bit"]) == 0
    printed = capsys.readouterr().out
    report = out / "report.html"
    assert report.is_file() and str(report.resolve()) in printed  # the path is printed at the end
    html = report.read_text(encoding="utf-8")
    assert "How to read this report" in html and "Probe accuracy by layer" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 3  # self-contained figures
    assert "Findings" in html and "findings hold" in html
    summary = json.loads((out / "results.json").read_text())
    names = [r["model"] for r in summary["rows"]]
    assert any("trainable" in n for n in names) and any("16-BIT" in n for n in names) and any("1024-BIT" in n for n in names)
    # one row per model and seed; every figure of every model has its mean and CI over the 2 seeds
    assert sorted({r["seed"] for r in summary["rows"]}) == [0, 1] == summary["seeds"]
    assert len(summary["rows"]) == 2 * len(set(names))
    for name, st in summary["statistics"].items():
        assert st["val_loss"]["n"] == 2 and st["val_loss"]["ci95"] is not None, name
        vals = [r["val_loss"] for r in summary["rows"] if r["model"] == name]
        assert st["val_loss"]["mean"] == pytest.approx(sum(vals) / 2)
    # findings are computed: their numbers are the statistics' numbers
    for f in summary["findings"]:
        assert f["verdict"] in ("holds", "not shown", "fails") and f["sentence"]
        if f["key"].startswith("questions/"):
            _, model, metric = f["key"].split("/")
            assert f["stat"]["mean"] == pytest.approx(summary["statistics"][model][metric]["mean"])
    # the generation protocol is judged as the papers do: each frozen table against the trainable one,
    # paired by seed, with the share of generations that are a valid option letter for each model
    gen = {f["key"]: f for f in summary["findings"] if f["key"].startswith("generation/")}
    frozen = sorted({n for n in names if "trainable" not in n})
    assert sorted(gen) == sorted(f"generation/{n}_vs_trainable" for n in frozen)
    base = {r["seed"]: r for r in summary["rows"] if "trainable" in r["model"]}
    for name in frozen:
        f, mine = gen[f"generation/{name}_vs_trainable"], [r for r in summary["rows"] if r["model"] == name]
        assert f["verdict"] in ("holds", "not shown", "fails") and f["stat"]["n"] == 2
        diffs = [r["mc_paper"] - base[r["seed"]]["mc_paper"] for r in mine]
        assert f["stat"]["mean"] == pytest.approx(sum(diffs) / 2)
        assert all(0.0 <= r["mc_paper_valid"] <= 100.0 for r in mine)
        assert f["valid_share"]["mean"] == pytest.approx(sum(r["mc_paper_valid"] for r in mine) / 2)
        assert "valid option letters" in f["sentence"]
    assert not any(f["key"].endswith("/mc_paper") for f in summary["findings"])
    for cell in sorted((out / "cells").iterdir()):
        result = json.loads((cell / "result.json").read_text())
        # every model trained: the loss fell
        assert result["train_loss_last"] < result["train_loss_first"] - 1.0, cell.name
        assert result["val"]["val_bpc"] > 0
        # frozen tables are unchanged from their fingerprints (re-hash the exported weights)
        cfg = json.loads((cell / "model" / "config.json").read_text())
        with safe_open(cell / "model" / "model.safetensors", "pt") as f:
            table = f.get_tensor("token_embeddings.weight")
        if cfg["substrate_frozen"]:
            assert substrate_fingerprint(table) == cfg["substrate_fingerprint"] == result["substrate_fingerprint"]
        else:
            assert cfg["substrate_kind"] == "trainable"
        # both protocols ran on the world's held-out questions
        bench = next(iter(result["evaluation"]["models"].values()))["results"]
        assert {"paper", "loglik"} <= set(bench["world-mc"]) and {"paper", "loglik"} <= set(bench["world-short"])
    # the analysis ran for each model and seed, the substrate as layer 0, per layer with CIs
    for name, probe in summary["probe"].items():
        assert probe["layers"][0] == "substrate" and len(probe["accuracy"]) == len(probe["layers"]), name
        assert all(a["n"] == 2 for a in probe["accuracy"]) and sorted(probe["per_seed"]) == ["0", "1"]
    assert len(list((out / "analysis").glob("*/seed*/metrics.json"))) == len(summary["rows"])

    # a rerun resumes: every finished cell is skipped, nothing retrains
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/result.json")}
    assert main(["demo", "--quick", "--out", str(out), "--demo.seeds", "2", "--train.steps", "40", "--no-docking", "--substrates", "bits,16-bit"]) == 0
    assert "(done, skipped)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a subset without the random-bits models, docking off: the same grid's cells, nothing retrains
    # (the growth baseline, which needs the bits models, is only built when docking runs)
    assert main(["demo", "--quick", "--out", str(out), "--demo.seeds", "2", "--train.steps", "40", "--no-docking", "--substrates", "16-bit"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
