"""The one typed settings engine: dataclass sections validated by pydantic, one override syntax.

Every command that takes settings describes them as a *root* dataclass. A sectioned root (the
training :class:`~substrate_lm.training.config.RunConfig`, the demo's settings) has one dataclass
per section; a flat root (an ablation grid) is a single section whose name the command chooses
(``ablation``). Each
field has a type and an attribute docstring, which is also its ``--help-config`` text.

One override syntax everywhere: ``--<section>.<key> VALUE`` or ``--<section>.<key>=VALUE`` (a bare
``--<section>.<key>`` means ``true``); ``--model.overrides.n_layer 2`` sets one entry of a table
field. Text values are read by the field's type (``3``, ``3e-4``, ``true``/``false``, ``a,b`` or
``[1, 2]`` for lists, ``{n_layer = 2}`` for tables); values from TOML or Python must already have the
field's type (``steps = true`` or ``steps = "3"`` is refused, not read as 1 or 3).

Validation is pydantic's (``TypeAdapter`` over the stdlib dataclasses, ``extra="forbid"``,
attribute docstrings as descriptions); every failure becomes one :class:`SubstrateError` line
naming the key, what it must be and what was given. A command adds its cross-field checks as a
``check`` callable.

Example::

    engine = SettingsEngine(RunConfig, check=validate)
    cfg = engine.load("recipe.toml", ["--train.lr", "3e-4", "--model.overrides.n_layer=2"])
    print(engine.describe(cfg))
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap
import tomllib
import typing
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Generic, Literal, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from .errors import SubstrateError

T = TypeVar("T")

#: the pydantic config every settings dataclass carries (set by :func:`settings_section`)
SECTION_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


def settings_section(cls: type[T]) -> type[T]:
    """Class decorator: a stdlib dataclass whose unknown keys are refused and whose attribute
    docstrings are its field descriptions (apply it above ``@dataclass``)."""
    cls.__pydantic_config__ = SECTION_CONFIG  # type: ignore[attr-defined]
    return cls


class SettingsEngine(Generic[T]):
    """Load, override, validate, describe and serialise one root settings dataclass.

    Args:
        root: the root dataclass (sectioned: every field a dataclass; or flat).
        name: the section name of a flat root in overrides and help (``ablation`` -> ``--ablation.seeds``).
        check: cross-field checks run after every load/override; raise SubstrateError.
    """

    def __init__(self, root: type[T], *, name: str = "", check: Callable[[T], None] | None = None):
        if not dataclasses.is_dataclass(root):
            raise TypeError(f"{root!r} is not a dataclass")
        self.root = root
        self.check = check
        hints = typing.get_type_hints(root)
        fields = dataclasses.fields(root)
        self.flat = not all(dataclasses.is_dataclass(hints[f.name]) for f in fields)
        if self.flat and not name:
            raise TypeError(f"a flat settings class ({root.__name__}) needs a section name")
        self.name = name
        #: section name -> section dataclass (a flat root is its own single section)
        self.sections: dict[str, type] = ({name: root} if self.flat
                                          else {f.name: hints[f.name] for f in fields})
        for cls in {root, *self.sections.values()}:
            cls.__pydantic_config__ = SECTION_CONFIG  # type: ignore[attr-defined]

    @cached_property
    def _adapter(self) -> TypeAdapter:
        return TypeAdapter(self.root)

    # -- building --------------------------------------------------------------------------------
    def from_dict(self, raw: dict[str, Any]) -> T:
        """A validated settings object from a nested dict (as read from TOML)."""
        if not isinstance(raw, dict):
            raise SubstrateError(f"settings must be a table of sections, got {raw!r}")
        for sec, values in raw.items():
            if sec not in self.sections:
                raise SubstrateError(f"unknown config section [{sec}]; valid sections: "
                                     f"{', '.join(self.sections)}")
            if not isinstance(values, dict):
                raise SubstrateError(f"config section [{sec}] must be a table of keys, got {values!r}")
        return self._validate(raw.get(self.name, {}) if self.flat else raw)

    def _validate(self, data: dict[str, Any]) -> T:
        if self.flat:
            _refuse_loose(self.root, data, self.name)
        else:
            for sec, cls in self.sections.items():
                if isinstance(data.get(sec), dict):
                    _refuse_loose(cls, data[sec], sec)
        try:
            obj = self._adapter.validate_python(data)
        except ValidationError as exc:
            raise SubstrateError(self._message(exc)) from None
        if self.check is not None:
            self.check(obj)
        return obj

    def load(self, source: str | Path | dict | None = None,
             overrides: list[str] | dict[str, Any] | None = None, *,
             resolve: Callable[[str | Path], Path] | None = None) -> T:
        """Settings from a TOML file (``resolve`` maps a name to its path), a dict or the
        defaults (None), then ``overrides`` applied."""
        if source is None:
            raw: dict[str, Any] = {}
        elif isinstance(source, dict):
            raw = source
        else:
            path = resolve(source) if resolve else Path(source)
            raw = read_toml(path)
        obj = self.from_dict(raw)
        return self.apply(obj, overrides) if overrides else obj

    def defaults(self) -> T:
        return self.from_dict({})

    # -- overrides -------------------------------------------------------------------------------
    def parse_args(self, argv: list[str]) -> dict[str, str]:
        """``["--train.lr", "3e-4", "--log.jsonl=false", "--train.compile"]`` ->
        ``{"train.lr": "3e-4", "log.jsonl": "false", "train.compile": "true"}``."""
        out: dict[str, str] = {}
        i = 0
        while i < len(argv):
            arg = argv[i]
            if not arg.startswith("--") or len(arg) == 2:
                raise SubstrateError(f"unexpected argument {arg!r}; settings look like "
                                     f"--{self._example()} VALUE")
            key = arg[2:]
            if "=" in key:
                key, value = key.split("=", 1)
                i += 1
            elif i + 1 < len(argv) and not _is_flag(argv[i + 1]):
                value = argv[i + 1]
                i += 2
            else:
                value = "true"
                i += 1
            if "." not in key:
                raise SubstrateError(f"unknown option --{key}; settings are written --<section>.<key> VALUE "
                                     f"(sections: {', '.join(self.sections)}; see --help and --help-config)")
            out[key] = value
        return out

    def apply(self, obj: T, overrides: list[str] | dict[str, Any]) -> T:
        """A new settings object with dotted overrides applied (text read by each field's type;
        other values must have it) and validated. ``obj`` itself is not changed."""
        items = self.parse_args(list(overrides)) if isinstance(overrides, list) else dict(overrides)
        data = self.to_dict(obj)
        for dotted, value in items.items():
            sec, _, key = str(dotted).partition(".")
            if sec not in self.sections:
                raise SubstrateError(f"unknown config section in --{dotted}; valid sections: "
                                     f"{', '.join(self.sections)}")
            values = data if self.flat else data[sec]
            name, _, sub = key.partition(".")
            hints = typing.get_type_hints(self.sections[sec])
            if name not in hints:
                raise SubstrateError(self._unknown_key(sec, name))
            tp = hints[name]
            if sub:  # one entry of a table field: --model.overrides.n_layer 2
                if typing.get_origin(tp) is not dict:
                    raise SubstrateError(f"{sec}.{name} is not a table; set it as --{sec}.{name} VALUE")
                values[name] = {**values[name], sub: parse_literal(value) if isinstance(value, str) else value}
                continue
            values[name] = self._from_text(value, tp, f"{sec}.{name}") if isinstance(value, str) else value
        return self._validate(data)

    def _from_text(self, text: str, tp: Any, name: str) -> Any:
        """A command-line string read as a value of type ``tp`` (lax: ``"3"`` -> 3)."""
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None  # an optional field: --ablation.limit none
        if type(None) in args and len(args) == 2:
            tp = next(a for a in args if a is not type(None))
            origin = typing.get_origin(tp)
        if tp is str or (origin is Literal and all(isinstance(c, str) for c in typing.get_args(tp))):
            value: Any = text
        elif origin in (list, tuple):
            parsed = parse_literal(text) if text.strip().startswith("[") else None
            value = parsed if isinstance(parsed, list) else [s.strip() for s in text.split(",") if s.strip()]
        elif origin is dict:
            value = parse_literal(text if text.strip().startswith("{") else "{" + text + "}")
        else:
            value = text
        try:
            return TypeAdapter(tp).validate_python(value, strict=False)
        except ValidationError as exc:
            raise SubstrateError(self._message(exc, prefix=name)) from None

    # -- output ----------------------------------------------------------------------------------
    def to_dict(self, obj: T) -> dict[str, Any]:
        """A plain nested dict (TOML/JSON-serialisable); a flat root is ``{name: {...}}``."""
        d = dataclasses.asdict(obj)  # type: ignore[arg-type]
        return d

    def to_toml(self, obj: T) -> str:
        data = self.to_dict(obj)
        return dump_toml({self.name: data} if self.flat else data)

    def describe(self, obj: T | None = None) -> str:
        """Every section and key with its current value and description (``--help-config``)."""
        obj = obj if obj is not None else self.defaults()
        out: list[str] = []
        for sec, cls in self.sections.items():
            out.append(f"[{sec}]  {' '.join((cls.__doc__ or '').split()[:40])}")
            docs = field_docs(cls)
            current = obj if self.flat else getattr(obj, sec)
            for f in dataclasses.fields(cls):
                out.append(f"  --{sec}.{f.name} = {toml_value(getattr(current, f.name))}")
                if docs.get(f.name):
                    out.extend("      " + line for line in textwrap.wrap(docs[f.name], 90))
            out.append("")
        return "\n".join(out)

    # -- errors ----------------------------------------------------------------------------------
    def _example(self) -> str:
        sec, cls = next(iter(self.sections.items()))
        return f"{sec}.{dataclasses.fields(cls)[0].name}"

    def _unknown_key(self, sec: str, key: str) -> str:
        valid = ", ".join(f.name for f in dataclasses.fields(self.sections[sec]))
        return f"unknown config key {sec}.{key}; valid keys in [{sec}]: {valid}"

    def _message(self, exc: ValidationError, prefix: str = "") -> str:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if self.flat and not prefix:
            loc = [self.name, *loc]
        name = prefix or ".".join(loc)
        kind, given = err["type"], err.get("input")
        if kind in ("unexpected_keyword_argument", "extra_forbidden"):
            if len(loc) == 1:
                return (f"unknown config section [{loc[0]}]; valid sections: {', '.join(self.sections)}")
            return self._unknown_key(loc[0], loc[1])
        what = _MUST.get(kind.split("_")[0] if kind not in _MUST else kind)
        if kind == "literal_error":
            what = "one of " + ", ".join(str(c).strip("'") for c in
                                          str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ").split(", "))
        if kind in ("dataclass_type", "dataclass_exact_type", "model_type"):
            return f"config section [{name}] must be a table of keys, got {given!r}"
        if what:
            return f"{name} must be {what}; got {given!r}"
        return f"{name}: {err['msg']}; got {given!r}"


_MUST = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "tuple": "a list",
    "dict": "a table, e.g. {n_layer = 2}",
    "finite_number": "a finite number",
}


def _refuse_loose(cls: type, values: dict[str, Any], sec: str) -> None:
    """Typed values (TOML, Python) must have their field's type: pydantic's lax mode would read
    ``true`` as 1 and ``"3"`` as 3, which a settings file never means."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = hints.get(key)
        if tp is None:
            continue  # unknown keys are refused by the validation itself
        items = [value]
        if typing.get_origin(tp) in (list, tuple) and isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            tp, items = (args[0] if args else Any), list(value)
        for item in items:
            bad = ((tp in (int, float) and isinstance(item, (bool, str)))
                   or (tp is bool and not isinstance(item, bool)))
            if bad:
                what = {int: "an integer", float: "a number", bool: "true or false"}[tp]
                raise SubstrateError(f"{sec}.{key} must be {what}; got {value!r}")


def _is_flag(arg: str) -> bool:
    """``--x.y`` is the next setting; ``-1`` and ``-3e-4`` are values."""
    return arg.startswith("--")


# ------------------------------------------------------------------------------------------------
# TOML reading and writing (tomllib only reads)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; unreadable or invalid files are one-line errors."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SubstrateError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SubstrateError(f"{path}: not a UTF-8 text file; give a TOML settings file") from None
    except OSError as exc:
        raise SubstrateError(f"cannot read settings file {path}: {exc.strerror or exc}") from None


def parse_literal(text: Any) -> Any:
    """A TOML value (``2``, ``1e-3``, ``true``, ``[1, 2]``, ``{a = 1}``); plain text stays text."""
    if not isinstance(text, str):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def dump_toml(data: dict[str, dict[str, Any]]) -> str:
    """A two-level dict of sections as TOML text (values: str, int, float, bool, list, dict)."""
    lines: list[str] = []
    for sec, values in data.items():
        lines.append(f"[{sec}]")
        for key, value in values.items():
            lines.append(f"{toml_key(str(key))} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """One value as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return '""'
    raise SubstrateError(f"cannot write {value!r} as TOML")


def _toml_char(c: str) -> str:
    """One character of a TOML basic string: quotes, backslashes and control characters escaped."""
    if c == '"' or c == "\\":
        return "\\" + c
    if c == "\n":
        return "\\n"
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04X}"
    return c


def toml_key(key: str) -> str:
    """A TOML key: bare when it can be, else quoted (``a b`` -> ``"a b"``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a settings dataclass (its fields' descriptions); a subclass
    inherits its bases' and overrides those it redefines."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            schema = TypeAdapter(klass).json_schema()
        except Exception:  # noqa: BLE001 - a field type without a schema: no descriptions
            continue
        props = schema.get("properties") or (schema.get("$defs", {}).get(klass.__name__) or {}).get("properties", {})
        own = set(getattr(klass, "__annotations__", {}))
        docs.update({k: " ".join(str(v["description"]).split()) for k, v in props.items()
                     if v.get("description") and (k in own or k not in docs)})
    return docs
