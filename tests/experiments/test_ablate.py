"""Ablation grids: config parsing, aggregation across seeds, resume without recomputation."""

from __future__ import annotations

import dataclasses
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
    # other training settings in the same folder would reuse the finished cells: refused in one line
    other = dataclasses.replace(cfg, overrides={**cfg.overrides, "train.steps": 6, "train.batch_size": 2})
    with pytest.raises(SubstrateError, match=r"holds finished cells trained with other settings "
                                             r"\(overrides, train.batch_size, train.steps\); use another output folder"):
        run_ablation(other, log=lambda s: None)
    with pytest.raises(SubstrateError, match=r"other settings \(limit\)"):
        run_ablation(dataclasses.replace(cfg, limit=9), log=lambda s: None)
    # fewer substrates select cells of the same grid: allowed, nothing retrained
    lines = []
    run_ablation(dataclasses.replace(cfg, substrates=["bits"]), log=lines.append)
    assert sum("(done, skipped)" in line for line in lines) == 2
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


# -- a real-text grid: held-out folders per source, held-out text, own tasks, names without paths ---

# public-domain text written for this test: three short "books" (sources) of plain English lines
ESSAYS = [f"The river {w} past the mill, and the miller counts {n} sacks of grain before the rain."
          for n, w in enumerate(["runs", "bends", "sings", "sleeps", "turns", "waits", "shines", "falls"] * 5)]
LETTERS = [f"Dear friend, the garden holds {n} roses this year; the old gate still {w} in the wind."
           for n, w in enumerate(["creaks", "swings", "rattles", "sighs"] * 6)]
SONGS = [f"Sing of the {w} hill, sing of the lamp at the window, sing {n} times and rest."
         for n, w in enumerate(["green", "grey", "quiet", "windy"] * 6)]
TINY = {"model.overrides.d_model": 32, "model.overrides.n_head": 2, "model.overrides.n_layer": 1,
        "model.overrides.block_size": 64, "train.steps": 4, "train.batch_size": 4, "train.seq_len": 32,
        "eval.interval": 4, "eval.steps": 2, "log.tensorboard": False, "log.progress": False,
        "checkpoint.interval": 4}


def _char_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(("<pad>", "<s>", "</s>", "<unk>"))}
    for ch in sorted(set("".join(ESSAYS + LETTERS + SONGS) + "ABCDQ:?.")):
        vocab.setdefault(ch, len(vocab))
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    bpe.decoder = decoders.Sequence([])
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>", clean_up_tokenization_spaces=False).save_pretrained(str(path))
    return path


@pytest.fixture
def real_text(tmp_path):
    from substrate_lm.data import prepare_data

    tok = _char_tokenizer(tmp_path / "tok")
    (tmp_path / "src").mkdir()
    for name, lines in (("essays.txt", ESSAYS), ("letters.txt", LETTERS), ("songs.txt", SONGS)):
        (tmp_path / "src" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus, held = tmp_path / "data" / "essays", tmp_path / "data" / "letters-songs"
    prepare_data([str(tmp_path / "src" / "essays.txt")], str(tok), corpus, val_fraction=0.2, seed=0,
                 text_unit="line", progress=False)
    prepare_data([str(tmp_path / "src" / f) for f in ("letters.txt", "songs.txt")], str(tok), held,
                 val_fraction=0.5, seed=0, text_unit="line", progress=False)
    extra = tmp_path / "src" / "fable.txt"
    extra.write_text("The fox sings to the river at the mill, and the river counts the roses.\n" * 3)
    task = tmp_path / "src" / "riddles.jsonl"
    task.write_text("".join(json.dumps({"question": f"What counts sacks {i}?", "choices": ["the miller", "the rose"],
                                        "answer": 0}) + "\n" for i in range(4)))
    return dict(tok=tok, corpus=corpus, held=held, extra=extra, task=task)


def test_real_text_grid_heldout_bpc_with_ci_and_no_paths(tmp_path, real_text):
    """2 substrates x 2 seeds on real text: every cell scored on a held-out folder (per source) and
    a task file; the table holds held-out bpc mean ± CI95 over seeds; no absolute path in cell names
    or the table; the world recipe's sample prompts do not reach the real-text cells; a held-out
    file added later is scored on the finished cells without retraining."""
    cfg = AblationConfig(out=str(tmp_path / "ab"), substrates=["bits", "unfrozen"], seeds=[0, 1],
                         corpora=[str(real_text["corpus"])], heldout=[str(real_text["held"])],
                         benches=["world-mc"], task_files=[str(real_text["task"])], protocol="loglik", limit=4,
                         overrides={**TINY, "log.sample_interval": 2})
    summary = run_ablation(cfg, log=lambda s: None)
    assert len(summary["results"]) == 4 and {g["seeds"] for g in summary["groups"]} == {2}
    for g in summary["groups"]:
        m = g["metrics"]
        assert g["corpus"] == "essays"
        for key in ("heldout:letters-songs/bpc", "heldout:letters-songs/letters.txt/bpc",
                    "heldout:letters-songs/songs.txt/bpc", "riddles/loglik_acc"):
            assert m[key]["n"] == 2 and m[key]["ci95"] >= 0, key
        assert m["heldout:letters-songs/bpc"]["mean"] > 0
        assert not any(k.startswith("world-mc") for k in m)  # world benches skip a real-text corpus
    out = tmp_path / "ab"
    table = (out / "ablation.md").read_text()
    assert "heldout:letters-songs/bpc" in table and " ± " in table
    for r in summary["results"]:
        assert str(tmp_path) not in r["key"] and r["key"].startswith("tiny__essays__")
        assert not [h for h in r["history"] if h.get("event") == "sample"]  # no world "Q: " samples
    assert str(tmp_path) not in table
    assert str(tmp_path) not in json.dumps(summary["groups"])
    # add a held-out text file: scored on the four finished cells, nothing retrained
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/run/checkpoints/index.json")}
    assert len(stamps) == 4
    cfg.heldout.append(str(real_text["extra"]))
    again = run_ablation(cfg, log=lambda s: None)
    assert all(g["metrics"]["heldout:fable/bpc"]["n"] == 2 for g in again["groups"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_heldout_settings_are_checked(tmp_path, real_text):
    with pytest.raises(SubstrateError, match="ablation.heldout .* does not exist"):
        load_ablation_config(write(tmp_path, f"[ablation]\nheldout = ['{tmp_path / 'nope'}']\n"))
    with pytest.raises(SubstrateError, match="not a finished prepared data folder"):
        load_ablation_config(write(tmp_path, f"[ablation]\nheldout = ['{tmp_path / 'src'}']\n"))
    with pytest.raises(SubstrateError, match="heldout_split"):
        load_ablation_config(write(tmp_path, "[ablation]\nheldout_split = 'test'\n"))
    with pytest.raises(SubstrateError, match="same name"):
        AblationConfig(corpora=[str(real_text["corpus"]), str(tmp_path / "other" / "essays")]).validate()
    # a held-out folder of another tokenizer is refused before any training
    cfg = AblationConfig(out=str(tmp_path / "ab"), corpora=["world:30KB"], langs=["en"], tokenizer="compact",
                         heldout=[str(real_text["held"])], world={"entities_per_cat": 6}, overrides=TINY)
    with pytest.raises(SubstrateError, match="cannot be scored by the cells of corpus world:30KB"):
        run_ablation(cfg, log=lambda s: None)
    assert not (tmp_path / "ab" / "cells").exists()


def test_cell_names_and_sources_carry_no_paths():
    from substrate_lm.experiments.ablate import Cell, corpus_name, heldout_name, source_name

    assert corpus_name("/abs/data/wiki-en/") == "wiki-en" and corpus_name("world:2MB") == "world:2MB"
    assert Cell("tiny", "/abs/data/wiki-en", "bits", 0).key == "tiny__wiki-en__bits__seed0"
    assert heldout_name("/x/essays.txt") == "essays"
    assert source_name("text:/abs/books/genesis.txt") == "genesis.txt"
    assert source_name("/abs/books/psalms.txt") == "psalms.txt"
    assert source_name("hf:wikitext:wikitext-2-raw-v1?split=test") == "hf:wikitext:wikitext-2-raw-v1?split=test"


def test_world_sample_prompts_stay_out_of_real_text_cells(tmp_path):
    from pathlib import Path

    from substrate_lm.experiments.ablate import Cell, Corpus, cell_run_config, cell_sample_prompts
    from substrate_lm.training import load_config

    base = load_config("tiny")  # a world recipe: samples "The " and the world's "Q: "
    assert "Q: " in base.log.sample_prompts and base.data.world
    folder = Corpus("data/essays", Path("data/essays"), "tok", None)
    world = Corpus("world:2MB", Path("d"), "tok", Path("w"))
    assert cell_sample_prompts(base, folder) == []
    assert cell_sample_prompts(base, world) == base.log.sample_prompts
    assert cell_sample_prompts(base, folder, ["It was "]) == ["It was "]
    assert cell_sample_prompts(base, folder, keep=True) == base.log.sample_prompts  # [overrides] set them
    run = cell_run_config(base, Cell("tiny", "data/essays", "bits", 0), folder, tmp_path)
    assert run.log.sample_prompts == [] and run.log.sample_interval == 0
    paper = load_config("paper-1024-bit")  # a real-text recipe keeps its prompts on a folder
    assert cell_sample_prompts(paper, folder) == paper.log.sample_prompts
