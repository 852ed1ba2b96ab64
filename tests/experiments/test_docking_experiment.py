"""The docking experiment of the demo (claim 3): structure, resumability, computed findings.

The pipeline runs once at tiny sizes (a few training steps: the effects are NOT expected to show
here); the other tests work on its result or on synthetic numbers.
"""

from __future__ import annotations

import copy
import json

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.experiments.docking import (
    ENGINE,
    DockingSection,
    DockingSettings,
    GrowthBase,
    composition_row,
    entity_halves,
    growth_row,
    load_union_questions,
    question_half,
    refusal_reason,
    run_docking_experiment,
)
from substrate_lm.experiments.docking.halves import _EntitySplitter
from substrate_lm.experiments.findings import aggregate_composition, aggregate_growth, summarize
from substrate_lm.experiments.findings import docking_sentences as findings

TINY = {"docking.world_size": "40KB", "docking.n_questions": 8, "model.overrides.d_model": 32,
        "model.overrides.n_head": 2, "docking.n_layer": 2, "model.overrides.block_size": 32, "train.seq_len": 32,
        "train.batch_size": 2, "train.steps": 3, "docking.warmup": 1, "docking.trainable_steps": 2,
        "docking.grow_layers": 2, "docking.grow_steps": 2, "docking.eval_batches": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("docking")
    lines: list[str] = []
    result = run_docking_experiment(out, mode="quick", seeds=(0, 1), log=lines.append, overrides=TINY)
    return out, result, lines


def test_result_structure(run):
    out, result, _ = run
    assert json.loads((out / "docking.json").read_text(encoding="utf-8")) == json.loads(json.dumps(result))
    assert result["seeds"] == [0, 1] and result["settings"]["train"]["steps"] == 3 and result["mode"] == "quick"
    comp = result["composition"]
    assert [r["seed"] for r in comp["rows"]] == [0, 1]
    for r in comp["rows"]:
        assert set(r["models"]) == {"expert-a", "expert-b", "composed"}
        for m in r["models"].values():
            assert set(m["acc"]) == {"a", "b", "union"}
            assert all(0.0 <= v <= 100.0 for v in m["acc"].values())
            assert all(v > 0 for v in m["val_loss"].values())
        n = r["n_items"]
        assert n["a"] > 0 and n["b"] > 0 and n["union"] == n["a"] + n["b"]
        assert n["union"] + n["cross_excluded"] == 16  # 8 questions per language
        assert r["same_substrate"] is True  # both experts of a seed share the frozen table
    # different seeds draw different tables
    assert comp["rows"][0]["fingerprint"] != comp["rows"][1]["fingerprint"]
    agg = comp["aggregate"]["composed/acc/union"]
    assert agg["n"] == 2 and agg["ci95"] == pytest.approx(12.706 * agg["sd"] / 2 ** 0.5)  # Student t, 1 df
    ref = result["refusal"]
    assert ref["refused"] is True and isinstance(ref["message"], str) and "\n" not in ref["message"]
    assert all(not e["substrate_frozen"] for e in ref["experts"])
    grow = result["growth"]
    for r in grow["rows"]:
        assert r["tokens_grown"] == r["tokens_monolithic"] > 0
        assert r["ratio"] == pytest.approx(r["grown_val_loss"] / r["monolithic_val_loss"])
        assert [st["depth"] for st in r["stages"]] == [1, 2]
        assert r["lower_blocks_unchanged"] is True
    assert set(result["verdicts"]) == {"composition", "composition_val_loss", "refusal", "growth"}
    assert all(isinstance(x, bool) for x in result["verdicts"].values())
    assert result["findings"] and all(isinstance(s, str) for s in result["findings"])
    assert result["timing"]["this_call"]["total"]["wall_s"] > 0
    assert all(t["wall_s"] > 0 for t in result["timing"]["parts"].values())


def test_rerun_skips_finished_parts(run):
    out, result, _ = run
    lines: list[str] = []
    again = run_docking_experiment(out, mode="quick", seeds=(0, 1), log=lines.append, overrides=TINY)
    assert not [x for x in lines if "training" in x or "growing" in x or "generating" in x]
    assert again["composition"]["rows"] == result["composition"]["rows"]
    assert again["growth"]["rows"] == result["growth"]["rows"]
    assert again["findings"] == result["findings"]


def test_other_settings_in_same_folder_are_refused(run):
    out, _, _ = run
    with pytest.raises(SubstrateError, match="other settings.*steps"):
        run_docking_experiment(out, mode="quick", seeds=(0,), log=lambda m: None, overrides={**TINY, "train.steps": 4})


@pytest.mark.parametrize("bad", [{"docking.nope": 1}, {"docking.steps": "abc"}, {"train.steps": 0},
                                 {"docking.tokenizer": "xl"}, {"train.lr": True}, {"docking.grow_layers": 1},
                                 {"docking.steps": 2.5}, {"docking.grow_first_layers": 2},
                                 {"docking.grow_lora_rank": -1}, {"docking.warmup": -2}, {"nope.steps": 1}])
def test_bad_settings_are_one_line_errors(tmp_path, bad):
    with pytest.raises(SubstrateError) as exc:
        run_docking_experiment(tmp_path / "x", mode="quick", seeds=(0,), log=lambda m: None, overrides=bad)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_parts_side_by_side_give_the_same_numbers(run, tmp_path):
    _, result, _ = run
    par = run_docking_experiment(tmp_path / "par", mode="quick", seeds=(0, 1), log=lambda m: None, jobs=2,
                                 overrides=TINY)

    def numbers(r):
        return ([{k: v for k, v in row.items() if k not in ("timing", "experts")} for row in r["composition"]["rows"]],
                [{k: v for k, v in row.items() if k != "timing"} for row in r["growth"]["rows"]],
                r["refusal"]["message"], r["findings"])

    assert numbers(par) == numbers(result)


def test_bad_seeds(tmp_path):
    for seeds in ((), (0, 0), ("a",)):
        with pytest.raises(SubstrateError):
            run_docking_experiment(tmp_path / "x", mode="quick", seeds=seeds, log=lambda m: None)
    with pytest.raises(SubstrateError, match="unknown docking mode"):
        run_docking_experiment(tmp_path / "x", mode="fast", seeds=(0,), log=lambda m: None)


def test_findings_follow_the_numbers(run):
    _, result, _ = run
    r = copy.deepcopy(result)
    rows = r["composition"]["rows"]
    for row, (e, c) in zip(rows, [(30.0, 40.0), (31.0, 42.0)]):
        for name in ("expert-a", "expert-b"):
            row["models"][name]["acc"]["union"] = e
        row["models"]["composed"]["acc"]["union"] = c
    r["composition"]["rows"] = [composition_row(x["seed"], x["models"], {k: v for k, v in x["n_items"].items()
                                                                        if k != "union"}) for x in rows]
    r["composition"].update(aggregate_composition(r["composition"]["rows"]))
    good = findings(r)
    # Student t with 1 degree of freedom: 12.706 x sd / sqrt(2)
    assert "in 2/2 seeds" in good[0] and "composed 41.0 ± 12.7%" in good[0] and "CI95 above zero" in good[0]
    assert r["composition"]["verdict"] is True
    rows = r["composition"]["rows"]
    rows[1]["models"]["composed"]["acc"]["union"] = 20.0
    r["composition"]["rows"] = [composition_row(x["seed"], x["models"], {"a": 4, "b": 4}) for x in rows]
    r["composition"].update(aggregate_composition(r["composition"]["rows"]))
    bad = findings(r)
    assert "in 1/2 seeds" in bad[0] and bad[0] != good[0]
    assert r["composition"]["verdict"] is False
    assert any("Composition verdict: not shown" in s for s in bad)


def test_composition_row_and_verdicts():
    def model(acc_u, loss_u):
        return {"acc": {"en": acc_u, "ru": acc_u, "union": acc_u}, "acc_norm": {"en": 0, "ru": 0, "union": 0},
                "val_loss": {"en": loss_u, "ru": loss_u, "union": loss_u}}

    row = composition_row(0, {"expert-en": model(35.0, 2.0), "expert-ru": model(30.0, 2.5),
                              "composed": model(40.0, 1.5)}, {"en": 10, "ru": 10})
    assert row["best_expert"] == "expert-en" and row["margin_acc"] == pytest.approx(5.0)
    assert row["beats_both"] is True and row["margin_val_loss"] == pytest.approx(0.5)
    tie = composition_row(1, {"expert-en": model(35.0, 2.0), "expert-ru": model(30.0, 2.5),
                              "composed": model(35.0, 1.5)}, {"en": 10, "ru": 10})
    assert tie["beats_both"] is False
    agg = aggregate_composition([row, tie])
    assert agg["beats_both_seeds"] == 1 and agg["verdict"] is False
    assert agg["lower_val_loss_seeds"] == 2  # 0.5 nats lower in both seeds, sd 0: CI95 above zero
    assert agg["verdict_val_loss"] is True
    # a consistent margin whose CI95 stays above zero is shown
    rows = [composition_row(s, {"expert-en": model(35.0, 2.0), "expert-ru": model(30.0, 2.5),
                                "composed": model(40.0 + s, 1.5)}, {"en": 10, "ru": 10}) for s in range(3)]
    assert aggregate_composition(rows)["verdict"] is True


def test_growth_rows_and_verdict():
    def stage(depth, loss, tokens):
        return {"depth": depth, "val_loss": loss, "trained": "x", "tokens_total": tokens, "lower_blocks_unchanged": None}

    rows = [growth_row(s, [stage(1, 3.0, 100), stage(2, 2.1 + 0.01 * s, 200)], stage(2, 2.0, 200)) for s in range(3)]
    agg = aggregate_growth(rows)
    assert agg["within_seeds"] == 3 and agg["verdict"] is True
    far = [growth_row(0, [stage(1, 3.0, 100), stage(2, 2.5, 200)], stage(2, 2.0, 200))]
    assert far[0]["ratio"] == pytest.approx(1.25) and far[0]["within_10pct"] is False
    assert aggregate_growth(far)["verdict"] is False


def test_refusal_reason_and_summarize():
    assert refusal_reason(None) is None
    assert refusal_reason("expert 2 substrate fingerprint sha256:ab.. differs from expert 1") == "fingerprint"
    assert refusal_reason("expert 1 has a trainable (unfrozen) table") == "trainable"
    assert refusal_reason("expert 2 vocab_size 3 differs") == "other"
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(1.0) and s["ci95"] == pytest.approx(4.303 / 3 ** 0.5)
    assert summarize([5.0])["ci95"] == 0.0 and summarize([])["n"] == 0


def test_settings_presets_validate():
    for mode in ("quick", "full", "long"):
        ENGINE.apply(DockingSettings.for_mode(mode), {})
        # the demo's sections compare growth with the demo's models; run alone, with its own
        assert DockingSection.for_mode(mode).grow_baseline == "demo"
        assert DockingSettings.for_mode(mode).docking.grow_baseline == "own"
    long, full = DockingSettings.for_mode("long").docking, DockingSettings.for_mode("full").docking
    # --long trains every growth stage longer, on the same growth plan's depths
    assert long.grow_first_steps > full.grow_first_steps and long.grow_steps > full.grow_steps
    assert (long.grow_layers, long.grow_first_layers) == (full.grow_layers, full.grow_first_layers) == (3, 2)
    with pytest.raises(SubstrateError, match="seq_len"):
        ENGINE.apply(DockingSettings(), {"train.seq_len": 256})
    with pytest.raises(SubstrateError, match="docking.grow_layers is derived from the demo's models"):
        ENGINE.apply(DockingSettings(), {"docking.grow_baseline": "demo"})


def test_growth_against_given_models(run, tmp_path):
    # docking.grow_baseline demo: growth trains on the given models' data to their depth (the first
    # stage one block shallower, train.steps - grow_steps steps) and both are scored the same way
    out, result, _ = run
    mono = out / "seed0" / "grow" / "baseline-depth2" / "model"  # a 2-block bits model of seed 0
    base = GrowthBase(data=str(out / "data" / "all"), tokenizer=str(out / "tokenizer"), models={0: str(mono)},
                      steps={0: TINY["train.steps"]}, label="the given model")
    demo = {**TINY, "docking.grow_baseline": "demo", "docking.grow_steps": 1}
    with pytest.raises(SubstrateError, match="run it from substrate-lm demo"):
        run_docking_experiment(tmp_path / "x", mode="quick", seeds=(0,), log=lambda m: None, overrides=demo)
    with pytest.raises(SubstrateError, match="grow_baseline is own"):
        run_docking_experiment(tmp_path / "y", mode="quick", seeds=(0,), log=lambda m: None, overrides=TINY,
                               growth_base=base)
    got = run_docking_experiment(tmp_path / "d", mode="quick", seeds=(0,), log=lambda m: None, overrides=demo,
                                 growth_base=base)
    row = got["growth"]["rows"][0]
    assert [st["depth"] for st in row["stages"]] == [1, 2]
    assert row["tokens_grown"] == row["tokens_monolithic"] == 3 * 2 * 32  # train.steps x batch x seq_len
    assert row["monolithic"] == {"model_dir": str(mono), "label": "the given model"}
    assert row["same_substrate"] is True and row["lower_blocks_unchanged"] is True
    assert not (tmp_path / "d" / "seed0" / "grow" / "baseline-depth2").exists()  # no monolithic model trained
    assert row["ratio"] == pytest.approx(row["grown_val_loss"] / row["monolithic_val_loss"])
    assert "the given model of each seed" in got["findings"][-2]
    # a model that trained fewer tokens than the grown one is refused, naming both counts
    short = GrowthBase(base.data, base.tokenizer, base.models, steps={0: 2}, label="the given model")
    with pytest.raises(SubstrateError, match="trained 192 tokens but the given model 128"):
        run_docking_experiment(tmp_path / "e", mode="quick", seeds=(0,), log=lambda m: None, overrides=demo,
                               growth_base=short)


def test_every_docking_key_is_described():
    text = ENGINE.describe(DockingSettings.for_mode("quick"))
    for section in ("[docking]", "[model]", "[train]"):
        assert section in text
    assert "--docking.steps = 0" in text and "0: train.steps" in text


def test_entity_split_of_sentences_and_questions():
    world = {"entities": [
        {"id": "e0", "category": "animal", "names": {"en": "Kani", "ru": "Кани"}},
        {"id": "e1", "category": "animal", "names": {"en": "Kanive", "ru": "Каниве"}},
        {"id": "e2", "category": "city", "names": {"en": "Momo", "ru": "Момо"}},
    ]}
    side = entity_halves(world)
    assert side == {"e0": "a", "e1": "b", "e2": "a"}  # alternate within each category
    sp = _EntitySplitter(world)
    text = "Kani lives in the forest. Kanive is huge. Kani lives in Momo. Kanive likes Kani. It rains."
    parts = sp.split(text)
    assert parts["a"] == "Kani lives in the forest. Kani lives in Momo. It rains."
    assert parts["b"] == "Kanive is huge. It rains."  # a name inside a longer name is not matched
    qa = "Question: Что такое Кани?\nAnswer: животное\n\nQuestion: Что такое Каниве?\nAnswer: животное"
    assert sp.split(qa) == {"a": "Question: Что такое Кани?\nAnswer: животное",
                            "b": "Question: Что такое Каниве?\nAnswer: животное"}
    assert question_half({"entity": "e0", "target": "e0", "chain": [["e0", "isa", "animal"]]}, side) == "a"
    # the category split: animals and cities in half A, people in B; a sentence naming both is dropped
    world["entities"].append({"id": "e3", "category": "person", "names": {"en": "Tumo", "ru": "Тумо"}})
    assert entity_halves(world, "category") == {"e0": "a", "e1": "a", "e2": "a", "e3": "b"}
    parts = _EntitySplitter(world, "category").split("Kanive is huge. Tumo lives in Momo. Tumo sings.")
    assert parts == {"a": "Kanive is huge.", "b": "Tumo sings."}
    assert question_half({"entity": "e1", "target": "e2", "chain": [["e1", "lives_in", "e2"],
                                                                    ["e2", "size", "tiny"]]}, side) is None


def test_entity_halves_of_the_world_carry_the_same_values(run):
    # the experiment's world is drawn with balanced_halves, and the halves the world balances are
    # exactly the halves the experiment splits by (entity_halves): every attribute's values agree
    from collections import Counter

    out, result, _ = run
    world = json.loads((out / "world" / "world.json").read_text(encoding="utf-8"))
    assert world.get("balanced_halves") is True and result["settings"]["docking"]["balanced_halves"] is True
    side = entity_halves(world)
    checked = 0
    for cat in world["categories"]:
        for attr in world["category_attributes"][cat]:
            per_side = {h: Counter(e["attributes"][attr] for e in world["entities"]
                                   if e["category"] == cat and side[e["id"]] == h) for h in "ab"}
            assert per_side["a"] == per_side["b"], (cat, attr)
            checked += 1
    assert checked >= 18


def test_lang_split_questions(run):
    out, _, _ = run
    by_lang, cross = load_union_questions(out / "world", 8, "lang")
    assert cross == 0 and {k: len(v.items) for k, v in by_lang.items()} == {"en": 8, "ru": 8}
    assert all(it.meta["lang"] == "ru" for it in by_lang["ru"].items)
