"""The exact bvv241-2-3 tokenizer built from the published statistics file."""

from __future__ import annotations

import json

import pytest

from substrate_lm.tokenizer import (
    BVV241_2_3, PUBLISHED_SPECIAL_TOKENS, detect_layout, load_tokenizer, plan_vocabulary, select_ngrams,
    tokenizer_summary, vocab_strings
)

# One character per script: Latin, Latin-1, Greek, Cyrillic, Armenian, Hebrew, Arabic, Devanagari,
# Bengali, Thai, Georgian, Hangul Jamo, CJK punctuation, Hiragana, Katakana, CJK ideograph,
# Hangul syllable, CJK compatibility ideograph, fullwidth forms, specials block, NUL, controls.
SCRIPT_CHARS = "Aé\u03b1\u0436\u0561\u05d0\u0627\u0915\u0995\u0e01\u10d0\u1100\u3001\u3042\u30a2\u4e00\u9fa5\uac00\ud7a3\uf900\uff01\ufffd\ufffe\x00\x1f\x7f\x85"


def test_counts(published_stats):
    ngrams, dropped = select_ngrams(published_stats, BVV241_2_3)
    plan = plan_vocabulary(ngrams, BVV241_2_3, dropped)
    assert len(plan.tokens) == 65536
    assert len(ngrams) == 8177
    assert len(plan.merges) == 12224
    assert dropped == {}
    assert len({lang["lang"] for lang in published_stats}) == 32


def test_built_tokenizer_counts(published_tok):
    data = json.loads(published_tok.backend_tokenizer.to_str())
    assert len(data["model"]["vocab"]) == 65536
    assert len(data["model"]["merges"]) == 12224
    assert data["pre_tokenizer"] is None and data["normalizer"] is None
    assert published_tok.vocab_size == 65536 and len(published_tok) == 65536


def test_published_example(published_tok):
    ids = published_tok.encode("hello the test")
    assert ids == [104, 56035, 111, 32, 57811, 32, 116, 56117]
    assert published_tok.decode(ids) == "hello the test"
    assert published_tok.convert_ids_to_tokens(ids) == ["h", "ell", "o", " ", "the", " ", "t", "est"]


def test_monogram_ids_are_code_points(published_tok):
    for ch in SCRIPT_CHARS:
        assert published_tok.encode(ch, add_special_tokens=False) == [ord(ch)], hex(ord(ch))
    assert published_tok.encode("A", add_special_tokens=False) == [65]
    strings = vocab_strings(published_tok)
    # Every id of both monogram ranges holds its own character, across the whole range.
    assert all(strings[i] == chr(i) for i in BVV241_2_3.monogram_ids())
    assert sum(1 for _ in BVV241_2_3.monogram_ids()) == 0xD800 + (0xFFFF - 0xF900)


def test_special_tokens(published_tok):
    assert published_tok.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>"]) == [57344, 57345, 57346, 57347]
    assert (published_tok.pad_token_id, published_tok.bos_token_id) == (57344, 57345)
    assert (published_tok.eos_token_id, published_tok.unk_token_id) == (57346, 57347)
    strings = vocab_strings(published_tok)
    assert strings[0xE000 : 0xE000 + 23] == list(PUBLISHED_SPECIAL_TOKENS)
    assert strings[0xE000 + 23] == "<special_token_57367>" and strings[0xE0FF] == "<special_token_57599>"
    assert strings[0xFFFF] == "<unused_65535>"
    # The 15 n-gram slots left over are the last ids before 0xF900.
    assert strings[0xF8FF - 14 : 0xF900] == [f"<unused_{i}>" for i in range(0xF8FF - 14, 0xF900)]
    assert strings[0xF8FF - 15] not in ("", f"<unused_{0xF8FF - 15}>")
    # Special tokens in text are matched whole; encode adds no <s> by default (published behaviour).
    assert published_tok.encode("<s>x</s>") == [57345, 120, 57346]
    assert published_tok("x").input_ids == [120]


def test_ngram_order_and_reachability(published_tok):
    strings = vocab_strings(published_tok)
    slots = BVV241_2_3.ngram_slots()[:8177]
    grams = [strings[i] for i in slots]
    assert grams == sorted(grams, key=lambda s: (-len(s), s))
    assert all(len(g) in (2, 3) for g in grams)
    data = json.loads(published_tok.backend_tokenizer.to_str())
    produced = {"".join(m) if isinstance(m, list) else m.replace(" ", "") for m in data["model"]["merges"]}
    backend = published_tok.backend_tokenizer
    for i, g in zip(slots, grams):
        ids = backend.encode(g, add_special_tokens=False).ids
        if g in produced:
            assert ids == [i], g  # every n-gram with a merge is one token
        else:
            assert len(ids) == len(g), g  # no split of it is in the vocabulary


def test_vocab_strings(published_tok):
    strings = vocab_strings(published_tok)
    assert len(strings) == 65536 and len(set(strings)) == 65536
    assert strings[65] == "A" and strings[57811] == "the" and strings[56035] == "ell"


def test_saved_dir_reloads_identically(published_tok, published_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    assert {p.name for p in published_dir.iterdir()} >= {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"
    }
    special = json.loads((published_dir / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    config = json.loads((published_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["clean_up_tokenization_spaces"] is False
    assert json.loads((published_dir / "tokenizer.json").read_text())["post_processor"] is None

    auto = AutoTokenizer.from_pretrained(str(published_dir), trust_remote_code=True)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(published_dir / "tokenizer.json"))
    ours = load_tokenizer(published_dir)
    texts = ["hello the test", "Привет, мир! Это тест.", "你好，世界。日本語のテキスト", "  a . b , c ! ",
             "emoji 😀 and \ue000 private", "<s>special</s> [INST] x [/INST]"]
    expected = [published_tok.encode(t) for t in texts]
    for tok in (auto, fast, ours):
        assert tok.vocab_size == 65536
        assert [tok.encode(t) for t in texts] == expected
        assert tok.encode("A", add_special_tokens=False) == [65]
        assert [tok.decode(e) for e in expected[:4]] == texts[:4]
    assert auto.unk_token == "<unk>" and auto.eos_token_id == 57346 and auto.pad_token_id == 57344


def test_layout_detection(published_tok, small_tok):
    assert detect_layout(published_tok) is BVV241_2_3
    summary = tokenizer_summary(published_tok, ["hello the test"])
    assert summary["ranges"] == {"monogram": 57087, "special": 23, "reserved": 233, "ngram": 8177, "unused": 16}
    assert summary["ngram_lengths"] == {2: 3348, 3: 4829}
    assert summary["merges"] == 12224
    assert summary["sample"]["tokens"] == 8 and summary["sample"]["unk_tokens"] == 0


@pytest.mark.parametrize("langs", [["en"], ["en", "ru", "zh"]])
def test_language_subset(published_stats, langs):
    ngrams, _ = select_ngrams(published_stats, BVV241_2_3, langs=langs)
    per_lang = {e["lang"]: e for e in published_stats}
    union = set()
    for lang in langs:
        for n in (2, 3):
            union.update(g for g, _ in per_lang[lang]["top_ngrams"][n][:338])
    assert set(ngrams) == union
