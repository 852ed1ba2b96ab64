"""bvv241 Unicode tokenizers: the exact published bvv241-2-3, the same construction for any corpus,
loading, fast corpus encoding and inspection.

In a bvv241 vocabulary every single character of plane 0 has its code point as its id ('A' is 65),
special tokens start at 0xE000 (``<pad>`` 57344, ``<s>`` 57345, ``</s>`` 57346, ``<unk>`` 57347) and
frequent n-grams fill the ids no character can use. ``encode`` adds no special tokens (as published);
``decode(encode(text)) == text`` for every text the vocabulary holds. Layout details:
:mod:`~substrate_lm.tokenizer.layout`; unknown characters: :mod:`~substrate_lm.tokenizer.encode`.

transformers is imported only when a tokenizer is built or loaded.
"""

from .build import (
    VocabPlan,
    build_from_corpus,
    build_from_ngram_file,
    build_from_stats,
    plan_vocabulary,
    save_tokenizer,
    select_ngrams,
    tokenizer_from_plan,
)
from .corpus import iter_corpus
from .encode import encode_corpus, sanitize_text, unk_report, unknown_characters
from .identity import check_same_tokenizer, tokenizer_fingerprint
from .inspect import detect_layout, token_table, tokenizer_summary, vocab_strings
from .layout import BVV241_2_3, BVV241_MAX, LAYOUTS, PUBLISHED_SPECIAL_TOKENS, VocabLayout, get_layout
from .load import load_tokenizer
from .ngram_file import parse_ngram_text, read_ngram_file, validate_stats, write_ngram_file
from .stats import CJK_LANGS, LANGUAGE_NAMES, NgramCounter, ngram_stats_from_pairs, ngram_stats_from_texts

__all__ = [
    "BVV241_2_3",
    "BVV241_MAX",
    "CJK_LANGS",
    "LANGUAGE_NAMES",
    "LAYOUTS",
    "NgramCounter",
    "PUBLISHED_SPECIAL_TOKENS",
    "VocabLayout",
    "VocabPlan",
    "build_from_corpus",
    "build_from_ngram_file",
    "build_from_stats",
    "check_same_tokenizer",
    "detect_layout",
    "encode_corpus",
    "get_layout",
    "iter_corpus",
    "load_tokenizer",
    "ngram_stats_from_pairs",
    "ngram_stats_from_texts",
    "parse_ngram_text",
    "plan_vocabulary",
    "read_ngram_file",
    "sanitize_text",
    "save_tokenizer",
    "select_ngrams",
    "token_table",
    "tokenizer_fingerprint",
    "tokenizer_from_plan",
    "tokenizer_summary",
    "unk_report",
    "unknown_characters",
    "validate_stats",
    "vocab_strings",
    "write_ngram_file",
]
