"""Invented, pronounceable entity names, one per language script.

A name is a sequence of consonant-vowel syllables. The same sequence is written in Latin letters
(en), Cyrillic letters (ru) and one CJK transliteration character per syllable (zh), so an entity's
names correspond across languages but share no characters. Names carry no information about the
entity's category (they are drawn independently of it), so a random-code substrate row of a name
cannot predict the category: layer-0 probes sit at chance.

Russian: the last vowel is always o/e/i/u, so every name reads as an indeclinable foreign noun and
templates never need to inflect it. Chinese: the characters are transliteration characters chosen
so that no name character also serves as a content word in the zh templates.
"""

from __future__ import annotations

import numpy as np

CONSONANTS = ("b", "d", "g", "k", "l", "m", "n", "p", "s", "t", "v", "z")
VOWELS = ("a", "e", "i", "o", "u")
FINAL_VOWELS = ("o", "e", "i", "u")

_CYR_CONS = {"b": "б", "d": "д", "g": "г", "k": "к", "l": "л", "m": "м", "n": "н", "p": "п",
             "s": "с", "t": "т", "v": "в", "z": "з"}
_CYR_VOW = {"a": "а", "e": "е", "i": "и", "o": "о", "u": "у"}

# one character per syllable, consonant rows in CONSONANTS order, vowels a e i o u
_ZH_ROWS = {
    "b": "巴贝碧波布",
    "d": "达德迪铎杜",
    "g": "伽格吉戈咕",
    "k": "卡珂基科库",
    "l": "拉莱丽罗鲁",
    "m": "玛梅弥莫穆",
    "n": "纳涅尼诺努",
    "p": "帕佩皮珀普",
    "s": "萨塞斯索苏",
    "t": "泰忒蒂托图",
    "v": "瓦维薇沃伍",
    "z": "扎泽兹佐祖",
}
ZH_SYLLABLE = {c + v: _ZH_ROWS[c][i] for c in CONSONANTS for i, v in enumerate(VOWELS)}
assert len(set(ZH_SYLLABLE.values())) == len(ZH_SYLLABLE), "zh syllable characters must be distinct"

SCRIPTS = ("en", "ru", "zh")


def render_name(syllables: tuple[str, ...], lang: str) -> str:
    """Write a syllable sequence in the script of ``lang`` (en/ru capitalised, zh one char each)."""
    if lang == "zh":
        return "".join(ZH_SYLLABLE[s] for s in syllables)
    if lang == "ru":
        text = "".join(_CYR_CONS[s[0]] + _CYR_VOW[s[1]] for s in syllables)
    else:
        text = "".join(syllables)
    return text[0].upper() + text[1:]


def script_lang(lang: str) -> str:
    """The script a language's names use: Cyrillic for Cyrillic-script languages, CJK for zh/ja,
    Latin otherwise."""
    if lang in ("ru", "uk", "be", "bg", "sr", "mk", "kk"):
        return "ru"
    if lang in ("zh", "ja"):
        return "zh"
    return "en"


def make_names(n: int, rng: np.random.Generator, langs=SCRIPTS) -> list[dict[str, str]]:
    """Draw ``n`` distinct names, none a substring of another in any script.

    Args:
        n: how many names.
        rng: the world's generator (consumed deterministically).
        langs: languages to render (each maps to a script by :func:`script_lang`).

    Returns:
        ``n`` dicts ``{lang: name}``.
    """
    syl = [c + v for c in CONSONANTS for v in VOWELS]
    finals = [c + v for c in CONSONANTS for v in FINAL_VOWELS]
    chosen: list[tuple[str, ...]] = []
    rendered: dict[str, list[str]] = {s: [] for s in SCRIPTS}
    tries = 0
    while len(chosen) < n:
        tries += 1
        if tries > 200 * n + 1000:  # pragma: no cover - 12*5*... names are plentiful
            raise RuntimeError("could not draw enough distinct names")
        k = 2 if rng.random() < 0.6 else 3
        seq = tuple(syl[i] for i in rng.integers(len(syl), size=k - 1)) + (finals[rng.integers(len(finals))],)
        forms = {s: render_name(seq, s) for s in SCRIPTS}
        if any(_clashes(forms[s], rendered[s]) for s in SCRIPTS):
            continue
        chosen.append(seq)
        for s in SCRIPTS:
            rendered[s].append(forms[s])
    return [{lang: render_name(seq, script_lang(lang)) for lang in langs} for seq in chosen]


def _clashes(name: str, others: list[str]) -> bool:
    low = name.lower()
    return any(low in o.lower() or o.lower() in low for o in others)
