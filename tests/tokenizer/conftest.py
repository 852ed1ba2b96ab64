"""Fixtures for the tokenizer tests: the published statistics (skipped when absent), the exact
bvv241-2-3 tokenizer built once per session, and a saved copy of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from substrate_lm.tokenizer import build_from_stats, read_ngram_file, save_tokenizer

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SUBSTRATE_LM_SHARED", REPO.parent / "shared"))
NGRAMS = SHARED / "data" / "bvv241" / "ngrams-2-3.txt"

# Small inline statistics in the published format (two languages, overlapping n-grams).
SMALL_STATS = [
    {
        "lang": "en",
        "language_name": "English",
        "top_ngrams": {
            2: [("th", 50), ("he", 40), ("in", 30), ("er", 20), ("an", 10)],
            3: [("the", 30), ("ing", 20), ("her", 5)],
        },
    },
    {
        "lang": "ru",
        "language_name": "Russian",
        "top_ngrams": {2: [("ст", 9), ("he", 8)], 3: [("ост", 7)]},
    },
]


@pytest.fixture(scope="session")
def ngrams_path() -> Path:
    if not NGRAMS.is_file():
        pytest.skip(f"published n-gram statistics {NGRAMS} are absent (they ship beside the repository, not in it)")
    return NGRAMS


@pytest.fixture(scope="session")
def published_stats(ngrams_path):
    return read_ngram_file(ngrams_path)


@pytest.fixture(scope="session")
def published_tok(published_stats):
    return build_from_stats(published_stats)


@pytest.fixture(scope="session")
def published_dir(published_tok, tmp_path_factory) -> Path:
    return save_tokenizer(published_tok, tmp_path_factory.mktemp("bvv241-2-3"))


@pytest.fixture(scope="session")
def small_tok():
    return build_from_stats(SMALL_STATS)


@pytest.fixture
def small_stats():
    import copy

    return copy.deepcopy(SMALL_STATS)
