"""The one settings engine: typing, override syntax, errors, help, TOML round trip."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.settings import SettingsEngine


@dataclass
class Opt:
    """Optimiser."""

    steps: int = 3
    """Number of steps."""
    lr: float = 1e-3
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    name: str = "run"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Log:
    """Logging."""

    interval: int = 10


@dataclass
class Root:
    opt: Opt = field(default_factory=Opt)
    log: Log = field(default_factory=Log)


@dataclass
class Flat:
    """A flat settings class."""

    steps: int = 5
    """Training steps."""
    langs: tuple[str, ...] = ("en",)


def _check(cfg: Root) -> None:
    if cfg.opt.steps < 1:
        raise SubstrateError(f"opt.steps must be >= 1, got {cfg.opt.steps}")


ENGINE = SettingsEngine(Root, check=_check)
FLAT = SettingsEngine(Flat, name="demo")


def test_text_overrides_are_read_by_field_type():
    cfg = ENGINE.apply(ENGINE.defaults(), ["--opt.steps", "1_000", "--opt.lr=-3e-4", "--opt.compile",
                                           "--opt.betas", "0.8,0.99", "--opt.name", "12",
                                           "--opt.overrides.n_layer", "2", "--log.interval", "7"])
    assert cfg.opt.steps == 1000 and cfg.opt.lr == -3e-4 and cfg.opt.compile is True
    assert cfg.opt.betas == [0.8, 0.99] and cfg.opt.name == "12"  # a str field keeps text as text
    assert cfg.opt.overrides == {"n_layer": 2} and cfg.log.interval == 7
    assert ENGINE.apply(cfg, {"opt.betas": "[0.5, 0.6]"}).opt.betas == [0.5, 0.6]


def test_apply_does_not_change_its_input():
    base = ENGINE.defaults()
    ENGINE.apply(base, {"opt.steps": 9})
    assert base.opt.steps == 3


@pytest.mark.parametrize("raw, message", [
    ({"opt": {"steps": True}}, "opt.steps must be an integer; got True"),
    ({"opt": {"steps": "3"}}, "opt.steps must be an integer; got '3'"),
    ({"opt": {"steps": 2.5}}, "opt.steps must be an integer; got 2.5"),
    ({"opt": {"lr": "fast"}}, "opt.lr must be a number"),
    ({"opt": {"compile": 1}}, "opt.compile must be true or false"),
    ({"opt": {"precision": "fp16"}}, "opt.precision must be one of fp32, bf16; got 'fp16'"),
    ({"opt": {"name": 3}}, "opt.name must be a string"),
    ({"opt": {"bogus": 1}}, r"unknown config key opt.bogus; valid keys in \[opt\]: steps, lr"),
    ({"nope": {}}, r"unknown config section \[nope\]; valid sections: opt, log"),
    ({"opt": 3}, r"config section \[opt\] must be a table of keys"),
    ({"opt": {"steps": 0}}, "opt.steps must be >= 1, got 0"),  # the command's own check
])
def test_typed_values_are_refused_with_one_line(raw, message):
    with pytest.raises(SubstrateError, match=message) as info:
        ENGINE.from_dict(raw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--opt.steps", "many"], "opt.steps must be an integer; got 'many'"),
    (["--opt.compile", "maybe"], "opt.compile must be true or false"),
    (["--opt.betas", "a,b"], "opt.betas must be a number"),
    (["--opt.bogus", "1"], "unknown config key opt.bogus"),
    (["--zz.a", "1"], "unknown config section in --zz.a"),
    (["--steps", "1"], "unknown option --steps; settings are written --<section>.<key> VALUE"),
    (["steps=1"], "unexpected argument 'steps=1'; settings look like --opt.steps VALUE"),
    (["--opt.steps.x", "1"], "opt.steps is not a table"),
])
def test_bad_overrides(argv, message):
    with pytest.raises(SubstrateError, match=message):
        ENGINE.apply(ENGINE.defaults(), argv)


def test_negative_numbers_are_values_not_flags():
    assert ENGINE.parse_args(["--opt.lr", "-1", "--opt.compile"]) == {"opt.lr": "-1", "opt.compile": "true"}


def test_flat_settings_take_their_section_name():
    cfg = FLAT.apply(FLAT.defaults(), ["--demo.langs", "en,ru", "--demo.steps", "7"])
    assert cfg == Flat(steps=7, langs=("en", "ru"))
    assert FLAT.from_dict({"demo": {"langs": ["ru"]}}).langs == ("ru",)
    with pytest.raises(SubstrateError, match="demo.steps must be an integer; got 'x'"):
        FLAT.apply(FLAT.defaults(), ["--demo.steps", "x"])
    with pytest.raises(SubstrateError, match=r"unknown config key demo.bogus; valid keys in \[demo\]"):
        FLAT.apply(FLAT.defaults(), ["--demo.bogus", "x"])


def test_describe_lists_every_key_with_value_and_docstring():
    text = ENGINE.describe(ENGINE.apply(ENGINE.defaults(), ["--opt.steps", "42"]))
    assert "[opt]  Optimiser." in text and "--opt.steps = 42" in text and "Number of steps." in text
    assert "--log.interval = 10" in text
    flat = FLAT.describe()
    assert "--demo.steps = 5" in flat and "Training steps." in flat


def test_toml_round_trip(tmp_path):
    cfg = ENGINE.apply(ENGINE.defaults(), ["--opt.name", 'a "quoted"\\name', "--opt.overrides", "{n = 2}",
                                           "--opt.lr", "2.5e-4"])
    path = tmp_path / "cfg.toml"
    path.write_text(ENGINE.to_toml(cfg), encoding="utf-8")
    assert ENGINE.load(path) == cfg
    flat = FLAT.apply(FLAT.defaults(), ["--demo.langs", "en,ru"])
    assert FLAT.from_dict(tomllib.loads(FLAT.to_toml(flat))) == flat


def test_unreadable_settings_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[opt\nsteps = 1", encoding="utf-8")
    with pytest.raises(SubstrateError, match="invalid TOML"):
        ENGINE.load(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SubstrateError, match="not a UTF-8 text file"):
        ENGINE.load(binary)
    with pytest.raises(SubstrateError, match="cannot read settings file"):
        ENGINE.load(tmp_path)


def test_non_finite_numbers_are_refused():
    with pytest.raises(SubstrateError, match="opt.lr must be a finite number; got nan"):
        ENGINE.apply(ENGINE.defaults(), ["--opt.lr", "nan"])
    with pytest.raises(SubstrateError, match="opt.lr must be a finite number"):
        ENGINE.from_dict({"opt": {"lr": float("inf")}})


def test_toml_writer_escapes_control_characters_and_quotes_keys():
    cfg = ENGINE.defaults()
    cfg.opt.name = 'tab\tcr\rnul\x01del\x7f "q" \\'
    cfg.opt.overrides = {"a b": 1, "n.x": 2, "ok_key": 3}
    back = tomllib.loads(ENGINE.to_toml(cfg))
    assert back["opt"]["name"] == cfg.opt.name
    assert back["opt"]["overrides"] == {"a b": 1, "n.x": 2, "ok_key": 3}
