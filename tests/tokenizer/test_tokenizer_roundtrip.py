"""decode(encode(text)) == text for everything the vocabulary holds; defined behaviour for the rest."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import (
    BVV241_2_3, encode_corpus, load_tokenizer, sanitize_text, unk_report, unknown_characters, vocab_strings
)

UNK = 57347

# Script blocks to draw from (all inside the monogram ranges).
BLOCKS = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x52F), (0x530, 0x58F), (0x590, 0x5FF),
    (0x600, 0x6FF), (0x900, 0x97F), (0x980, 0x9FF), (0xE00, 0xE7F), (0x10A0, 0x10FF), (0x3040, 0x30FF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x0, 0x1F), (0x2000, 0x206F),
]
script_char = st.one_of(*[st.integers(lo, hi).map(chr) for lo, hi in BLOCKS])
# Any plane-0 character with an id: everything but surrogates, private use and U+FFFF.
any_held_char = st.characters(max_codepoint=0xFFFE, exclude_categories=("Cs", "Co"))
settings_ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def ngram_alphabet(published_tok):
    strings = vocab_strings(published_tok)
    return [strings[i] for i in BVV241_2_3.ngram_slots()[:8177]]


@settings_
@given(text=st.text(alphabet=st.one_of(script_char, any_held_char), max_size=200))
def test_roundtrip_plane0(published_tok, text):
    assert all(BVV241_2_3.holds_char(c) for c in text)
    ids = published_tok.encode(text)
    assert UNK not in ids or "<unk>" in text
    assert published_tok.decode(ids) == text
    assert published_tok.backend_tokenizer.decode(ids, skip_special_tokens=False) == text


@settings_
@given(data=st.data())
def test_roundtrip_ngram_text(published_tok, ngram_alphabet, data):
    # Text glued from real n-grams exercises the merges; separators from many scripts.
    parts = data.draw(st.lists(st.one_of(st.sampled_from(ngram_alphabet), script_char), max_size=60))
    text = "".join(parts)
    ids = published_tok.encode(text)
    assert published_tok.decode(ids) == text
    assert len(ids) <= len(text)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=script_char, max_size=80))
def test_saved_roundtrip_matches(reloaded_tok, published_tok, text):
    assert reloaded_tok.encode(text) == published_tok.encode(text)
    assert reloaded_tok.decode(reloaded_tok.encode(text)) == text


@pytest.fixture(scope="module")
def reloaded_tok(published_dir):
    return load_tokenizer(published_dir)


@pytest.mark.parametrize(
    "ch",
    ["\U0001F600", "\U00020000", "\U0010FFFF", "\ue000", "\uf8ff", "\uffff"],
    ids=["emoji", "cjk-ext-b", "max-codepoint", "private-use-first", "private-use-last", "uffff"],
)
def test_characters_without_id_become_one_unk_each(published_tok, ch):
    assert not BVV241_2_3.holds_char(ch)
    assert published_tok.encode(ch) == [UNK]
    assert published_tok.encode(f"a{ch}{ch}b") == [97, UNK, UNK, 98]
    assert published_tok.decode(published_tok.encode(f"a{ch}b"), skip_special_tokens=True) == "ab"
    assert published_tok.decode(published_tok.encode(f"a{ch}b")) == "a<unk>b"


def test_controls_are_held(published_tok):
    text = "\x00a\x01\x1b[0m\x7f\x85\u200b\ufeff"
    ids = published_tok.encode(text)
    assert UNK not in ids and ids[0] == 0
    assert published_tok.decode(ids) == text


def test_lone_surrogates(published_tok):
    # The Rust tokenizer rejects them outright; our helpers map each one to <unk>, never to the
    # n-gram that happens to sit at the surrogate's code point.
    with pytest.raises(TypeError):
        published_tok.backend_tokenizer.encode("a\ud800b")
    texts = ["a\ud800b", "\udfff", "ok", "x\ud83d\ude00y\ud83d"]
    out = list(encode_corpus(published_tok, texts, batch_size=3))
    assert out[0] == [97, UNK, 98]
    assert out[1] == [UNK]
    assert out[2] == published_tok.encode("ok")
    assert out[3] == [120, UNK, UNK, 121, UNK]
    assert all(0xD800 not in ids for ids in out)
    assert published_tok.encode(sanitize_text("a\ud800b")) == [97, UNK, 98]
    report = unk_report(published_tok, texts)
    assert report["unk_tokens"] == 5
    assert {u["char"]: u["count"] for u in report["unknown_chars"]} == {
        "\ud800": 1, "\udfff": 1, "\ud83d": 2, "\ude00": 1
    }


def test_unk_report(published_tok):
    texts = ["hello 😀 world", "plain text", "\ue000\ue000 and \uffff", ""]
    report = unk_report(published_tok, texts, batch_size=2)
    all_ids = [published_tok.encode(t) for t in texts]
    tokens = sum(map(len, all_ids))
    assert report["documents"] == 4
    assert report["characters"] == sum(map(len, texts))
    assert report["tokens"] == tokens
    assert report["unk_tokens"] == 4 == sum(x.count(UNK) for x in all_ids)
    assert report["unk_share"] == pytest.approx(4 / tokens)
    assert report["unknown_chars"][0] == {"char": "\ue000", "codepoint": "U+E000", "count": 2}
    assert {u["char"] for u in report["unknown_chars"]} == {"\ue000", "\U0001F600", "\uffff"}
    # The character-level view agrees with the token-level one for bvv241.
    assert sum(sum(unknown_characters(t).values()) for t in texts) == 4
    assert unk_report(published_tok, [])["unk_share"] == 0.0
    # The bare tokenizers object (what the data pipeline holds) gives the same report.
    assert unk_report(published_tok.backend_tokenizer, texts, batch_size=2) == report


def test_encode_corpus_matches_single_calls(published_tok):
    texts = [f"document {i}: the quick brown fox, быстрая лиса, 狐狸 {i * 7}" for i in range(37)]
    expected = [published_tok.encode(t) for t in texts]
    for batch_size in (1, 5, 64):
        assert list(encode_corpus(published_tok, iter(texts), batch_size=batch_size)) == expected
    # The bare tokenizers object works too.
    assert list(encode_corpus(published_tok.backend_tokenizer, texts)) == expected


def test_encode_corpus_rejects_non_strings(published_tok):
    with pytest.raises(SubstrateError, match=r"text #2 is a int"):
        list(encode_corpus(published_tok, ["a", "b", 3], batch_size=10))
    with pytest.raises(SubstrateError, match="batch_size"):
        list(encode_corpus(published_tok, ["a"], batch_size=0))
