"""Vocabulary layouts as parameters: the published ones, the max variant, validation."""

from __future__ import annotations

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import BVV241_2_3, BVV241_MAX, VocabLayout, build_from_stats, get_layout, vocab_strings


def test_published_layout_facts():
    lay = BVV241_2_3
    assert lay.vocab_size == 65536
    assert (lay.pad_id, lay.bos_id, lay.eos_id, lay.unk_id) == (57344, 57345, 57346, 57347)
    assert lay.ngram_capacity == 2048 + 6144 == 8192
    assert lay.ngram_slots()[:2] == [0xD800, 0xD801] and lay.ngram_slots()[2048] == 0xE100
    assert lay.holds_char("A") and lay.holds_char("\uf900") and lay.holds_char("\x00")
    assert not any(lay.holds_char(c) for c in ("\ue000", "\uf8ff", "\uffff", "\U0001F600", "\ud800"))
    assert [lay.kind_of(i) for i in (65, 0xE000, 0xE017, 0xD800, 0xFFFF)] == [
        "monogram", "special", "reserved", "ngram", "unused"
    ]
    assert lay.kind_of(0xF8FF, "<unused_63743>") == "unused"
    assert get_layout("bvv241-max") is BVV241_MAX
    with pytest.raises(SubstrateError, match="unknown tokenizer layout"):
        get_layout("bvv999")


def test_max_layout_doubles_into_plane_1(small_stats):
    assert BVV241_MAX.vocab_size == 2 * BVV241_2_3.vocab_size
    assert BVV241_MAX.ngram_capacity == 8192 + 0xFFFF
    small_stats[0]["top_ngrams"][4] = [("then", 3)]
    small_stats[0]["top_ngrams"][5] = [("thing", 2)]
    tok = build_from_stats(small_stats, layout=BVV241_MAX)
    assert tok.vocab_size == 131072 == len(vocab_strings(tok))
    assert tok.encode("A") == [65] and tok.convert_tokens_to_ids("<unk>") == 57347
    strings = vocab_strings(tok)
    assert strings[0xD800:0xD802] == ["thing", "then"]  # longest first
    assert tok.encode("thing then") == [0xD800, 32, 0xD801]
    assert strings[0x10000] == "<unused_65536>" and strings[0x1FFFF] == "<unused_131071>"
    # Plane-1 characters still have no id of their own: their ids hold n-grams.
    assert tok.encode("\U0001F600") == [57347]


def test_max_layout_fills_plane_1_after_plane_0():
    grams = [f"{a}{b}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
    grams += [f"{a}{b}{c}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "aeiou" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
    stats = [{"lang": "xx", "top_ngrams": {2: [(g, 1) for g in grams if len(g) == 2], 3: [(g, 1) for g in grams if len(g) == 3]}}]
    assert len(grams) > 8192
    tok = build_from_stats(stats, layout=BVV241_MAX, top_k=10000)
    strings = vocab_strings(tok)
    ordered = sorted(grams, key=lambda s: (-len(s), s))
    assert strings[0xD800] == ordered[0] and strings[0xE100] == ordered[2048]
    assert strings[0x10000] == ordered[8192] and strings[0x10000 + len(grams) - 8193] == ordered[-1]
    assert tok.encode(ordered[-1]) == [0x10000 + len(grams) - 8193]


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"ngram_ranges": ((0xD800, 0xE000),)}, "overlap"),
        ({"monogram_ranges": ((0, 0xD800),)}, "overlap"),
        ({"vocab_size": 0xF000}, "outside"),
        ({"monogram_ranges": ((0, 0xD7FF), (0xDC00, 0xDC01))}, "overlap"),
        ({"special_tokens": ("<pad>", "<s>", "</s>")}, "'<unk>' is not among"),
        ({"special_range": (0xE000, 0xE001)}, "at most 2 distinct special tokens"),
        ({"ns": (1, 2)}, "lengths must be >= 2"),
        ({"top_k": 0}, "top_k >= 1"),
    ],
)
def test_layout_validation(changes, fragment):
    with pytest.raises(SubstrateError, match=fragment):
        BVV241_2_3.with_options(**changes)


def test_surrogate_monograms_refused():
    with pytest.raises(SubstrateError, match="avoid surrogates"):
        VocabLayout("x", 0x10000, ((0, 0xDFFF),), (0xE000, 0xE0FF), ((0xE100, 0xE1FF),))


def test_custom_small_layout(small_stats):
    # A toy layout: ASCII monograms, 16 specials, 32 n-gram ids -> a 256-entry vocabulary.
    lay = VocabLayout(
        "toy", 256, ((0, 0x7F),), (0x80, 0x9F), ((0xA0, 0xBF),),
        special_tokens=("<pad>", "<s>", "</s>", "<unk>"),
    )
    tok = build_from_stats([small_stats[0]], layout=lay)
    assert tok.vocab_size == 256 and tok.unk_token_id == 0x83
    assert tok.encode("the é") == [tok.convert_tokens_to_ids("the"), 32, 0x83]
    assert 0xA0 <= tok.convert_tokens_to_ids("the") <= 0xBF
    assert tok.decode(tok.encode("there")) == "there"
