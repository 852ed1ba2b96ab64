"""Registry of the languages the world can be written in (one template module each)."""

from __future__ import annotations

from types import ModuleType

from ..errors import SubstrateError
from . import lang_en, lang_ru, lang_zh

LANGUAGES: dict[str, ModuleType] = {"en": lang_en, "ru": lang_ru, "zh": lang_zh}


def get_lang(code: str) -> ModuleType:
    """The template module of language ``code``.

    Raises:
        SubstrateError: for a language without templates.
    """
    try:
        return LANGUAGES[code]
    except KeyError:
        raise SubstrateError(
            f"the semantic world has no templates for language {code!r}; use some of {', '.join(LANGUAGES)}"
        ) from None


def parse_langs(langs) -> tuple[str, ...]:
    """``"en,ru"`` or ``["en", "ru"]`` -> ``("en", "ru")``, validated, duplicates removed, order kept."""
    if isinstance(langs, str):
        langs = [s for s in (p.strip() for p in langs.split(",")) if s]
    out: list[str] = []
    for code in langs:
        get_lang(code)
        if code not in out:
            out.append(code)
    if not out:
        raise SubstrateError("no language given; pass e.g. --langs en,ru,zh")
    return tuple(out)
