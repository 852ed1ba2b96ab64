"""Text is text in evaluation: a literal ``</s>``, ``<s>`` or ``[INST]`` in a prompt, an item or held-out
text is encoded as its characters, never as a control token (issue 13), and long held-out text does
not trigger the tokenizer's "longer than the maximum sequence length" warning (ppl slides windows)."""

from __future__ import annotations

import logging

import pytest

from eval_helpers import fixed_distribution_model, make_char_tokenizer

from substrate_lm.evaluation import generate_continuations
from substrate_lm.evaluation.loglik import encode_pair
from substrate_lm.evaluation.models import encode_text
from substrate_lm.evaluation.perplexity import perplexity

CONTROL = ["</s>", "<s>", "<pad>", "<unk>"]


def special_ids(tok) -> set[int]:
    return set(tok.all_special_ids)


def char_ids(tok, text: str) -> list[int]:
    ids = tok.convert_tokens_to_ids(list(text))
    assert tok.unk_token_id not in ids, "test text must use characters of the vocabulary"
    return ids


@pytest.fixture(scope="module")
def bvv_tok():
    """The bvv241 layout (a plane-0 character is its own id) built from tiny statistics."""
    from substrate_lm.tokenizer import build_from_stats

    return build_from_stats([{"lang": "en", "language_name": "English",
                              "top_ngrams": {2: [("th", 10), ("he", 5)], 3: [("the", 3)]}}])


def test_encode_text_keeps_control_strings_as_characters(char_tok):
    bos = char_tok.bos_token_id
    for c in CONTROL:
        text = f"a {c} b"
        assert special_ids(char_tok) & set(char_tok.encode(text)[1:]), c  # the default would match it
        assert encode_text(char_tok, text) == [bos] + char_ids(char_tok, text)  # the template's BOS stays
        assert encode_text(char_tok, text, add_special_tokens=False) == char_ids(char_tok, text)


def test_encode_text_with_the_bvv241_tokenizer(bvv_tok):
    for c in ["</s>", "<s>", "[INST]", "[/INST]", "<unk>", "<pad>"]:
        text = f"before {c} after"
        ids = encode_text(bvv_tok, text, add_special_tokens=False)
        assert not set(ids) & special_ids(bvv_tok), c
        assert bvv_tok.decode(ids) == text
    assert encode_text(bvv_tok, "a </s> b", add_special_tokens=False) == [ord(ch) for ch in "a </s> b"]
    assert bvv_tok.eos_token_id in bvv_tok.encode("a </s> b", add_special_tokens=False)  # default would


def test_loglik_pairs_encode_items_as_text(char_tok):
    ctx, cont = encode_pair(char_tok, "Question: what ends </s> a turn?\nAnswer:", " <s> begins")
    assert ctx[0] == char_tok.bos_token_id and not special_ids(char_tok) & set(ctx[1:] + cont)
    assert cont == char_ids(char_tok, " <s> begins")


def test_perplexity_scores_control_strings_as_text_without_a_length_warning(char_tok):
    text = "x </s> y <s> z <pad> " * 20
    tok = make_char_tokenizer()
    tok.model_max_length = 16  # far below the text: plain encode would warn
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    log = logging.getLogger("transformers.tokenization_utils_base")
    handler = Keep()
    log.addHandler(handler)
    try:
        model = fixed_distribution_model(tok, {}, default=0.0)  # uniform: every token costs log V
        r = perplexity(model, tok, text, window=32, progress=False)
        assert not [m for m in seen if "longer than the specified maximum" in m], seen
        probe = make_char_tokenizer()
        probe.model_max_length = 16
        probe.encode(text)  # the warning this test would see without encode_text
        assert [m for m in seen if "longer than the specified maximum" in m]
    finally:
        log.removeHandler(handler)
    assert r["tokens"] == len(text)  # one token per character: "</s>" is four tokens, not EOS
    assert r["perplexity"] == pytest.approx(len(tok), rel=1e-4)


def test_generation_prompts_with_control_strings(char_tok):
    """Prompt ids are the characters; the published decode-and-slice still returns the continuation."""
    model = fixed_distribution_model(char_tok, {"x": 10.0})
    seen: list[list[int]] = []
    generate = model.generate

    def spy(input_ids, **kw):
        seen.extend(input_ids.tolist())
        return generate(input_ids, **kw)

    model.generate = spy
    prompts = ["plain:", "say </s> or <s> now:", "[INST] <s><s> [/INST]"]
    out = generate_continuations(model, char_tok, prompts, 3, batch_size=3, greedy=True)
    assert out == ["xxx", "xxx", "xxx"]
    for row in seen:
        ids = [t for t in row if t != char_tok.pad_token_id]
        assert ids[0] == char_tok.bos_token_id and not special_ids(char_tok) & set(ids[1:]), row
    assert sorted(len([t for t in row if t != char_tok.pad_token_id]) for row in seen) == \
        sorted(len(p) + 1 for p in prompts)
    # one by one, as published, gives the same
    assert generate_continuations(model, char_tok, prompts, 3, batch_size=1, greedy=True) == out
