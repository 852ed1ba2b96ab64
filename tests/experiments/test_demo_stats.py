"""The demo's statistics and findings (computed from numbers, never written in advance), its
settings parser, and the compact tokenizer layout."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from substrate_lm.cli.main import main
from substrate_lm.errors import SubstrateError
from substrate_lm.experiments import findings as F
from substrate_lm.experiments.demo import DemoSettings, compute_statistics


def test_ci_uses_student_t():
    s = F.ci([2.0, 4.0, 3.0])
    assert s["mean"] == pytest.approx(3.0) and s["sd"] == pytest.approx(1.0) and s["n"] == 3
    assert s["ci95"] == pytest.approx(4.303 / math.sqrt(3))  # t(0.975, df=2), not 1.96
    assert s["lo"] == pytest.approx(3.0 - s["ci95"]) and s["hi"] == pytest.approx(3.0 + s["ci95"])
    one = F.ci([5.0])
    assert one["ci95"] is None and one["n"] == 1
    assert F.ci([])["mean"] is None
    assert F.t975(40) == 1.96 and F.t975(1) == pytest.approx(12.706)
    with pytest.raises(ValueError):
        F.t975(0)


def test_verdicts_read_off_the_interval():
    above = F.ci([60.0, 62.0, 61.0])
    straddle = F.ci([20.0, 40.0, 30.0])
    below = F.ci([20.0, 21.0, 22.0])
    assert F.verdict_above(above, 25.0) == F.HOLDS
    assert F.verdict_above(straddle, 25.0) == F.NOT_SHOWN
    assert F.verdict_above(below, 25.0) == F.FAILS
    assert F.verdict_above(F.ci([90.0]), 25.0) == F.NOT_SHOWN  # one seed proves nothing
    assert F.verdict_below(F.ci([1.01, 1.02, 1.03]), 1.10) == F.HOLDS
    assert F.verdict_below(F.ci([1.2, 1.3, 1.25]), 1.10) == F.FAILS


def _metrics(acc, control, chance=1 / 6):
    layers = ["substrate", "0", "1", "2"]
    return {"layers": layers, "probe": {"accuracy": acc, "control_accuracy": control, "chance_majority": chance}}


def _row(model, seed, val, mc_ll, mc_p, valid=None):
    return {"model": model, "seed": seed, "val_loss": val, "mc_loglik": mc_ll, "mc_paper": mc_p, "val_bpc": None,
            "mc_paper_valid": valid, "train_loss_last": None, "short_paper": None, "short_loglik_greedy": None,
            "short_bpc": None}


def test_findings_follow_the_numbers():
    names = {"bits": "bits", "trainable": "unfrozen"}
    rows = [_row("bits", s, 1.00 + 0.01 * s, 70.0 + s, 24.0 + s) for s in range(3)]
    rows += [_row("trainable", s, 0.98 + 0.01 * s, 80.0, 50.0) for s in range(3)]
    analyses = {
        "bits": {s: _metrics([0.17 + 0.01 * (s - 1), 0.16, 0.55 + 0.02 * s, 0.60 + 0.01 * s], [0.15, 0.16, 0.17, 0.18 + 0.01 * s]) for s in range(3)},
        "trainable": {s: _metrics([0.6, 0.6, 0.6, 0.6], [0.2, 0.2, 0.2, 0.2]) for s in range(3)},
    }
    st = compute_statistics(rows, analyses, names)
    by_key = {f["key"]: f for f in st["findings"]}
    ll = by_key["questions/bits/mc_loglik"]
    assert ll["verdict"] == F.HOLDS and "71.0%" in ll["sentence"] and "chance is 25%" in ll["sentence"]
    # the generation protocol is judged against the trainable table, paired by seed (the papers' claim):
    # bits 24, 25, 26 vs 50 -> contradicted here
    assert "questions/bits/mc_paper" not in by_key
    gen = by_key["generation/bits_vs_trainable"]
    assert gen["verdict"] == F.FAILS and gen["stat"]["mean"] == pytest.approx(-25.0)
    assert "contrary to the papers" in gen["sentence"] and "frozen higher in 0/3 seeds" in gen["sentence"]
    loss = by_key["val_loss/bits"]
    assert loss["verdict"] == F.HOLDS and loss["stat"]["mean"] == pytest.approx((1.0 / 0.98 + 1.01 / 0.99 + 1.02 / 1.0) / 3)
    sub = by_key["probe/bits/substrate"]
    assert sub["verdict"] == F.HOLDS and "at chance" in sub["sentence"]
    best = by_key["probe/bits/best_block"]
    assert best["layer"] == "2" and best["verdict"] == F.HOLDS
    assert best["selectivity"]["mean"] == pytest.approx(0.61 - 0.19)
    # the trainable baseline is a reference, not a claim
    assert not any(k.startswith("questions/trainable") or k.startswith("probe/trainable") for k in by_key)
    assert st["summary"] == F.summary_line(st["findings"])
    assert st["probes"]["bits"]["accuracy"][2]["n"] == 3


def test_findings_can_fail():
    names = {"bits": "bits", "trainable": "unfrozen"}
    rows = [_row("bits", s, 2.0 + 0.01 * s, 25.0 + s - 1, 2.0) for s in range(3)]
    rows += [_row("trainable", s, 1.0, 80.0, 50.0) for s in range(3)]
    analyses = {"bits": {s: _metrics([0.6 + 0.01 * s, 0.6, 0.17, 0.16], [0.16, 0.16, 0.17 + 0.01 * s, 0.16]) for s in range(3)}}
    st = compute_statistics(rows, analyses, names)
    by_key = {f["key"]: f for f in st["findings"]}
    assert by_key["generation/bits_vs_trainable"]["verdict"] == F.FAILS
    assert by_key["val_loss/bits"]["verdict"] == F.FAILS and "not within 10%" in by_key["val_loss/bits"]["sentence"]
    assert by_key["probe/bits/substrate"]["verdict"] == F.FAILS  # a substrate that reveals the category
    assert by_key["probe/bits/best_block"]["verdict"] != F.HOLDS
    assert "contradicted" in st["summary"]


def test_generation_finding_is_the_papers_comparison():
    """Frozen vs trainable under the generation protocol, paired by seed, with the valid-letter shares."""
    names = {"bits": "bits", "glyph": "glyph", "trainable": "unfrozen"}
    rows = [_row("bits", s, 1.0, 60.0, 24.0 + s, valid=99.0 - s) for s in range(4)]
    rows += [_row("glyph", s, 1.0, 60.0, 14.0 + (s % 2), valid=90.0) for s in range(4)]
    rows += [_row("trainable", s, 1.0, 60.0, 14.0 + s, valid=50.0 + s) for s in range(4)]
    by_key = {f["key"]: f for f in compute_statistics(rows, {}, names)["findings"]}
    bits = by_key["generation/bits_vs_trainable"]
    assert bits["verdict"] == F.HOLDS and bits["stat"]["mean"] == pytest.approx(10.0) and bits["stat"]["n"] == 4
    assert bits["valid_share"]["mean"] == pytest.approx(97.5) and bits["valid_share_trainable"]["mean"] == pytest.approx(51.5)
    assert "valid option letters: 97.5%" in bits["sentence"] and "as the papers report" in bits["sentence"]
    assert "frozen higher in 4/4 seeds" in bits["sentence"]
    glyph = by_key["generation/glyph_vs_trainable"]  # 14,15,14,15 vs 14,15,16,17: straddles zero
    assert glyph["verdict"] == F.NOT_SHOWN and "no difference established" in glyph["sentence"]
    # unpaired seeds are left out; a missing valid share (an older run) drops only that clause
    rows = [_row("bits", s, 1.0, 60.0, 30.0 + s) for s in range(3)] + [_row("trainable", s, 1.0, 60.0, 20.0) for s in (1, 2, 7)]
    gen = F.generation_findings({"bits": {r["seed"]: r["mc_paper"] for r in rows if r["model"] == "bits"},
                                 "trainable": {1: 20.0, 2: 20.0, 7: 20.0}}, {}, ["bits"], "trainable")
    assert gen[0]["seeds"] == [1, 2] and "valid option" not in gen[0]["sentence"]


def test_valid_option_share_is_recorded():
    from substrate_lm.evaluation.datasets import BENCHES, BenchData, Item
    from substrate_lm.evaluation.paper import run_paper, valid_option

    items = [Item(id=str(i), task="mc", question="q", answer="B", choices=["w", "x", "y", "z"],
                  labels=["A", "B", "C", "D"]) for i in range(4)]
    assert valid_option(items[0], " c)") == 1.0 and valid_option(items[0], " E") == 0.0
    assert valid_option(Item(id="s", task="short", question="q", answer="x"), "x") is None
    conts = [" B", " A", "\n", " Z"]  # right, wrong but valid, no letter, not an option
    gen = lambda prompts, news, run: conts
    spec = BENCHES["world-mc"]
    data = BenchData(spec=spec, items=items, source="test", n_available=4, sample_size=None, seed=0, limit=None)
    res = run_paper(gen, data, n_runs=2, progress=False)
    assert res["mean"] == pytest.approx(25.0) and res["valid_share"] == pytest.approx(50.0)


def test_settings_parse_and_reject():
    full = DemoSettings.full()
    s = full.apply({"train.steps": "800", "demo.maps": "pca", "demo.langs": "en,ru", "train.lr": "1e-2",
             "demo.seeds": 5, "model.overrides.n_layer": "3", "docking.grow_steps": "50"})
    assert s.train.steps == 800 and s.demo.maps == ("pca",) and s.demo.langs == ("en", "ru") and s.train.lr == 1e-2
    assert s.demo.seeds == 5 and s.model.overrides["n_layer"] == 3 and s.docking.grow_steps == 50
    assert full.train.steps == 1200 and full.demo.langs == ("en",)  # apply returns new settings
    s = s.apply({"demo.maps": "none"})
    assert s.demo.maps == ()
    bad = [({"train.steps": "abc"}, "train.steps must be an integer"), ({"train.steps": 2.5}, "train.steps must be an integer"),
           ({"demo.maps": "pca,tnse"}, "unknown map"), ({"train.lr": "fast"}, "train.lr must be a number"),
           ({"train.lr": "nan"}, "train.lr must be a finite number"),
           ({"train.steps": 0}, "steps must be >= 1"), ({"train.warmup": 10_000}, "warmup"),
           ({"demo.bogus": 1}, "unknown config key demo.bogus"), ({"bogus.steps": 1}, "unknown config section"),
           ({"demo.substrates": "bits"}, "demo.substrates must be a table"), ({"demo.tokenizer": "gpt2"}, "tokenizer must be"),
           ({"demo.langs": "xx"}, "xx"), ({"demo.world_size": "huge"}, "cannot read size"),
           ({"train.steps": True}, "train.steps must be an integer"),
           ({"model.overrides.n_head": 5}, "model.overrides"), ({"demo.mc_share": 1.5}, "mc_share must be"),
           ({"demo.mc_variants": 0}, "mc_variants must be"), ({"demo.docking_seeds": 0}, "docking_seeds must be"),
           ({"demo.qa_fraction": 0.9}, "qa_fraction must be"), ({"train.precision": "fp16"}, "train.precision must be one of fp32, bf16"),
           ({"train.lr": 1e-4}, "train.min_lr must be between"), ({"train.seq_len": 256}, "seq_len 256 exceeds"),
           ({"docking.grow_layers": 1}, "docking.grow_layers"), ({"model.substrate": "bits"}, "--substrates"),
           ({"train.seed": 3}, "--seed"), ({"docking.split": "x"}, "docking.split must be one of"),
           # growth against the demo's models: its plan is derived, the seeds must have demo models
           ({"docking.grow_layers": 3}, "docking.grow_layers is derived from the demo's models"),
           ({"docking.grow_first_steps": 100}, "grow_first_steps is derived"),
           ({"docking.grow_steps": 1200}, "grow_steps \\(1200\\) must be below train.steps"),
           ({"demo.docking_seeds": 6}, "docking_seeds \\(6\\) must be <= demo.seeds"),
           ({"docking.grow_baseline": "mine"}, "docking.grow_baseline must be one of own, demo"),
           # the flat keys that became the trainer's name their new key
           ({"demo.steps": 600}, "write --train.steps"), ({"demo.n_layer": 2}, "write --model.overrides.n_layer")]
    for overrides, message in bad:
        with pytest.raises(SubstrateError, match=message):
            DemoSettings.full().apply(overrides)


def test_modes_keep_their_settings():
    # the built-in modes: the demo's models, their schedule and the docking experiment's, per mode
    model = {mode: DemoSettings.for_mode(mode).model.overrides for mode in ("quick", "full", "long")}
    assert model["quick"] == {"d_model": 64, "n_layer": 2, "n_head": 4, "block_size": 128}
    assert model["full"] == model["long"] == {"d_model": 64, "n_layer": 4, "n_head": 4, "block_size": 128}
    train = {mode: DemoSettings.for_mode(mode).train for mode in ("quick", "full", "long")}
    assert [(t.steps, t.warmup) for t in train.values()] == [(120, 12), (1200, 60), (2400, 120)]
    assert all((t.batch_size, t.seq_len, t.lr, t.min_lr, t.precision) == (8, 128, 1e-2, 1e-3, "fp32")
               for t in train.values())
    demo = {mode: DemoSettings.for_mode(mode).demo for mode in ("quick", "full", "long")}
    assert [(d.seeds, d.docking_seeds, d.eval_interval, d.limit, d.per_entity) for d in demo.values()] == \
        [(1, 1, 60, 60, 4), (5, 5, 100, 300, 8), (8, 8, 400, 300, 8)]


def test_steps_reach_the_cells_and_the_experts_as_typed_objects(tmp_path):
    # --train.steps is read once into the trainer's TrainSection; every cell's run config and every
    # docking expert's hold that section (dataclasses.replace), never a rewritten string
    from substrate_lm.experiments.ablate import Corpus, cell_run_config, cells
    from substrate_lm.experiments.demo import demo_ablation, demo_run_config
    from substrate_lm.experiments.docking import expert_run_config, expert_sections

    s = DemoSettings.quick().apply(["--train.steps", "77", "--train.warmup", "7"])
    base = demo_run_config(s)
    assert base.train is s.train and base.model is s.model
    corpus = Corpus("world:150KB", tmp_path / "data", str(tmp_path / "tok"), None)
    for cell in cells(demo_ablation(s, tmp_path, [0, 1])):
        run = cell_run_config(base, cell, corpus, tmp_path / cell.key)
        assert (run.train.steps, run.train.warmup, run.train.seed) == (77, 7, cell.seed)
        assert run.model.substrate == cell.substrate and run.model.overrides == s.model.overrides
    assert base.train.seed == 0 and base.model.substrate == ""  # the cells did not change the base
    ds = s.docking_settings()
    model, train = expert_sections(ds)
    assert train.steps == 77 and train.warmup == 5 and model.overrides["n_layer"] == 2  # quick: warmup 5 of its own
    exp = expert_run_config(ds, tmp_path / "seed0" / "expert-a" / "run", tmp_path, tmp_path, 3, "bits", train.steps)
    assert (exp.train.steps, exp.train.seed, exp.train.lr) == (77, 3, s.train.lr)
    # docking.steps sets the experts apart from the demo's models
    s = s.apply({"docking.steps": 20})
    assert expert_sections(s.docking_settings())[1].steps == 20 and s.train.steps == 77


def test_demo_cli_bad_setting_is_one_line_error(capsys, tmp_path):
    for argv in (["--demo.steps", "abc"], ["--demo.maps", "pca,bogus"], ["--demo.nonsense", "1"], ["--nonsense"],
                 ["--set", "steps=600"]):
        assert main(["demo", "--out", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert main(["demo", "--quick", "--long", "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()  # nothing ran
    assert main(["demo", "--set", "seeds=6"]) == 2
    assert "write --demo.seeds 6" in capsys.readouterr().err
    assert main(["demo", "--demo.steps", "600"]) == 2
    assert "write --train.steps VALUE" in capsys.readouterr().err
    # growth is compared with the demo's random-bits models: dropping them needs one of two choices
    assert main(["demo", "--quick", "--substrates", "glyph", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "keep bits in --substrates, or add --docking.grow_baseline own, or --no-docking" in err
    assert not (tmp_path / "g").exists()
    assert main(["demo", "--quick", "--help-config", "--train.steps", "77", "--docking.grow_steps", "9"]) == 0
    out = capsys.readouterr().out
    assert "--train.steps = 77" in out and "--demo.mc_variants = 8" in out and "--docking.grow_steps = 9" in out
    # every key of every section is listed, each docking key with its meaning
    from substrate_lm.experiments.docking import DockingSection
    from substrate_lm.settings import field_docs

    docs = field_docs(DockingSection)
    for f in dataclasses.fields(DockingSection):
        assert f"--docking.{f.name} = " in out and docs.get(f.name), f.name
    assert "[model]" in out and "[train]" in out and "--model.overrides = {d_model = 64, n_layer = 2" in out


def test_ablate_settings_are_typed(tmp_path, capsys):
    from substrate_lm.experiments.ablate import load_ablation_config

    p = tmp_path / "ab.toml"
    p.write_text("[ablation]\n")
    cfg = load_ablation_config(p, ["--ablation.substrates", "bits", "--ablation.seeds", "0,1",
                                   "--ablation.world", "{entities_per_cat = 8}", "--ablation.tokenizer", "compact",
                                   "--ablation.limit", "none"])
    assert cfg.substrates == ["bits"] and cfg.seeds == [0, 1] and cfg.world == {"entities_per_cat": 8}
    assert cfg.limit is None
    for argv, message in ((["--ablation.n_runs", "abc"], "ablation.n_runs must be an integer"),
                          (["--ablation.seeds", "[1.5]"], "ablation.seeds must be an integer"),
                          (["--ablation.tokenizer", "gpt2"], "ablation.tokenizer"),
                          (["--ablation.world", "{bogus = 1}"], "unknown ablation.world"),
                          (["--ablation.world", "3"], "ablation.world must be a table"),
                          (["--ablation.limit", "0"], "ablation.limit must be >= 1")):
        with pytest.raises(SubstrateError, match=message):
            load_ablation_config(p, argv)
    p.write_text("[ablation]\nseeds = [true]\n")
    with pytest.raises(SubstrateError, match="ablation.seeds must be an integer"):
        load_ablation_config(p)
    p.write_text("[ablation]\n")
    assert main(["ablate", "--config", str(p), "--ablation.n_runs", "abc"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ablation.n_runs must be an integer")
    assert main(["ablate", "--config", str(p), "--set", "n_runs=3"]) == 2
    assert "write --ablation.n_runs 3" in capsys.readouterr().err


def test_compact_layout_keeps_the_tokens(tmp_path):
    from substrate_lm.experiments.compact import corpus_layout as compact_layout
    from substrate_lm.experiments.docking import COMPACT_LAYOUT
    from substrate_lm.tokenizer import build_from_corpus
    from substrate_lm.world import generate_world

    world = tmp_path / "w"
    generate_world(world, size="30KB", langs=("en",), seed=0, entities_per_cat=6)
    layout = compact_layout(world, ["en"])
    assert layout.vocab_size < 1500 and layout.monogram_ranges == ((0, layout.special_range[0] - 1),)
    compact = build_from_corpus([world / "train.jsonl"], langs=["en"], layout=layout)
    full = build_from_corpus([world / "train.jsonl"], langs=["en"])
    assert len(compact) == layout.vocab_size
    text = json.loads((world / "val.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    a, b = compact.encode(text), full.encode(text)
    # the same tokens (strings) in the same places; monograms keep id == code point
    assert compact.convert_ids_to_tokens(a) == full.convert_ids_to_tokens(b)
    assert all(i == ord(t) for i, t in zip(a, compact.convert_ids_to_tokens(a)) if len(t) == 1)
    assert compact.decode(a) == text and max(a) < layout.vocab_size and compact.unk_token_id not in a
    # Cyrillic (and the Russian templates' em dash, U+2014) still fit, in a larger id space
    generate_world(tmp_path / "ru", size="20KB", langs=("ru",), seed=0)
    assert compact_layout(tmp_path / "ru", ["ru"]).vocab_size < 0x10000 // 4
    generate_world(tmp_path / "zh", size="20KB", langs=("zh",), seed=0)
    with pytest.raises(SubstrateError, match="drop zh"):
        compact_layout(tmp_path / "zh", ["zh"])
    # the docking experiment's fixed layout comes from the same function: U+0000-U+04FF, 2,048 ids
    assert (COMPACT_LAYOUT.vocab_size, COMPACT_LAYOUT.special_range, COMPACT_LAYOUT.ngram_ranges) == \
        (0x800, (0x500, 0x51F), ((0x520, 0x7FF),))


def test_docking_verdicts_become_claim_3_findings():
    docking = {"verdicts": {"composition": True, "refusal": False, "growth": False},
               "findings": ["Composition: the logit average beats both experts in 3/3 seeds.", "Other sentence.",
                            "Growth: ratio 1.2, verdict: not shown."]}
    got = {f["key"]: f for f in F.docking_findings(docking)}
    assert got["docking/composition"]["verdict"] == F.HOLDS and got["docking/composition"]["sentence"].startswith("Composition:")
    assert got["docking/refusal"]["verdict"] == F.FAILS and "not shown" in got["docking/refusal"]["sentence"]
    assert got["docking/growth"]["verdict"] == F.NOT_SHOWN and got["docking/growth"]["sentence"].startswith("Growth:")
    assert all(f["claim"] == "3" for f in got.values())
    assert F.docking_findings(None) == []


def test_each_mode_runs_its_own_docking_settings(monkeypatch, tmp_path):
    # demo --long must run the docking experiment's long settings (longer experts and growth) on
    # its docking seeds, --quick the quick ones; the experts take the demo's [model] and [train]
    import substrate_lm.experiments.demo as demo
    from substrate_lm.experiments.docking import DockingSection, expert_sections

    calls = []
    monkeypatch.setattr(demo, "run_docking_experiment", lambda out, settings, **kw: calls.append((settings, kw)) or {"ok": True})
    for mode in ("quick", "full", "long"):
        assert demo.run_docking(tmp_path, DemoSettings.for_mode(mode), mode, [0, 1], print) == {"ok": True}
    assert [kw["mode"] for _, kw in calls] == ["quick", "full", "long"]
    assert [st.docking for st, _ in calls] == [DockingSection.quick(), DockingSection.full(), DockingSection.long()]
    # the experts' schedule of each mode (as before the demo and the docking experiment shared sections)
    experts = [expert_sections(st) for st, _ in calls]
    assert [(t.steps, t.warmup, m.overrides["n_layer"]) for m, t in experts] == [(120, 5, 2), (1200, 60, 4), (2400, 120, 4)]
    assert DemoSettings.long().demo.docking_seeds == 8 and DemoSettings.full().demo.docking_seeds == 5
    # growth is compared with the demo's own random-bits models in every mode
    assert all(st.docking.grow_baseline == "demo" for st, _ in calls)
    assert DemoSettings.long().demo.docking_seeds <= DemoSettings.long().demo.seeds
