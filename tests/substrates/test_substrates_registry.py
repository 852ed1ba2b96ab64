"""The registry: kinds, aliases, argument checks, determinism of every kind."""

from __future__ import annotations

import pytest
import torch

from substrate_lm.errors import SubstrateError
from substrate_lm.substrates import KINDS, Substrate, build_substrate, normalize_kind, paper_options


def test_kinds_and_aliases():
    assert KINDS == ("bits", "token-id", "float", "glyph", "trainable")
    assert normalize_kind("uni-glyph") == "glyph" and normalize_kind("UNFROZEN") == "trainable"
    assert normalize_kind("token_id") == "token-id"
    with pytest.raises(SubstrateError, match="unknown substrate kind 'pixels'"):
        build_substrate("pixels", 10, 4)
    assert paper_options("bits", 1024) == {"tile_period": 512}
    assert paper_options("bits", 256) == {} and paper_options("float", 1024) == {}


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
    from substrate_lm.substrates.bits import random_bit_codes

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
    from substrate_lm.substrates import check_vocab

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
