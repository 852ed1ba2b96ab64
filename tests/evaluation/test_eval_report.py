"""evaluate_models (the in-process API) and write_report (JSON, markdown, lines, charts)."""

from __future__ import annotations

import json

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.evaluation import evaluate_models, load_bench, write_report

from eval_helpers import letter_model


def test_evaluate_models_in_memory_both_protocols(char_tok, tiny_model, bench_dir, tmp_path):
    models = {"neox": (tiny_model, char_tok), "fakeB": (letter_model(char_tok, "B"), char_tok)}
    logs = []
    res = evaluate_models(models, "arc-e,mmlu,squad,world-mc", protocol="both", data_dir=bench_dir,
                          n_runs=3, limit=6, seed=2, batch_size=4, log=logs.append)
    assert res["settings"]["seed"] == 2 and res["settings"]["n_runs"] == 3 and res["settings"]["limit"] == 6
    # the exact items, in evaluation order, as load_bench picks them with the same seed and limit
    for b in ("arc-e", "mmlu", "squad", "world-mc"):
        assert res["benchmarks"][b]["item_ids"] == [i.id for i in load_bench(b, bench_dir, seed=2, limit=6).items]
        assert res["benchmarks"][b]["n_items"] == min(6, res["benchmarks"][b]["n_available"])
    fb = res["models"]["fakeB"]
    arc_ids = res["benchmarks"]["arc-e"]["item_ids"]
    n_b = sum(1 for i in arc_ids if int(i.split("_")[1]) % 4 == 1)  # gold B
    assert fb["results"]["arc-e"]["paper"]["mean"] == pytest.approx(100 * n_b / len(arc_ids))
    assert fb["results"]["arc-e"]["paper"]["runs"] == pytest.approx([100 * n_b / len(arc_ids)] * 3)
    assert set(fb["results"]["arc-e"]) == {"paper", "loglik"}
    assert "subjects" in fb["results"]["mmlu"]["paper"] and "subjects" in fb["results"]["mmlu"]["loglik"]
    assert fb["results"]["squad"]["loglik"]["metric"] == "bpc"
    assert fb["lines"][0].startswith("fakeB Total parameters:")
    assert any(line.startswith("fakeB MMLU [") for line in fb["lines"])
    assert logs  # progress was reported
    json.dumps(res)  # JSON-ready

    paths = write_report(res, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["benchmarks"]["arc-e"]["item_ids"] == arc_ids
    md = paths["markdown"].read_text()
    assert "| model | ARC-e | MMLU | SQUAD | WORLD-MC |" in md
    cell = f"{fb['results']['arc-e']['paper']['mean']:.2f} ± 0.00"
    assert f"| fakeB | {cell} |" in md
    lines = paths["lines"].read_text().splitlines()
    assert fb["results"]["arc-e"]["paper"]["line"] in lines
    for key in ("chart_paper", "chart_loglik"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_evaluate_models_from_directories_and_names(tiny_model_dir, bench_dir):
    res = evaluate_models([tiny_model_dir, tiny_model_dir], ["boolq"], protocol="loglik", data_dir=bench_dir,
                          device="cpu")
    assert list(res["models"]) == [tiny_model_dir.name, tiny_model_dir.name + "-2"]
    r1, r2 = (m["results"]["boolq"]["loglik"] for m in res["models"].values())
    assert r1["item_lls"] == r2["item_lls"]
    assert res["models"][tiny_model_dir.name]["path"] == str(tiny_model_dir)


def test_evaluate_models_fails_fast_on_missing_data(char_tok, tiny_model, tmp_path):
    with pytest.raises(SubstrateError, match="ARC-Easy/validation.jsonl"):
        evaluate_models({"m": (tiny_model, char_tok)}, "arc-e", data_dir=tmp_path)
    with pytest.raises(SubstrateError, match="protocol"):
        evaluate_models({"m": (tiny_model, char_tok)}, "arc-e", protocol="nope", data_dir=tmp_path)
