"""The registry: kinds, aliases, argument checks, determinism of every kind."""

from __future__ import annotations

import pytest
import torch

from substrate_lm.cli.substrate import KIND_CHOICES
from substrate_lm.errors import SubstrateError
from substrate_lm.modeling.configuration_substrate import BINARY_SUBSTRATE_KINDS, SUBSTRATE_KINDS
from substrate_lm.presets import PRESETS, Preset, describe_presets, get_preset, lookup_preset
from substrate_lm.substrates import KINDS, Substrate, build_substrate, check_vocab, normalize_kind, paper_options
from substrate_lm.substrates.bits import random_bit_codes
from substrate_lm.substrates.registry import ALIASES, BINARY_KINDS, is_frozen, parse_spec


def test_kinds_and_aliases():
    assert KINDS == ("bits", "token-id", "float", "glyph", "trainable")
    assert normalize_kind("uni-glyph") == "glyph" and normalize_kind("UNFROZEN") == "trainable"
    assert normalize_kind("token_id") == "token-id"
    with pytest.raises(SubstrateError, match="unknown substrate kind 'pixels'"):
        build_substrate("pixels", 10, 4)
    assert paper_options("bits", 1024) == {"tile_period": 512}
    assert paper_options("bits", 256) == {} and paper_options("float", 1024) == {}


def test_the_registry_agrees_with_the_model_and_the_cli():
    """The model's config and ``substrate build --help`` spell the kinds out; they must be the registry's."""
    assert KINDS == SUBSTRATE_KINDS == KIND_CHOICES and BINARY_KINDS == BINARY_SUBSTRATE_KINDS
    assert all(k in KINDS for k in ALIASES.values())


def test_specs_and_frozen_kinds_come_from_the_registry():
    assert parse_spec("256-bit", 1024) == ("bits", 256) and parse_spec("16-bit", 1024) == ("token-id", 16)
    assert parse_spec("64-float", 1024) == ("float", 64) and parse_spec("32-glyph", 64) == ("glyph", 32)
    assert parse_spec("uni-glyph", 128) == ("glyph", 128) and parse_spec("token-id", 128) == ("token-id", 16)
    for alias, kind in ALIASES.items():  # every alias of a kind is also a spec
        assert parse_spec(alias, 64)[0] == kind
    with pytest.raises(SubstrateError, match="unknown substrate spec 'pixels'"):
        parse_spec("pixels", 64)
    assert [k for k in KINDS if not is_frozen(k)] == ["trainable"] and not is_frozen("unfrozen")
    for name in ("tiny", "unfrozen"):
        cfg = get_preset(name)
        assert cfg.substrate_frozen == is_frozen(cfg.substrate_kind)
    # an explicit kind decides the flag, whatever the preset's spec
    assert get_preset("tiny", substrate_kind="trainable").substrate_frozen is False


def test_presets_are_typed():
    rows = describe_presets()
    assert all(isinstance(p, Preset) for p in rows) and [p.name for p in rows] == list(PRESETS)
    p = lookup_preset("1024-bit")
    assert (p.backbone, p.spec, p.kind, p.n_embed, p.is_paper) == ("paper", "1024-bit", "bits", 1024, True)
    assert not lookup_preset("tiny").is_paper and lookup_preset("16-bit").kind == "token-id"
    assert p.row()["substrate"] == "bits" and p.config().n_embed == 1024
    with pytest.raises(SubstrateError, match="unknown preset 'huge'"):
        lookup_preset("huge")


@pytest.mark.parametrize("kind", ["bits", "token-id", "float", "trainable"])
def test_every_kind_is_a_pure_function_of_its_inputs(kind):
    a = build_substrate(kind, ["x"] * 700, 16, seed=3)  # strings or a size: the same table
    b = build_substrate(kind, 700, 16, seed=3)
    assert isinstance(a, Substrate) and a.table.dtype == torch.float32 and a.table.shape == (700, 16)
    assert a.fingerprint == b.fingerprint and torch.equal(a.table, b.table)
    other = build_substrate(kind, 700, 16, seed=4)
    assert (other.fingerprint == a.fingerprint) == (kind == "token-id")
    assert a.meta["kind"] == kind and a.meta["vocab_size"] == 700 and a.meta["package_version"]
    assert a.meta["vocab_sha256"].startswith("sha256:") and b.meta["vocab_sha256"] is None
    assert "fingerprint=sha256:" in repr(a) and "tensor" not in repr(a)


def test_kinds_do_not_share_random_streams():
    bits = build_substrate("bits", 500, 64, seed=0).table
    float_codes = torch.from_numpy(random_bit_codes(500, 64, 0, stream="float")).float()
    assert not torch.equal(bits, float_codes)


def test_bad_arguments_fail_with_one_line_errors():
    cases = [
        (("bits", 100, 0), {}, "width must be a positive integer"),
        (("bits", 100, 16), {"seed": -1}, "seed must be a non-negative integer"),
        (("bits", 100, 16), {"seed": 1.5}, "seed must be"),
        (("bits", 0, 16), {}, "at least 1"),
        (("bits", "abc", 16), {}, "list of token strings"),
        (("bits", [1, 2], 16), {}, "not str"),
        (("bits", 100, 16), {"bit_order": "msb"}, "has no option bit_order"),
        (("float", 100, 16), {"tile_period": 8}, "has no option tile_period"),
    ]
    for args, kwargs, msg in cases:
        with pytest.raises(SubstrateError, match=msg) as exc:
            build_substrate(*args, **kwargs)
        assert "\n" not in str(exc.value)


def test_check_vocab_catches_size_and_string_mismatches():
    sub = build_substrate("bits", 300, 16)
    check_vocab(sub, 300)
    check_vocab(sub, ["x"] * 300)
    with pytest.raises(SubstrateError, match="300 rows but the tokenizer has 301 ids"):
        check_vocab(sub, 301)
    glyph = Substrate(table=torch.zeros(2, 4), kind="glyph", width=4, seed=0, fingerprint="",
                      meta={"vocab_sha256": build_substrate("bits", ["a", "b"], 4).meta["vocab_sha256"]})
    check_vocab(glyph, ["a", "b"])
    with pytest.raises(SubstrateError, match="other token strings"):
        check_vocab(glyph, ["a", "c"])
