"""Log-likelihood protocol: hand-checked scores, acc vs acc_norm, padding and batching."""

from __future__ import annotations

import math

import pytest

from substrate_lm.evaluation import load_bench, run_loglik
from substrate_lm.evaluation.datasets import BENCHES, BenchData, Item
from substrate_lm.evaluation.loglik import encode_pair, score_continuations

from eval_helpers import fixed_distribution_model, substrate_model

# a fixed next-character distribution: x 0.5, y 0.1, space 0.2, the rest shares 0.2
P = {"x": 0.5, "y": 0.1, " ": 0.2}


def unigram(tok):
    rest = len(tok) - len(P)
    logits = {c: math.log(p) for c, p in P.items()}
    return fixed_distribution_model(tok, logits, default=math.log(0.2 / rest))


def test_encode_pair_moves_trailing_space_to_the_continuation(char_tok):
    ctx, cont = encode_pair(char_tok, "Answer: ", "yes")
    assert char_tok.decode(ctx) == "<s>Answer:"
    assert char_tok.decode(cont) == " yes"


def test_hand_built_model_scores_and_preferences(char_tok):
    model = unigram(char_tok)
    (ll_y, greedy_y, n_y), (ll_x, greedy_x, n_x) = score_continuations(
        model, char_tok, [("Question: q\nAnswer:", " yy"), ("Question: q\nAnswer:", " xxxxxxxxx")]
    )
    assert ll_y == pytest.approx(math.log(0.2) + 2 * math.log(0.1), abs=1e-4)
    assert ll_x == pytest.approx(math.log(0.2) + 9 * math.log(0.5), abs=1e-4)
    assert (n_y, n_x) == (3, 10)
    assert not greedy_y and not greedy_x  # the greedy next char is always x, never the space
    assert score_continuations(model, char_tok, [("q", "x")])[0][1] is True

    # acc prefers the short "yy" (higher total), acc_norm the x's (higher per character)
    item = Item(id="i", task="mc", question="q", answer="B", choices=["yy", "xxxxxxxxx"], labels=["A", "B"])
    data = BenchData(BENCHES["arc-e"], [item], "test", 1, None, 0, None)
    r = run_loglik(model, char_tok, data)
    assert r["item_pred"] == [0] and r["item_pred_norm"] == [1]
    assert (r["acc"], r["acc_norm"]) == (0.0, 100.0)
    assert r["item_lls"][0] == pytest.approx([ll_y, ll_x], abs=1e-4)


def test_hand_built_model_picks_its_option_on_a_benchmark(char_tok, tmp_path):
    from eval_helpers import write_jsonl

    rows = []
    for i in range(6):
        texts = ["qqq", "zzz", "xxx", "wvw"]
        gold = "ABCD"[i % 4]
        rows.append({"id": f"r{i}", "question": "pick", "choices": {"label": list("ABCD"), "text": texts}, "answerKey": gold})
    write_jsonl(tmp_path / "ai2_arc/ARC-Easy/validation.jsonl", rows)
    r = run_loglik(unigram(char_tok), char_tok, load_bench("arc-e", tmp_path))
    assert r["item_pred"] == [2] * 6  # always "xxx"
    assert sorted(r["item_gold"]) == [0, 0, 1, 1, 2, 3]  # gold cycles A B C D A B
    assert r["acc"] == pytest.approx(100 / 6)  # only the gold-C item is right
    assert r["acc_stderr"] == pytest.approx(100 * math.sqrt((1 / 6) * (5 / 6) / 5))  # sample std / sqrt(n)
    assert r["acc_ci95"] == pytest.approx(1.96 * r["acc_stderr"])


def test_letter_mode_scores_labels_after_the_published_prompt(char_tok, bench_dir):
    model = fixed_distribution_model(char_tok, {"C": 5.0}, default=0.0)
    r = run_loglik(model, char_tok, load_bench("arc-e", bench_dir), mc_mode="letter")
    assert set(r["item_pred"]) == {2}  # option C everywhere
    assert r["acc"] == 25.0 and r["mc_mode"] == "letter"


def test_generative_benchmark_reports_bits_per_char(char_tok, bench_dir):
    model = unigram(char_tok)
    data = load_bench("squad", bench_dir)
    r = run_loglik(model, char_tok, data)
    rest = 0.2 / (len(char_tok) - len(P))
    # " Tom<i>": space, then 4 characters outside {x, y}
    expect = -(math.log(0.2) + 4 * math.log(rest)) / math.log(2) / 5
    assert r["metric"] == "bpc" and r["bpc"] == pytest.approx(expect, rel=1e-5)
    assert r["greedy_match"] == 0.0


@pytest.mark.parametrize("which", ["gpt-neox", "substrate"])
def test_padding_sides_batch_sizes_and_shared_contexts_agree(char_tok, tiny_model, which):
    model = tiny_model if which == "gpt-neox" else substrate_model(char_tok)
    q1, q2 = "Question: a short one\nAnswer:", "Context: x y z\nQuestion: which?\nAnswer:"
    reqs = [(q1, " red"), ("Q?", " a much longer continuation here"), (q2, " Tom"), ("z", "z"),
            (q1, " blue sky"), (q2, " T"), (q1, " green"), (q2, " Tommy and friends")]
    ref = score_continuations(model, char_tok, reqs, batch_size=1, padding="right", share_context=False)
    for padding in ("left", "right", "auto"):
        for bs in (1, 3):
            for share in (False, True):
                got = score_continuations(model, char_tok, reqs, batch_size=bs, padding=padding, share_context=share)
                assert [g[2] for g in got] == [r[2] for r in ref]
                assert [g[1] for g in got] == [r[1] for r in ref]
                assert [g[0] for g in got] == pytest.approx([r[0] for r in ref], abs=1e-4), (padding, bs, share)


def test_scoring_shows_a_progress_bar_only_when_asked(char_tok, tiny_model, capsys):
    from substrate_lm.evaluation.loglik import score_tokens

    pairs = [([1, 2, 3], [4]), ([1, 2, 3], [5]), ([2, 3], [6, 7])]
    quiet = score_tokens(tiny_model, pairs, batch_size=2, progress=False)
    assert "log-likelihood" not in capsys.readouterr().err
    shown = score_tokens(tiny_model, pairs, batch_size=2, progress=True)
    assert "log-likelihood:   0%|          | 0/3" in capsys.readouterr().err  # cleared at the end (leave=False)
    assert shown == quiet
