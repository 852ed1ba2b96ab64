"""The demo's statistics and findings (computed from numbers, never written in advance), its
settings parser, and the compact tokenizer layout."""

from __future__ import annotations

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


def _row(model, seed, val, mc_ll, mc_p):
    return {"model": model, "seed": seed, "val_loss": val, "mc_loglik": mc_ll, "mc_paper": mc_p, "val_bpc": None,
            "train_loss_last": None, "short_paper": None, "short_loglik_greedy": None, "short_bpc": None}


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
    paper = by_key["questions/bits/mc_paper"]
    assert paper["verdict"] == F.NOT_SHOWN and "not distinguishable from chance" in paper["sentence"]
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
    assert by_key["questions/bits/mc_paper"]["verdict"] == F.FAILS
    assert by_key["val_loss/bits"]["verdict"] == F.FAILS and "not within 10%" in by_key["val_loss/bits"]["sentence"]
    assert by_key["probe/bits/substrate"]["verdict"] == F.FAILS  # a substrate that reveals the category
    assert by_key["probe/bits/best_block"]["verdict"] != F.HOLDS
    assert "contradicted" in st["summary"]


def test_settings_parse_and_reject():
    s = DemoSettings.full()
    s.apply({"steps": "800", "maps": "pca", "langs": "en,ru", "lr": "1e-3", "seeds": 5})
    assert s.steps == 800 and s.maps == ("pca",) and s.langs == ("en", "ru") and s.lr == 1e-3 and s.seeds == 5
    s.apply({"maps": "none"})
    assert s.maps == ()
    bad = [({"steps": "abc"}, "demo.steps must be an integer"), ({"steps": 2.5}, "demo.steps must be an integer"),
           ({"maps": "pca,tnse"}, "unknown map"), ({"lr": "fast"}, "demo.lr must be a number"),
           ({"lr": "nan"}, "demo.lr must be a finite number"),
           ({"steps": 0}, "steps must be >= 1"), ({"warmup": 10_000}, "warmup"), ({"bogus": 1}, "unknown config key demo.bogus"),
           ({"substrates": "bits"}, "demo.substrates must be a table"), ({"tokenizer": "gpt2"}, "tokenizer must be"),
           ({"langs": "xx"}, "xx"), ({"world_size": "huge"}, "cannot read size"), ({"steps": True}, "demo.steps must be an integer"),
           ({"n_head": 5}, "not divisible"), ({"mc_share": 1.5}, "mc_share must be"),
           ({"mc_variants": 0}, "mc_variants must be"), ({"docking_seeds": 0}, "docking_seeds must be"),
           ({"qa_fraction": 0.9}, "qa_fraction must be"), ({"precision": "fp16"}, "demo.precision must be one of fp32, bf16")]
    for overrides, message in bad:
        with pytest.raises(SubstrateError, match=message):
            DemoSettings.full().apply(overrides)


def test_demo_cli_bad_setting_is_one_line_error(capsys, tmp_path):
    for argv in (["--demo.steps", "abc"], ["--demo.maps", "pca,bogus"], ["--demo.nonsense", "1"], ["--nonsense"],
                 ["--set", "steps=600"]):
        assert main(["demo", "--out", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert main(["demo", "--quick", "--long", "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()  # nothing ran
    assert main(["demo", "--set", "steps=600"]) == 2
    assert "write --demo.steps 600" in capsys.readouterr().err
    assert main(["demo", "--quick", "--help-config", "--demo.steps", "77"]) == 0
    out = capsys.readouterr().out
    assert "--demo.steps = 77" in out and "--demo.mc_variants = 8" in out


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
    from substrate_lm.experiments.docking_demo import COMPACT_LAYOUT
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
    # its docking seeds, --quick the quick ones; the full demo neither
    import substrate_lm.experiments.docking_demo as dd
    from substrate_lm.experiments.demo import run_docking

    calls = []
    monkeypatch.setattr(dd, "run_docking_experiment", lambda out, **kw: calls.append(kw) or {"ok": True})
    for mode in ("quick", "full", "long"):
        assert run_docking(tmp_path, mode, [0, 1], print) == {"ok": True}
    assert [(c["quick"], c["long"]) for c in calls] == [(True, False), (False, False), (False, True)]
    assert DemoSettings.long().docking_seeds == 5 and DemoSettings.full().docking_seeds == 3
    assert DemoSettings.long().docking_seeds <= DemoSettings.long().seeds
