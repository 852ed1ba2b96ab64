"""Ablation grids: config parsing, aggregation across seeds, resume without recomputation."""

from __future__ import annotations

import json
import math

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.experiments.ablate import AblationConfig, aggregate, cells, load_ablation_config, markdown_table, run_ablation


def write(tmp_path, text):
    p = tmp_path / "ab.toml"
    p.write_text(text)
    return p


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(SubstrateError, match=r"unknown config key ablation.substrate; valid keys in \[ablation\]"):
        load_ablation_config(write(tmp_path, "[ablation]\nsubstrate = ['bits']\n"))
    with pytest.raises(SubstrateError, match="unknown preset"):
        load_ablation_config(write(tmp_path, "[ablation]\npresets = ['huge']\n"))
    with pytest.raises(SubstrateError, match="unknown table"):
        load_ablation_config(write(tmp_path, "[ablate]\n"))
    with pytest.raises(SubstrateError, match="unknown substrate spec"):
        load_ablation_config(write(tmp_path, "[ablation]\nsubstrates = ['wood']\n"))
    with pytest.raises(SubstrateError, match="not found"):
        load_ablation_config(tmp_path / "missing.toml")
    cfg = load_ablation_config(write(tmp_path, "[ablation]\nseeds = [0, 1]\nsubstrates = ['bits', '16-bit']\n"), ["--ablation.n_runs", "2"])
    assert cfg.n_runs == 2 and len(cells(cfg)) == 4


def test_aggregate_mean_sd_ci():
    def res(sub, seed, loss):
        return {"cell": {"preset": "tiny", "corpus": "world:1MB", "substrate": sub, "seed": seed},
                "val": {"val_loss": loss}, "train_loss_last": loss + 0.1,
                "evaluation": {"models": {sub: {"results": {"world-mc": {"paper": {"mean": 30.0 + seed},
                                                                          "loglik": {"acc": 40.0}}}}}}}

    rows = aggregate([res("bits", 0, 2.0), res("bits", 1, 4.0), res("bits", 2, 3.0), res("unfrozen", 0, 1.5)])
    bits = next(r for r in rows if r["substrate"] == "bits")
    s = bits["metrics"]["val_loss"]
    assert s["mean"] == pytest.approx(3.0) and s["sd"] == pytest.approx(1.0) and s["n"] == 3
    assert s["ci95"] == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)  # Student t, 2 degrees of freedom
    assert bits["metrics"]["world-mc/paper"]["mean"] == pytest.approx(31.0)
    assert bits["metrics"]["world-mc/loglik_acc"]["sd"] == 0.0
    single = next(r for r in rows if r["substrate"] == "unfrozen")
    assert single["metrics"]["val_loss"]["ci95"] == 0.0 and single["seeds"] == 1
    table = markdown_table(rows)
    assert "3.000 ± 2.484" in table and "| tiny | world:1MB | unfrozen | 1 |" in table


@pytest.mark.slow
def test_tiny_grid_runs_and_resumes(tmp_path):
    cfg_path = write(tmp_path, f"""
[ablation]
out = "{tmp_path / 'ab'}"
substrates = ["bits", "16-bit"]
seeds = [0, 1]
corpora = ["world:100KB"]
benches = ["world-mc"]
protocol = "loglik"
limit = 8
[overrides]
"model.overrides.d_model" = 32
"model.overrides.n_head" = 2
"model.overrides.n_layer" = 1
"train.steps" = 4
"train.batch_size" = 4
"train.seq_len" = 32
"eval.interval" = 4
"eval.steps" = 2
"log.tensorboard" = false
"log.sample_interval" = 0
"log.progress" = false
"checkpoint.interval" = 4
""")
    cfg = load_ablation_config(cfg_path)
    summary = run_ablation(cfg, log=lambda s: None)
    out = tmp_path / "ab"
    assert len(summary["results"]) == 4 and len(summary["groups"]) == 2
    assert all(g["seeds"] == 2 for g in summary["groups"])
    assert json.loads((out / "ablation.json").read_text())["groups"][0]["metrics"]["val_loss"]["n"] == 2
    # seeds differ, substrates differ, the backbone of equal seeds is shared
    r = {x["key"]: x for x in summary["results"]}
    assert len({x["substrate_fingerprint"] for x in r.values()}) == 3  # token-id ignores the seed
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    lines = []
    run_ablation(cfg, log=lines.append)
    assert sum("(done, skipped)" in line for line in lines) == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_cells_side_by_side_give_the_same_numbers(tmp_path):
    from substrate_lm.experiments.parallel import available_cores, check_jobs

    overrides = {"model.overrides.d_model": 32, "model.overrides.n_head": 2, "model.overrides.n_layer": 1,
                 "train.steps": 4, "train.batch_size": 4, "train.seq_len": 32, "eval.interval": 4, "eval.steps": 2,
                 "log.tensorboard": False, "log.sample_interval": 0, "log.progress": False, "checkpoint.interval": 4}
    results = {}
    for jobs in (1, 2):
        cfg = AblationConfig(out=str(tmp_path / f"j{jobs}"), substrates=["bits"], seeds=[0, 1], corpora=["world:30KB"],
                             benches=["world-mc"], protocol="loglik", limit=8, langs=["en"], tokenizer="compact",
                             world={"entities_per_cat": 6}, overrides=overrides)
        summary = run_ablation(cfg, log=lambda s: None, jobs=jobs)
        results[jobs] = [(r["key"], r["val"], [(h.get("step"), h.get("loss")) for h in r["history"]],
                          r["evaluation"]["models"]["bits"]["results"]["world-mc"]["loglik"]["item_pred"])
                         for r in summary["results"]]
    assert results[1] == results[2]
    assert check_jobs(64) == available_cores()
    with pytest.raises(SubstrateError, match="jobs must be"):
        check_jobs(0)
