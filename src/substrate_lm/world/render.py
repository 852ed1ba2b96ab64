"""Fill templates with an entity's facts, in one language, with the character span of the name.

A template is a ``str.format`` string with the placeholders ``{name}``, ``{obj}``, ``{v}`` and
``{v_<form>}`` (see :mod:`.lang_en`). Rendering is plain string formatting; this module only
gathers the keyword arguments for a fact and locates the subject's name.
"""

from __future__ import annotations

import re
import string
from types import ModuleType

from .ontology import template_key

_FORMATTER = string.Formatter()


def value_kwargs(lang: ModuleType, attr: str, value: str) -> dict[str, str]:
    """``{"v": main form, "v_<form>": other forms}`` of ``value`` of ``attr`` (``isa``: a category)."""
    forms = lang.VALUES[attr][value]
    return {("v" if k == "" else f"v_{k}"): f for k, f in forms.items()}


def value_forms(lang: ModuleType, attr: str, value: str) -> list[str]:
    """Distinct surface forms of a value, main form first (case-insensitive de-duplication)."""
    forms = lang.VALUES[attr][value]
    out, seen = [], set()
    for key in [""] + [k for k in forms if k != ""]:
        f = forms[key]
        if f.lower() not in seen:
            seen.add(f.lower())
            out.append(f)
    return out


def placeholders(template: str) -> list[str]:
    """Field names of a template in order of appearance."""
    return [f for _, f, _, _ in _FORMATTER.parse(template) if f is not None]


def fixed_segments(template: str) -> list[str]:
    """The literal text pieces of a template (between and around its placeholders)."""
    return [lit for lit, _, _, _ in _FORMATTER.parse(template)]


def fill(template: str, name: str, **kw: str) -> tuple[str, int, int]:
    """Render ``template`` and return ``(text, start, end)`` of the first ``{name}``.

    Raises:
        ValueError: when the template has no ``{name}`` placeholder.
    """
    i = template.find("{name}")
    if i < 0:
        raise ValueError(f"template without {{name}}: {template!r}")
    start = len(template[:i].format(name=name, **kw))
    return template.format(name=name, **kw), start, start + len(name)


def fact_templates(table: dict, attr: str, category: str) -> list[str]:
    """Templates of ``attr`` for a subject of ``category`` in one of a language's tables."""
    return table[template_key(table, attr, category)]


def template_regex(template: str) -> re.Pattern:
    """A regex that matches a rendered template exactly; one named group per placeholder (a
    repeated placeholder must repeat the same text)."""
    parts, seen = [], set()
    for lit, field, _, _ in _FORMATTER.parse(template):
        parts.append(re.escape(lit))
        if field is None:
            continue
        if field in seen:
            parts.append(f"(?P={field})")
        else:
            seen.add(field)
            parts.append(f"(?P<{field}>.+?)")
    return re.compile("".join(parts))
