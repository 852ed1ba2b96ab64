"""Shared fixtures of the substrate tests: bvv241-like vocabularies built without a tokenizer."""

from __future__ import annotations

import os

import pytest

# the 23 published special tokens of bvv241 (ids 0xE000..)
SPECIALS = (
    "<pad>", "<s>", "</s>", "<unk>", "<think>", "</think>", "<emotions>", "</emotions>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "[INST]", "[/INST]",
    "[EOT]", "[USER]", "[ASSISTANT]", "[FIM_PREFIX]", "[FIM_MIDDLE]", "[FIM_SUFFIX]", "[FIM_PAD]",
    "[REPO_NAME]", "[FILE_SEP]",
)

# a few thousand 2- and 3-grams over Latin, Cyrillic, Greek, CJK, Hebrew and Thai letters
_ALPHABETS = (
    "abcdefghijklmnopqrstuvwxyz",
    "абвгдежзийклмнопрстуфхцчшщыэюя",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "אבגדהוזחטיכלמנסעפצקרשת",
    "กขคงจฉชซญดตถทนบปผพฟมยรลวศสหอ",
)


def bvv_like_ngrams() -> list[str]:
    grams = set()
    for alpha in _ALPHABETS:
        for i, a in enumerate(alpha):
            for j, b in enumerate(alpha[: min(len(alpha), 24)]):
                grams.add(a + b)
                if (i + j) % 3 != 1:
                    grams.add(a + b + alpha[(i * 7 + j) % len(alpha)])
    return sorted(grams, key=lambda g: (-len(g), g))


def bvv_like_vocab() -> list[str]:
    """65,536 id-ordered strings laid out like bvv241-2-3 (id == code point for monograms)."""
    tokens: list[str | None] = [None] * 65536
    for i in list(range(0, 0xD800)) + list(range(0xF900, 0xFFFF)):
        tokens[i] = chr(i)
    for k, i in enumerate(range(0xE000, 0xE100)):
        tokens[i] = SPECIALS[k] if k < len(SPECIALS) else f"<special_token_{i}>"
    slots = list(range(0xD800, 0xE000)) + list(range(0xE100, 0xF900))
    for i, g in zip(slots, bvv_like_ngrams()):
        tokens[i] = g
    return [t if t is not None else f"<unused_{i}>" for i, t in enumerate(tokens)]


def unifont_otf() -> str | None:
    path = "/usr/share/fonts/opentype/unifont/unifont.otf"
    return path if os.path.isfile(path) else None


def unifont_hex() -> str | None:
    path = "/usr/share/unifont/unifont.hex"
    return path if os.path.isfile(path) else None


@pytest.fixture(scope="session")
def bvv_vocab() -> list[str]:
    return bvv_like_vocab()


@pytest.fixture(scope="session")
def otf_font() -> str:
    path = unifont_otf()
    if path is None:
        pytest.skip("GNU Unifont OTF missing: apt-get install -y fonts-unifont")
    pytest.importorskip("PIL", reason="Pillow (the optional glyph extra) is not installed")
    return path


@pytest.fixture(scope="session")
def hex_font() -> str:
    path = unifont_hex()
    if path is None:
        pytest.skip("GNU Unifont hex missing: apt-get install -y unifont")
    return path
