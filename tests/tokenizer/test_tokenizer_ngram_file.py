"""Reading and writing n-gram statistics files: formats, round trips, clear errors."""

from __future__ import annotations

import json

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import parse_ngram_text, read_ngram_file, validate_stats, write_ngram_file


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_write_read_roundtrip(tmp_path, small_stats, suffix):
    path = write_ngram_file(small_stats, tmp_path / f"stats{suffix}")
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        assert json.loads(text)[0]["top_ngrams"]["2"][0] == ["th", 50]
    else:
        assert text.startswith("[{'lang': 'en', 'language_name': 'English', 'top_ngrams': {2: [('th', 50)")
    assert read_ngram_file(path) == small_stats
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_tricky_strings_roundtrip(tmp_path):
    stats = [{"lang": "x", "language_name": "X", "top_ngrams": {2: [("'\"", 3), ("\\x", 2), ("\n\t", 1), ("😀好", 1)]}}]
    for name in ("a.txt", "a.json"):
        assert read_ngram_file(write_ngram_file(stats, tmp_path / name)) == stats


def test_json_keys_and_defaults():
    stats = parse_ngram_text('[{"lang": "de", "top_ngrams": {"2": [["er", 3]], "3": []}}]')
    assert stats == [{"lang": "de", "language_name": "de", "top_ngrams": {2: [("er", 3)], 3: []}}]


def test_published_file_roundtrip(published_stats, tmp_path):
    path = write_ngram_file(published_stats, tmp_path / "copy.txt")
    assert read_ngram_file(path) == published_stats


def _error(text: str) -> str:
    with pytest.raises(SubstrateError) as info:
        parse_ngram_text(text, "f.txt")
    message = str(info.value)
    assert "\n" not in message and message.startswith("n-gram file f.txt")
    return message


GOOD = "[{'lang': 'en', 'language_name': 'English', 'top_ngrams': {2: [('th', 5), ('he', 4)]}}]"


@pytest.mark.parametrize("cut", [1, 20, 60, len(GOOD) - 1])
def test_truncated(cut):
    assert "truncated" in _error(GOOD[:cut])


def test_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    msg = _error(f"[__import__('pathlib').Path({str(marker)!r}).touch()]")
    assert "other than literals" in msg and not marker.exists()
    assert "other than literals" in _error("[{'lang': 'en', 'top_ngrams': {2: [('a' * 3, 1)]}}]")
    assert "other than literals" in _error("[x for x in ()]")


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "is empty"),
        ("{'lang': 'en'}", "top level must be a list"),
        ("[1]", "entry 0 must be a dict"),
        ("[{'top_ngrams': {}}]", "needs a non-empty string 'lang'"),
        ("[{'lang': 'en', 'top_ngrams': []}]", "'top_ngrams' must be a dict"),
        ("[{'lang': 'en', 'language_name': 3, 'top_ngrams': {}}]", "'language_name' must be a string"),
        ("[{'lang': 'en', 'top_ngrams': {'two': []}}]", "key 'two' must be a positive integer"),
        ("[{'lang': 'en', 'top_ngrams': {0: []}}]", "key 0 must be a positive integer"),
        ("[{'lang': 'en', 'top_ngrams': {2: 'th'}}]", "top_ngrams[2] must be a list"),
        ("[{'lang': 'en', 'top_ngrams': {2: [('th', '5')]}}]", "top_ngrams[2][0] must be a (non-empty string"),
        ("[{'lang': 'en', 'top_ngrams': {2: [('th', 5, 1)]}}]", "top_ngrams[2][0]"),
        ("[{'lang': 'en', 'top_ngrams': {2: [('th', 5), ('', 1)]}}]", "top_ngrams[2][1]"),
        ("[{'lang': 'en', 'top_ngrams': {2: [('th', -1)]}}]", "count >= 0"),
        ("[{'lang': 'en', 'top_ngrams': {2: [('th', True)]}}]", "top_ngrams[2][0]"),
        ("[{'lang': 'en', 'top_ngrams': {2: [(5, 5)]}}]", "top_ngrams[2][0]"),
        ("[{'lang': 'en', 'top_ngrams': {}}, {'lang': 'en', 'top_ngrams': {}}]", "appears twice"),
    ],
)
def test_wrong_types(text, fragment):
    assert fragment in _error(text)


def test_deep_nesting_is_an_error_not_a_crash():
    msg = _error("[" * 100000 + "]" * 100000)
    assert "n-gram file f.txt" in msg


def test_file_errors(tmp_path):
    with pytest.raises(SubstrateError, match="does not exist"):
        read_ngram_file(tmp_path / "missing.txt")
    with pytest.raises(SubstrateError, match="is a folder"):
        read_ngram_file(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"[{'lang': '\xe9'}]")
    with pytest.raises(SubstrateError, match="not UTF-8"):
        read_ngram_file(bad)


def test_validate_normalises(small_stats):
    assert validate_stats(small_stats) == small_stats
    listy = [{"lang": "en", "top_ngrams": {"2": [["ab", 1]]}, "extra": 1}]
    assert validate_stats(listy) == [{"lang": "en", "language_name": "en", "top_ngrams": {2: [("ab", 1)]}}]
    with pytest.raises(SubstrateError, match="unknown n-gram file format"):
        write_ngram_file(small_stats, "x.txt", fmt="yaml")
