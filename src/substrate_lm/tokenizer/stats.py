"""N-gram statistics from raw text, per language, in the published statistics format.

Follows the published extraction (``_n-gramms-from-wiki.ipynb``), generalised to every script:

* curly quotes are normalised to ASCII ``'`` and ``"`` and digits are dropped (removed from the
  text first, which is why the published Chinese list holds ``年月日`` from ``2020年1月1日``);
* CJK languages (``zh``, ``ja``, ``ko`` by default): character n-grams over the text with all
  whitespace removed (punctuation kept, as in the published ``'也。'``);
* every other language: character n-grams inside words, a word being a run of letters and
  combining marks (``[\\p{L}\\p{M}]``) with inner apostrophes. The published regex listed Latin and
  Cyrillic ranges only; letters and marks of every script are used here so that Armenian, Hindi or
  Georgian corpora give their own n-grams (the published lists for those contain them too).

Counts are ranked by descending count, ties by the n-gram string, and the top ``top_k`` per length
are kept. Counting runs at C speed (see :class:`NgramCounter`).
"""

from __future__ import annotations

import heapq
import operator
from collections import Counter
from typing import Iterable, Mapping

from .ngram_file import Stats, validate_stats

#: Languages whose n-grams run over characters (whitespace removed) instead of inside words.
CJK_LANGS = frozenset({"zh", "ja", "ko", "yue", "wuu", "lzh", "gan", "hak", "cdo", "nan"})

#: English names of the 32 languages of the published statistics (others default to their code).
LANGUAGE_NAMES = {
    "en": "English", "ru": "Russian", "fr": "French", "de": "German", "zh": "Chinese",
    "he": "Hebrew", "it": "Italian", "es": "Spanish", "ar": "Arabic", "pt": "Portuguese",
    "ko": "Korean", "hu": "Hungarian", "sa": "Sanskrit", "la": "Latin", "ja": "Japanese",
    "el": "Greek", "sv": "Swedish", "nl": "Dutch", "pl": "Polish", "vi": "Vietnamese",
    "fa": "Persian", "no": "Norwegian", "tr": "Turkish", "fi": "Finnish", "cs": "Czech",
    "hy": "Armenian", "da": "Danish", "bn": "Bangla", "az": "Azerbaijani", "ka": "Georgian",
    "hi": "Hindi", "id": "Indonesian",
}

_QUOTES = (
    ("\u2018", "'"), ("\u2019", "'"), ("\u201a", "'"), ("\u201b", "'"), ("\u2032", "'"),
    ("\u201c", '"'), ("\u201d", '"'), ("\u201e", '"'), ("\u201f", '"'), ("\u2033", '"'),
)

_PATTERNS: dict[str, object] = {}


def _pattern(name: str):
    # `regex` (a hard dependency of transformers) knows \p{L}/\p{M}; compiled once, lazily.
    if name not in _PATTERNS:
        import regex

        _PATTERNS["digits"] = regex.compile(r"\d+")
        _PATTERNS["cjk_drop"] = regex.compile(r"[\s\d]+")
        _PATTERNS["word"] = regex.compile(r"[\p{L}\p{M}]+(?:'[\p{L}\p{M}]+)*")
    return _PATTERNS[name]


def is_cjk(lang: str, cjk_langs: Iterable[str] = CJK_LANGS) -> bool:
    """Whether ``lang`` (e.g. ``zh`` or ``zh-Hant``) counts n-grams over characters."""
    return lang in cjk_langs or lang.split("-")[0].split("_")[0] in cjk_langs


def normalize_text(text: str) -> str:
    """Curly quotes to ASCII quotes (applied before counting)."""
    # str.replace is a fast C scan when the character is absent; translate() with a dict is not.
    for curly, plain in _QUOTES:
        if curly in text:
            text = text.replace(curly, plain)
    return text


def _count(counter: Counter, s: str, n: int) -> None:
    # map/zip/join run in C and Counter.update counts an iterable in C: no Python loop per n-gram.
    if n == 1:
        counter.update(s)
    elif n == 2:
        counter.update(map(operator.add, s, s[1:]))
    else:
        counter.update(map("".join, zip(*[s[i:] for i in range(n)])))


class NgramCounter:
    """Streaming n-gram counts of one language.

    Words are joined with a space (which no word contains), every n-gram of the joined text is
    counted, and n-grams containing the space are dropped when ranking: the survivors are exactly
    the n-grams inside words, counted at C speed.

    Args:
        lang: Language code.
        ns: N-gram lengths.
        cjk: Count over characters (CJK) instead of inside words; default from the language code.
    """

    def __init__(self, lang: str, ns: Iterable[int] = (2, 3), cjk: bool | None = None) -> None:
        self.lang = lang
        self.ns = tuple(sorted(set(int(n) for n in ns)))
        if not self.ns or self.ns[0] < 1:
            raise ValueError("n-gram lengths must be positive")
        self.cjk = is_cjk(lang) if cjk is None else cjk
        self.documents = 0
        self._grams: dict[int, Counter[str]] = {n: Counter() for n in self.ns}

    def add(self, text: str) -> None:
        """Count one document."""
        self.documents += 1
        text = normalize_text(text)
        if self.cjk:
            s = _pattern("cjk_drop").sub("", text)
        else:
            s = " ".join(_pattern("word").findall(_pattern("digits").sub("", text)))
        for n in self.ns:
            _count(self._grams[n], s, n)

    def counts(self, n: int) -> dict[str, int]:
        """All counts of length ``n``."""
        grams = self._grams[n]
        if self.cjk:
            return dict(grams)
        return {g: c for g, c in grams.items() if " " not in g}

    def top(self, top_k: int) -> dict[int, list[tuple[str, int]]]:
        """The ``top_k`` most frequent n-grams per length: ``{n: [(gram, count), ...]}``."""
        out = {}
        for n in self.ns:
            items = self._grams[n].items()
            if not self.cjk:
                items = ((g, c) for g, c in items if " " not in g)
            out[n] = heapq.nsmallest(top_k, items, key=lambda kv: (-kv[1], kv[0]))
        return out


def ngram_stats_from_pairs(
    pairs: Iterable[tuple[str, str]],
    ns: Iterable[int] = (2, 3),
    top_k: int = 338,
    cjk_langs: Iterable[str] = CJK_LANGS,
    language_names: Mapping[str, str] | None = None,
    langs: Iterable[str] | None = None,
) -> Stats:
    """Statistics from a stream of ``(lang, text)`` pairs (one pass, bounded by distinct n-grams).

    Args:
        pairs: ``(language code, document text)``.
        ns: N-gram lengths.
        top_k: N-grams kept per length and language.
        cjk_langs: Languages counted over characters.
        language_names: Display names; defaults to :data:`LANGUAGE_NAMES`, then the code.
        langs: Output order and the languages to include (others are ignored); default: order of
            first appearance.

    Returns:
        Statistics in the published format, one entry per language.
    """
    cjk_set = frozenset(cjk_langs)
    wanted = list(dict.fromkeys(langs)) if langs is not None else None
    counters: dict[str, NgramCounter] = {}
    if wanted is not None:
        for lang in wanted:
            counters[lang] = NgramCounter(lang, ns, cjk=is_cjk(lang, cjk_set))
    for lang, text in pairs:
        counter = counters.get(lang)
        if counter is None:
            if wanted is not None:
                continue
            counter = counters[lang] = NgramCounter(lang, ns, cjk=is_cjk(lang, cjk_set))
        counter.add(text)
    names = {**LANGUAGE_NAMES, **(language_names or {})}
    stats = [
        {"lang": lang, "language_name": names.get(lang, lang), "top_ngrams": c.top(top_k)}
        for lang, c in counters.items()
    ]
    return validate_stats(stats, "<computed>")


def ngram_stats_from_texts(
    texts_by_lang: Mapping[str, Iterable[str]],
    ns: Iterable[int] = (2, 3),
    top_k: int = 338,
    cjk_langs: Iterable[str] = CJK_LANGS,
    language_names: Mapping[str, str] | None = None,
) -> Stats:
    """Statistics per language from ``{"en": texts, "ru": texts, ...}``.

    Args:
        texts_by_lang: Language code -> iterable of document texts.
        ns: N-gram lengths.
        top_k: N-grams kept per length and language.
        cjk_langs: Languages counted over characters.
        language_names: Display names; defaults to :data:`LANGUAGE_NAMES`, then the code.

    Returns:
        Statistics in the published format (``read_ngram_file`` / ``write_ngram_file``).
    """
    def pairs():
        for lang, texts in texts_by_lang.items():
            # A bare string is one document, not an iterable of one-character documents.
            for text in [texts] if isinstance(texts, str) else texts:
                yield lang, text

    return ngram_stats_from_pairs(
        pairs(), ns=ns, top_k=top_k, cjk_langs=cjk_langs, language_names=language_names, langs=list(texts_by_lang)
    )
