"""The published generation protocol: scoring rules, statistics, output lines, batching."""

from __future__ import annotations

import math

import pytest
import torch

from substrate_lm.evaluation import load_bench
from substrate_lm.evaluation.datasets import BENCHES, Item
from substrate_lm.evaluation.models import generate_continuations
from substrate_lm.evaluation.paper import (
    HFGenerator,
    bleu_score,
    contains_correct,
    first_char_correct,
    format_line,
    max_new_tokens_for,
    paper_lines,
    run_paper,
    run_stats,
    score_item,
)
from substrate_lm.evaluation.prompts import paper_prompt

from eval_helpers import letter_model, substrate_model


def test_published_line_format():
    assert format_line("pro_bvv_en", "MMLU", 23.58, 0.20, 0.32) == "pro_bvv_en MMLU: 23.58% ± 0.20% (σ=0.32%)"
    assert format_line("m", "BLEU [en-ru]", 6.4432, 0.1, 0.2) == "m BLEU [en-ru]: 6.44% ± 0.10% (σ=0.20%)"


def test_run_stats_population_sigma_and_ci():
    mean, std, ci = run_stats([25.0, 50.0, 50.0, 75.0])
    assert mean == 50.0
    assert std == pytest.approx(math.sqrt(312.5))  # population sigma, not the sample one
    assert ci == pytest.approx(1.96 * math.sqrt(312.5) / 2)


def test_scoring_rules():
    assert first_char_correct(" b) blue", "B") == 1.0
    assert first_char_correct("\n C", "C") == 1.0
    assert first_char_correct("The answer is B", "B") == 0.0  # first letter only, as published
    assert first_char_correct("", "A") == 0.0
    assert first_char_correct("true", "T") == 1.0  # BoolQ gold is the letter T/F
    assert contains_correct(" it is tom1.", ["Tom1"]) == 1.0
    assert contains_correct(" Tom", ["Tom1"]) == 0.0
    assert bleu_score(" the cat sat on the mat</s>junk", "The cat sat on the mat") == pytest.approx(100.0)
    assert bleu_score(" dog", "The cat sat on the mat") < 5.0
    squad = Item(id="s", task="squad", question="q", answer="Tom1", answers=["Tom1"], context="c")
    short = Item(id="w", task="short", question="q", answer="Vel1", answers=["Vel1", "Velm"])
    assert score_item(squad, "TOM1 is") == 1.0 and score_item(short, "velm") == 1.0


def test_max_new_tokens_per_benchmark(bench_dir):
    expect_fixed = {"mmlu": 1, "arc-e": 2, "arc-c": 2, "csqa": 2, "boolq": 1, "world-mc": 2}
    for name, n in expect_fixed.items():
        d = load_bench(name, bench_dir)
        assert {max_new_tokens_for(d.spec, it) for it in d.items} == {n}
    sq = load_bench("squad", bench_dir)
    assert [max_new_tokens_for(sq.spec, it) for it in sq.items] == [len(it.answer) for it in sq.items]
    long = Item(id="t", task="translate", question="x", answer="y" * 300, answers=["y" * 300])
    assert max_new_tokens_for(BENCHES["bleu-en-ru"], long) == 100


class ScriptedGenerator:
    """Run r answers the gold label for the first ``correct[r]`` items and 'Z' for the rest."""

    deterministic = False

    def __init__(self, items, correct):
        self.gold = {paper_prompt(it): (k, it.answer) for k, it in enumerate(items)}
        self.correct = correct
        self.calls = []

    def __call__(self, prompts, max_new_tokens, run):
        self.calls.append(run)
        out = []
        for p in prompts:
            k, gold = self.gold[p]
            out.append(f" {gold})" if k < self.correct[run] else " Z")
        return out


def test_scripted_generator_gives_exact_mean_sigma_ci(bench_dir):
    data = load_bench("arc-e", bench_dir)  # 8 items
    gen = ScriptedGenerator(data.items, correct=[2, 4, 4, 6])
    r = run_paper(gen, data, model_name="scripted", n_runs=4, seed=0)
    assert gen.calls == [0, 1, 2, 3]
    assert r["runs"] == [25.0, 50.0, 50.0, 75.0]
    assert r["mean"] == 50.0
    assert r["std"] == pytest.approx(17.677669529663688)
    assert r["ci95"] == pytest.approx(17.324116139070414)
    assert r["line"] == "scripted ARC-e: 50.00% ± 17.32% (σ=17.68%)"
    assert r["item_scores"][:2] == [1.0, 1.0] and r["item_scores"][-1] == 0.0


def test_fake_model_answering_B_through_generate(char_tok, bench_dir):
    model = letter_model(char_tok, "B")  # samples, yet always emits B
    conts = generate_continuations(model, char_tok, ["Question: q\nAnswer:", "x"], [1, 2], batch_size=2)
    assert conts == ["B", "BB"]  # decoded whole output, <s> removed, prompt sliced off
    gen = HFGenerator(model, char_tok, batch_size=4)
    assert gen.deterministic is False
    data = load_bench("arc-e", bench_dir)  # gold cycles A B C D over 8 items -> 2 are B
    r = run_paper(gen, data, model_name="fakeB", n_runs=5, seed=0)
    assert r["runs"] == [25.0] * 5
    assert (r["mean"], r["std"], r["ci95"]) == (25.0, 0.0, 0.0)
    assert r["line"] == "fakeB ARC-e: 25.00% ± 0.00% (σ=0.00%)"

    mmlu = load_bench("mmlu", bench_dir)  # anatomy: 1 of 4 gold B; virology: 5 of 6
    r = run_paper(gen, mmlu, model_name="fakeB", n_runs=3, seed=0)
    assert r["mean"] == pytest.approx(60.0)
    assert r["subjects"]["anatomy"]["line"] == "fakeB MMLU [anatomy]: 25.00% ± 0.00% (σ=0.00%)"
    assert r["subjects"]["virology"]["line"] == "fakeB MMLU [virology]: 83.33% ± 0.00% (σ=0.00%)"
    assert paper_lines(r) == [  # published subject order (virology comes before anatomy)
        "fakeB MMLU [virology]: 83.33% ± 0.00% (σ=0.00%)",
        "fakeB MMLU [anatomy]: 25.00% ± 0.00% (σ=0.00%)",
        "fakeB MMLU: 60.00% ± 0.00% (σ=0.00%)",
    ]

    boolq = load_bench("boolq", bench_dir)  # B is neither T nor F
    assert run_paper(gen, boolq, "fakeB", n_runs=2)["mean"] == 0.0


def test_world_benchmarks_report_language_and_kind_groups(char_tok, bench_dir):
    gen = HFGenerator(letter_model(char_tok, "B"), char_tok)
    data = load_bench("world-mc", bench_dir)  # ids 0..5, gold A B C D A B; lang ru/en alternating
    r = run_paper(gen, data, "w", n_runs=2)
    assert r["mean"] == pytest.approx(100 * 2 / 6)
    g = r["groups"]
    assert set(g) == {"en", "ru", "fact", "two_hop"}
    assert g["en"]["mean"] == pytest.approx(100 * 2 / 3)  # items 1, 3, 5: gold B, D, B
    assert g["ru"]["mean"] == 0.0
    assert g["fact"]["n_items"] == 3 and g["two_hop"]["n_items"] == 3


def test_greedy_generator_runs_once_and_repeats():
    calls = []

    class Det:
        deterministic = True

        def __call__(self, prompts, news, run):
            calls.append(run)
            return [" A"] * len(prompts)

    from substrate_lm.evaluation.datasets import BenchData

    items = [Item(id=str(i), task="mc", question="q", answer="A" if i else "B", choices=["x", "y"],
                  labels=["A", "B"]) for i in range(4)]
    data = BenchData(BENCHES["arc-e"], items, "test", 4, None, 0, None)
    r = run_paper(Det(), data, "g", n_runs=10)
    assert calls == [0] and r["runs"] == [75.0] * 10 and r["deterministic"] is True


def _models(char_tok, tiny_model):
    yield "gpt-neox", tiny_model
    yield "substrate", substrate_model(char_tok)


def test_batched_generation_equals_one_by_one(char_tok, tiny_model, bench_dir):
    items = load_bench("arc-e", bench_dir).items + load_bench("squad", bench_dir).items
    prompts = [paper_prompt(it) for it in items]
    news = [max_new_tokens_for(BENCHES["squad" if it.task == "squad" else "arc-e"], it) for it in items]
    for name, model in _models(char_tok, tiny_model):
        one = generate_continuations(model, char_tok, prompts, news, batch_size=1, greedy=True)
        many = generate_continuations(model, char_tok, prompts, news, batch_size=5, greedy=True)
        assert one == many, name
        assert [len(c) for c in one] == news  # one char per token with this tokenizer


def test_sampled_runs_are_reproducible_from_the_seed(char_tok, bench_dir):
    model = substrate_model(char_tok)
    assert model.generation_config.do_sample  # ours samples by default, like the published models
    gen = HFGenerator(model, char_tok, batch_size=4)
    data = load_bench("squad", bench_dir)
    a = run_paper(gen, data, "s", n_runs=2, seed=7)
    b = run_paper(gen, data, "s", n_runs=2, seed=7)
    c = run_paper(gen, data, "s", n_runs=2, seed=8)
    assert a["examples"] == b["examples"]
    assert a["examples"] != c["examples"]
    torch.manual_seed(0)


def test_models_without_position_ids_only_batch_equal_lengths():
    from substrate_lm.evaluation.models import _batches

    lengths = [5, 3, 5, 3, 3, 7]
    order = sorted(range(6), key=lambda i: lengths[i])
    assert list(_batches(order, lengths, 2, same_length=True)) == [[1, 3], [4], [0, 2], [5]]
    assert list(_batches(order, lengths, 4, same_length=False)) == [[1, 3, 4, 0], [2, 5]]


def test_greedy_flag_makes_a_sampling_model_deterministic(char_tok):
    model = letter_model(char_tok, "B")
    assert HFGenerator(model, char_tok, greedy=True).deterministic is True
    assert HFGenerator(model, char_tok, generation_kwargs={"do_sample": False}).deterministic is True
