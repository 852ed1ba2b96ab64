"""Perplexity and bits per character with a sliding window."""

from __future__ import annotations

import math

import pytest
import torch

from substrate_lm.errors import SubstrateError
from substrate_lm.evaluation import perplexity
from substrate_lm.evaluation.perplexity import read_text

from eval_helpers import fixed_distribution_model


def test_bpc_of_a_fixed_distribution_is_exact_for_any_window(char_tok):
    probs = {"a": 0.5, "b": 0.25, " ": 0.125}
    rest = (1 - sum(probs.values())) / (len(char_tok) - len(probs))
    model = fixed_distribution_model(char_tok, {c: math.log(p) for c, p in probs.items()}, default=math.log(rest))
    text = "ab ba aab bb a c"
    expect_bits = -sum(math.log2(probs.get(c, rest)) for c in text)
    for window, stride in ((64, 32), (5, 2), (4, 3), (2, 1)):
        r = perplexity(model, char_tok, text, window=window, stride=stride)
        assert r["tokens_scored"] == len(text)  # BOS in front: every character is scored once
        assert r["bpc"] == pytest.approx(expect_bits / len(text), rel=1e-5), (window, stride)
        assert r["perplexity"] == pytest.approx(2 ** (expect_bits / len(text)), rel=1e-5)
    r = perplexity(model, char_tok, text, add_bos=False)
    assert r["tokens_scored"] == len(text) - 1 and not r["bos"]


def _reference(model, ids, window, stride):
    """The Hugging Face perplexity recipe (labels masked with -100, mean loss x targets)."""
    x = torch.tensor([ids])
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, x.shape[1], stride):
        end = min(begin + window, x.shape[1])
        trg = end - prev_end
        inp = x[:, begin:end]
        labels = inp.clone()
        labels[:, :-trg] = -100
        with torch.no_grad():
            loss = model(inp, labels=labels).loss
        n = int((labels[:, 1:] != -100).sum())
        nll += float(loss) * n
        count += n
        prev_end = end
        if end == x.shape[1]:
            break
    return nll, count


def test_sliding_window_matches_the_reference_recipe(char_tok, tiny_model):
    text = "the quick brown fox jumps over the lazy dog. " * 3
    ids = [char_tok.bos_token_id] + char_tok.encode(text, add_special_tokens=False)
    for window, stride in ((32, 16), (50, 49), (200, 100)):
        r = perplexity(tiny_model, char_tok, text, window=window, stride=stride, batch_size=3)
        nll, count = _reference(tiny_model, ids, window, stride)
        assert r["tokens_scored"] == count == len(text)
        assert r["nll"] == pytest.approx(nll, rel=1e-4)
        assert r["bpc"] == pytest.approx(nll / math.log(2) / len(text), rel=1e-4)


def test_bad_input(char_tok, tiny_model, tmp_path):
    with pytest.raises(SubstrateError):
        perplexity(tiny_model, char_tok, "")
    with pytest.raises(SubstrateError, match="stride"):
        perplexity(tiny_model, char_tok, "abc", window=8, stride=8)
    with pytest.raises(SubstrateError, match="not found"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "v.jsonl").write_text('{"text": "ab"}\n{"text": "cd", "lang": "en"}\n')
    assert read_text(tmp_path / "v.jsonl") == "ab\ncd"


def test_window_and_batch_checks_and_progress_bar(char_tok, tiny_model, capsys):
    from substrate_lm.evaluation.models import max_context

    ctx = max_context(tiny_model)
    with pytest.raises(SubstrateError, match="exceeds the model's context length"):
        perplexity(tiny_model, char_tok, "abcdef", window=ctx + 1)
    with pytest.raises(SubstrateError, match="--window must be at least 2"):
        perplexity(tiny_model, char_tok, "abcdef", window=1)
    with pytest.raises(SubstrateError, match="--batch-size"):
        perplexity(tiny_model, char_tok, "abcdef", batch_size=0)
    text = "a held-out text for the bar. " * 4
    quiet = perplexity(tiny_model, char_tok, text, window=16, progress=False)
    assert "perplexity" not in capsys.readouterr().err
    shown = perplexity(tiny_model, char_tok, text, window=16, progress=True)
    err = capsys.readouterr().err
    assert "perplexity: 100%" in err and f"{quiet['tokens_scored']}/{quiet['tokens_scored']}" in err
    assert shown["nll"] == quiet["nll"]


def test_read_text_errors_name_the_file(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(SubstrateError, match=f"{bad} is not UTF-8 text"):
        read_text(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(SubstrateError, match="holds no text"):
        read_text(empty)
    with pytest.raises(SubstrateError, match="is a folder"):
        read_text(tmp_path)
    (tmp_path / "n.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(SubstrateError, match="not a string"):
        read_text(tmp_path / "n.jsonl")
