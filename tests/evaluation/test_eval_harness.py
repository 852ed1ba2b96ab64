"""lm-eval task YAMLs (any working directory) and an exported model run end to end under lm_eval."""

from __future__ import annotations

import json

import pytest

from substrate_lm.evaluation import load_bench, load_model, run_lm_eval, run_loglik, write_lm_eval_tasks
from substrate_lm.evaluation.harness import process_gen_results
from substrate_lm.export import export_model

from eval_helpers import substrate_model


def test_task_yamls_use_absolute_paths_and_load_from_anywhere(bench_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tasks = write_lm_eval_tasks("bench", "tasks_out", limit=4)  # relative in, absolute out
    assert tasks["arc-e"] == ["substrate_arc_e", "substrate_arc_e_gen"]
    assert tasks["squad"] == ["substrate_squad"]
    yaml_text = (tmp_path / "tasks_out/substrate_arc_e.yaml").read_text()
    assert json.dumps(str(tmp_path / "tasks_out/data/arc-e.jsonl")) in yaml_text
    assert "@TASK@" not in yaml_text and "@DATA_FILE@" not in yaml_text
    rows = [json.loads(x) for x in (tmp_path / "tasks_out/data/arc-e.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [i.id for i in load_bench("arc-e", bench_dir, limit=4).items]
    assert rows[0]["context"].startswith("Question: ") and rows[0]["context"].endswith("\nAnswer:")

    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(tmp_path / "tasks_out"), include_defaults=False)
    assert {"substrate_arc_e", "substrate_mmlu", "substrate_world_mc", "substrate_bleu_zh_en"} <= set(tm.all_tasks)
    assert process_gen_results({"id": "s", "task": "squad", "answer": "Tom1", "answers": ["Tom1"]}, [" tom1!"]) == {"score": 1.0}


def test_exported_model_runs_under_lm_eval_and_agrees_with_loglik(char_tok, bench_dir, tmp_path):
    """Our SubstrateForCausalLM, exported with export_model, under lm_eval."""
    model_dir = export_model(substrate_model(char_tok), tmp_path / "exported", tokenizer=char_tok)
    res = run_lm_eval(str(model_dir), "arc-e,squad", bench_dir, tmp_path / "lm", batch_size=4, limit=6,
                      log_samples=True)
    assert set(res["tasks"]) == {"substrate_arc_e", "substrate_squad"}
    assert "score" in res["tasks"]["substrate_squad"]
    assert (tmp_path / "lm/lm_eval_results.json").is_file()

    # our log-likelihood protocol gives the same per-option log-likelihoods and accuracy
    m, tok = load_model(model_dir)
    ours = run_loglik(m, tok, load_bench("arc-e", bench_dir, limit=6))
    theirs = {s["doc"]["id"]: [r[0][0] for r in s["resps"]] for s in res["samples"]["substrate_arc_e"]}
    for item_id, lls in zip(load_bench("arc-e", bench_dir, limit=6).describe()["item_ids"], ours["item_lls"]):
        assert lls == pytest.approx(theirs[item_id], abs=1e-3)
    assert res["tasks"]["substrate_arc_e"]["acc"] * 100 == pytest.approx(ours["acc"])
    assert res["tasks"]["substrate_arc_e"]["acc_norm"] * 100 == pytest.approx(ours["acc_norm"])
