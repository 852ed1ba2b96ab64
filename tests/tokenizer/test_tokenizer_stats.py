"""N-gram statistics from text, corpus reading, and building a tokenizer for a corpus."""

from __future__ import annotations

import gzip
import json

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import (
    BVV241_2_3, build_from_corpus, build_from_ngram_file, build_from_stats, iter_corpus, ngram_stats_from_texts,
    read_ngram_file, select_ngrams, vocab_strings
)


def _top(stats, lang, n):
    return dict(next(e for e in stats if e["lang"] == lang)["top_ngrams"][n])


def test_words_digits_quotes():
    stats = ngram_stats_from_texts({"en": ["The cat’s hat 2024 the1cat", "the THE"]}, ns=(2, 3), top_k=100)
    (entry,) = stats
    assert entry["lang"] == "en" and entry["language_name"] == "English"
    bi, tri = _top(stats, "en", 2), _top(stats, "en", 3)
    # words: The, cat's, hat, thecat (digits dropped first), the, THE
    assert bi["th"] == 2 and bi["Th"] == 1 and bi["TH"] == 1
    assert tri["the"] == 2 and tri["t's"] == 1 and "’" not in "".join(bi)
    assert tri["eca"] == 1  # "the1cat" -> "thecat"
    assert not any(c.isdigit() or c == " " for g in list(bi) + list(tri) for c in g)
    assert "e c" not in tri and "t h" not in tri  # never across words


def test_other_scripts_keep_marks():
    stats = ngram_stats_from_texts({"hi": ["प्रदेश प्रदेश"], "ru": ["Привет, привет!"]}, ns=(2,), top_k=50)
    hi = _top(stats, "hi", 2)
    assert hi["प्"] == 2 and hi["्र"] == 2  # virama (a combining mark) stays inside the word
    assert _top(stats, "ru", 2)["ри"] == 2


def test_cjk_over_characters():
    stats = ngram_stats_from_texts({"zh": ["2020年1月1日，你好 世界。", "你好"]}, ns=(2, 3), top_k=100)
    bi, tri = _top(stats, "zh", 2), _top(stats, "zh", 3)
    assert tri["年月日"] == 1 and bi["你好"] == 2  # digits dropped, whitespace removed
    assert bi["好世"] == 1 and bi["日，"] == 1  # across the removed space; punctuation kept
    assert not any(c.isdigit() or c.isspace() for g in bi for c in g)


def test_ranking_and_top_k():
    stats = ngram_stats_from_texts({"en": ["ab ab ab cd cd ef ba"]}, ns=(2,), top_k=3)
    assert stats[0]["top_ngrams"][2] == [("ab", 3), ("cd", 2), ("ba", 1)]  # ties by string


def test_bare_string_is_one_document():
    assert ngram_stats_from_texts({"en": "hello"}, ns=(2,))[0]["top_ngrams"][2][0] == ("el", 1)


def test_stats_feed_the_builder():
    texts = {"en": ["the theme of the thesis"] * 3, "ru": ["теория тем"], "ja": ["東京都の東京駅"]}
    stats = ngram_stats_from_texts(texts, top_k=5)
    tok = build_from_stats(stats)
    assert tok.vocab_size == 65536
    assert tok.encode("the") == [tok.convert_tokens_to_ids("the")]
    assert tok.convert_tokens_to_ids("東京") >= 0xD800
    assert tok.decode(tok.encode("東京駅 theme")) == "東京駅 theme"


def test_build_from_stats_language_filter(small_stats):
    tok = build_from_stats(small_stats, langs=["ru"])
    strings = vocab_strings(tok)
    grams = [s for i, s in enumerate(strings) if BVV241_2_3.kind_of(i, s) == "ngram"]
    assert grams == ["ост", "he", "ст"]
    with pytest.raises(SubstrateError, match="no statistics for language"):
        build_from_stats(small_stats, langs=["fr"])


def test_overflow_names_the_top_k_that_fits(small_stats):
    layout = BVV241_2_3.with_options(ngram_ranges=((0xD800, 0xD803),))
    with pytest.raises(SubstrateError, match=r"10 n-grams do not fit the 4 n-gram ids.*--top-k 1 or fewer"):
        build_from_stats(small_stats, layout=layout)
    tok = build_from_stats(small_stats, layout=layout, top_k=1)
    assert vocab_strings(tok)[0xD800:0xD804] == ["the", "ост", "th", "ст"]


def test_filters(small_stats):
    small_stats[0]["top_ngrams"][2] += [("a\ue000", 1), ("😀x", 1), ("<s>", 1), ("<unused_5>", 1), ("x", 9)]
    small_stats[0]["top_ngrams"][3] = small_stats[0]["top_ngrams"][2]
    grams, dropped = select_ngrams(small_stats, top_k=100)
    assert dropped == {"too_short": 1, "unreachable_char": 2, "reserved_string": 2}
    assert "<s>" not in grams and "x" not in grams


# --- corpus reading -------------------------------------------------------------------------------


def _corpus(tmp_path):
    (tmp_path / "ru").mkdir(parents=True)
    (tmp_path / "ru" / "part1.txt").write_text("привет мир\n\nтеория\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("the theme\n", encoding="utf-8")
    rows = [{"text": "你好世界", "lang": "zh"}, {"text": "hello there", "lang": "en"}, {"text": "bonjour", "lang": "fr"}]
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "more.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "теория тем", "lang": "ru"}, ensure_ascii=False) + "\n")
    (tmp_path / ".hidden.txt").write_text("ignored\n", encoding="utf-8")
    (tmp_path / "notes.csv").write_text("ignored\n", encoding="utf-8")
    return tmp_path


def test_iter_corpus(tmp_path):
    root = _corpus(tmp_path)
    docs = list(iter_corpus([root], langs=["en", "ru", "zh"]))
    assert docs == [
        ("en", "the theme"),
        ("zh", "你好世界"),
        ("en", "hello there"),
        ("ru", "теория тем"),
        ("ru", "привет мир"),
        ("ru", "теория"),
    ]
    assert list(iter_corpus([root / "en.txt"], langs=["de"])) == [("de", "the theme")]  # only language
    assert [d[0] for d in iter_corpus([root / "mixed.jsonl"])] == ["zh", "en", "fr"]  # no langs: labels


def test_iter_corpus_errors(tmp_path):
    root = _corpus(tmp_path)
    with pytest.raises(SubstrateError, match=r"cannot tell the language of .*en.txt:1"):
        list(iter_corpus([root / "en.txt"]))
    with pytest.raises(SubstrateError, match="does not exist"):
        list(iter_corpus([tmp_path / "nope"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
    with pytest.raises(SubstrateError, match=r"bad.jsonl:2 is not valid JSON"):
        list(iter_corpus([bad], langs=["en"]))
    bad.write_text('{"txt": "a"}\n', encoding="utf-8")
    with pytest.raises(SubstrateError, match=r"needs a string \"text\" field"):
        list(iter_corpus([bad], langs=["en"]))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(SubstrateError, match="not UTF-8"):
        list(iter_corpus([latin], langs=["fr"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SubstrateError, match="holds no"):
        list(iter_corpus([empty], langs=["en"]))


def test_build_from_corpus(tmp_path):
    root = _corpus(tmp_path / "corpus")
    out = tmp_path / "ngrams.txt"
    tok = build_from_corpus([root], langs=["en", "ru", "zh"], top_k=3, stats_out=out)
    stats = read_ngram_file(out)
    assert [e["lang"] for e in stats] == ["en", "ru", "zh"]
    assert tok.vocab_size == 65536
    assert tok.encode("你好") == [tok.convert_tokens_to_ids("你好")]
    assert tok.decode(tok.encode("привет, 你好 the theme")) == "привет, 你好 the theme"
    # A build from the saved statistics gives the same vocabulary.
    assert vocab_strings(build_from_ngram_file(out, top_k=3)) == vocab_strings(tok)
    with pytest.raises(SubstrateError, match="gave no n-grams"):
        build_from_corpus([root / "mixed.jsonl"], langs=["ja"])
