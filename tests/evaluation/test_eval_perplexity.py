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


def _lm_eval_reference(model, ids, window, stride):
    """lm-evaluation-harness's rolling log-likelihood (``get_rolling_token_windows`` +
    ``make_disjoint_window``, as HFLM scores it), one window per forward pass, logits by hand."""
    utils = pytest.importorskip("lm_eval.utils")
    nll, count = 0.0, 0
    windows = utils.get_rolling_token_windows(ids[1:], prefix_token=ids[0], max_seq_len=window,
                                              context_len=window - stride + 1)
    for context, cont in map(utils.make_disjoint_window, windows):
        inp = torch.tensor([(context + cont)[:-1]])
        with torch.no_grad():
            logp = torch.log_softmax(model(inp).logits[0].double(), dim=-1)[-len(cont):]
        nll -= float(logp.gather(-1, torch.tensor(cont)[:, None]).sum())
        count += len(cont)
    return nll, count


def _hf_recipe(model, ids, window, stride):
    """The Hugging Face perplexity recipe (labels masked with -100, mean loss x targets): a window of
    ``window`` tokens scores at most ``window - 1``, its last position's logits unused."""
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


def test_rolling_windows_match_lm_eval(char_tok, tiny_model):
    text = "the quick brown fox jumps over the lazy dog. " * 3
    ids = [char_tok.bos_token_id] + char_tok.encode(text, add_special_tokens=False)
    for window, stride in ((32, 32), (32, 16), (50, 49), (7, 1), (200, 100), (200, 200)):
        r = perplexity(tiny_model, char_tok, text, window=window, stride=stride, batch_size=3)
        nll, count = _lm_eval_reference(tiny_model, ids, window, stride)
        assert r["tokens_scored"] == count == len(text)
        assert r["nll"] == pytest.approx(nll, rel=1e-5), (window, stride)
        assert r["bpc"] == pytest.approx(nll / math.log(2) / len(text), rel=1e-5)
    # the default stride is the window: each token fed once (lm-eval's context_len=1)
    r = perplexity(tiny_model, char_tok, text, window=32)
    assert r["stride"] == 32 and r["forward_positions"] == 5 * 32  # 135 targets: 4 full windows + 1 end-aligned
    assert r["nll"] == pytest.approx(_lm_eval_reference(tiny_model, ids, 32, 32)[0], rel=1e-5)
    # a window after the first feeds window - stride tokens before its new ones: the Hugging Face
    # recipe's window of window + 1 tokens (whose last logits it drops), wherever its windows align
    for window, stride in ((35, 25), (35, 10)):
        assert (len(ids) - 1 - window) % stride == 0  # the recipe's last window is then a full one
        r = perplexity(tiny_model, char_tok, text, window=window, stride=stride)
        assert r["nll"] == pytest.approx(_hf_recipe(tiny_model, ids, window + 1, stride)[0], rel=1e-5)


def test_batching_and_bf16_do_not_change_the_numbers(char_tok, tiny_model):
    text = "pack my box with five dozen liquor jugs. " * 4
    one = perplexity(tiny_model, char_tok, text, window=24, stride=10, batch_size=1)
    for bs in (2, 5, 64):
        assert perplexity(tiny_model, char_tok, text, window=24, stride=10, batch_size=bs)["nll"] == \
            pytest.approx(one["nll"], rel=1e-6)
    bf16 = perplexity(tiny_model, char_tok, text, window=24, stride=10, precision="bf16")
    assert bf16["bpc"] == pytest.approx(one["bpc"], rel=2e-2)
    with pytest.raises(SubstrateError, match="precision"):
        perplexity(tiny_model, char_tok, text, precision="fp8")


def test_bad_input(char_tok, tiny_model, tmp_path):
    with pytest.raises(SubstrateError):
        perplexity(tiny_model, char_tok, "")
    with pytest.raises(SubstrateError, match="stride must be between 1 and the window"):
        perplexity(tiny_model, char_tok, "abc", window=8, stride=9)
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


def test_progress_lines_in_a_log_and_the_stride_note(char_tok, tiny_model, capsys, monkeypatch):
    import importlib

    ppl_module = importlib.import_module("substrate_lm.evaluation.perplexity")  # the module, not the function
    monkeypatch.setattr(ppl_module, "PROGRESS_EVERY", 0.0)  # a line after every batch
    text = "a held-out text for the log. " * 6
    notes: list[str] = []
    r = perplexity(tiny_model, char_tok, text, window=16, batch_size=2, progress=None, log=notes.append)
    err = capsys.readouterr().err  # not a terminal: lines, no bar
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("perplexity: ") and "tok/s | ETA " in lines[0] and "%)" in lines[0]
    assert lines[-1].startswith(f"perplexity: {r['tokens_scored']} tokens in ")
    assert notes == ["window 16, stride 16 (the default: disjoint windows, each token scored once at one forward "
                     "position per token, as lm-eval's rolling log-likelihood; a token sees the tokens before it "
                     "in its window, 1 to 16 of context; --stride N < 16 gives at least 16 - N + 1 at 16/N the "
                     "cost); batch 2"]
    notes.clear()
    perplexity(tiny_model, char_tok, text, window=16, stride=4, progress=False, log=notes.append)
    assert "at least 13 tokens of context, at 4.00 forward positions per token" in notes[0]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("tile", [(256, 8192), (7, 50), (1000, 100000)])
def test_tiled_cross_entropy_equals_the_loss_with_gradients(monkeypatch, tile):
    """Without gradients our models' chunked loss tiles the logits with an online log-sum-exp
    (what makes held-out scoring fast); any tiling gives the loss of the autograd path."""
    import torch.nn.functional as F

    from substrate_lm.modeling import loss_substrate

    monkeypatch.setattr(loss_substrate, "CPU_TILE", tile)  # (1000, 100000): one tile, as on a GPU
    g = torch.Generator().manual_seed(0)
    w, h = torch.randn(300, 16, generator=g), torch.randn(90, 16, generator=g) * 3
    y = torch.randint(0, 300, (90,), generator=g)
    y[::4] = -100
    ref = F.cross_entropy(h @ w.t(), y)
    with torch.inference_mode():
        tiled = loss_substrate.chunked_cross_entropy(h, w, y, 32)
    grad = loss_substrate.chunked_cross_entropy(h.requires_grad_(), w, y, 32)
    assert grad.requires_grad and tiled.item() == pytest.approx(ref.item(), rel=1e-6)
    assert tiled.item() == pytest.approx(grad.item(), rel=1e-6)
    with torch.no_grad():  # every target ignored: 0, not NaN
        assert loss_substrate.chunked_cross_entropy(h, w, torch.full_like(y, -100)).item() == 0.0
