"""glyph (UNI_GLYPH): the fast pipeline equals the literal published recipe; rows and fonts."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest

import substrate_lm.substrates.glyph as glyph
from substrate_lm.errors import SubstrateError
from substrate_lm.substrates import build_substrate, verify_substrate
from substrate_lm.substrates.glyph import (
    glyph_bits, glyph_images, is_easy, polar_order, reference_glyph_bits, resolve_font
)

# characters that exercise every branch: Latin/Greek/Cyrillic/Armenian (easy), CJK, Thai, Hebrew,
# Devanagari, combining marks (zero advance, ink left of the cell), glyphs drawn one cell to the
# left (U+302A), control and line-break characters, the soft hyphen, private use, U+FFFD
SAMPLE_CHARS = (
    [chr(c) for c in range(0x20, 0x7F)]
    + list("éßÆœŁđǅȸΩλЖжѣԱաֆ")
    + list("中国人的一是不了")
    + list("กขัิ")
    + list("שלום")
    + list("हिन्दी")
    + ["\u0300", "\u0301", "\u0308", "\u20dd", "\u302a", "\u302b", "\ua9ba", "\u0f7b"]
    + ["\n", "\r", "\t", "\x00", "\x1c", "\xad", "\u200b", "\u2029", "\ue000", "\ufffd", "\ud7ff"]
)


def _sample_vocab() -> list[str]:
    rng = random.Random(0)
    vocab = list(SAMPLE_CHARS)
    for _ in range(150):
        vocab.append("".join(rng.choice(SAMPLE_CHARS) for _ in range(rng.choice([2, 3, 3, 4]))))
    vocab += ["<pad>", "<unused_65535>", "[FIM_MIDDLE]", "the", "ing", "中国", "про", "a\u0301b", "\u0301\u0301",
              "x\u302a", "\u302ay", "ab\n", ""]
    return vocab


def test_fast_pipeline_equals_published_token_by_token_recipe(otf_font):
    vocab = _sample_vocab()
    fast = glyph_bits(vocab, otf_font)
    assert fast.shape == (len(vocab), 1024) and fast.dtype == np.uint8
    for i, text in enumerate(vocab):
        ref = reference_glyph_bits(text, otf_font)
        assert np.array_equal(fast[i], ref), f"token {text!r} differs in {int((fast[i] != ref).sum())} bits"
    # the sample covers both augmentation classes, multi-char resizes and spilling glyphs
    assert any(is_easy(t) and len(t) > 1 for t in vocab) and any(not is_easy(t) for t in vocab)


def test_stronger_augmentation_preset_also_matches_reference(otf_font):
    vocab = ["A", "Ж", "the", "中", "a\u0301"]
    fast = glyph_bits(vocab, otf_font, augment="bvv241-max")
    for i, t in enumerate(vocab):
        assert np.array_equal(fast[i], reference_glyph_bits(t, otf_font, augment="bvv241-max"))
    assert not np.array_equal(fast[0], glyph_bits(["A"], otf_font)[0])


def test_visually_identical_strings_share_rows_and_different_glyphs_do_not(otf_font):
    # Latin A, Greek Alpha and Cyrillic A are the same Unifont bitmap and the same script class
    vocab = ["A", "\u0391", "\u0410", "B", "ab", "ab", "ba"] + [chr(c) for c in range(0x61, 0x7B)]
    sub = build_substrate("glyph", vocab, 16, font=otf_font)
    t = sub.table.numpy()
    assert np.array_equal(t[0], t[1]) and np.array_equal(t[0], t[2])
    assert np.array_equal(t[4], t[5])
    others = np.delete(t, [1, 2, 5], axis=0)
    assert len(np.unique(others, axis=0)) == len(others)
    report = verify_substrate(sub)
    assert report["ok"], report["problems"]  # duplicates are allowed for glyph
    assert report["duplicate_rows"] == 3 and report["unit_norm"]


def test_polar_snake_order():
    order = polar_order(32)
    assert sorted(order.tolist()) == list(range(1024))
    y, x = np.divmod(order, 32)
    r = np.hypot(x - 16.0, y - 16.0)
    theta = np.arctan2(y - 16.0, x - 16.0)
    assert np.all(np.diff(r) >= -1e-12)  # radius first
    same_r = np.isclose(np.diff(r), 0.0)
    assert np.all(np.diff(theta)[same_r] > 0)  # then angle
    assert (x[0], y[0]) == (16, 16)


def test_glyph_meta_font_version_and_hash(otf_font):
    sub = build_substrate("glyph", ["A", "b", "中"], 3, font=otf_font)
    with open(otf_font, "rb") as fh:
        assert sub.meta["font_sha256"] == "sha256:" + hashlib.sha256(fh.read()).hexdigest()
    assert sub.meta["font_version"] and sub.meta["font_version"][0].isdigit()
    assert sub.meta["augment_seed"] == 42 and sub.meta["bit_order"] == "polar-snake"
    assert np.allclose(np.linalg.norm(sub.table.numpy(), axis=1), 1.0, atol=1e-5)


def test_hex_bitmaps_agree_with_the_otf_for_ordinary_glyphs(otf_font, hex_font):
    chars = [chr(c) for c in range(0x21, 0x7F)] + list("ЖжΩλ中国人的")
    a = glyph_images(chars, otf_font, augment="none")
    b = glyph_images(chars, hex_font, augment="none")
    assert np.array_equal(a, b)
    info = resolve_font(hex_font)
    assert info.format == "hex" and len(info.sha256) == 64


def test_glyph_errors(tmp_path, otf_font):
    with pytest.raises(SubstrateError, match="apt-get install") as exc:
        build_substrate("glyph", ["A"], 4, font=str(tmp_path / "nope.otf"))
    assert "\n" not in str(exc.value)
    bad = tmp_path / "font.woff"
    bad.write_bytes(b"x")
    with pytest.raises(SubstrateError, match=r"\.otf"):
        build_substrate("glyph", ["A"], 4, font=str(bad))
    with pytest.raises(SubstrateError, match="token strings"):
        build_substrate("glyph", 100, 4, font=otf_font)
    with pytest.raises(SubstrateError, match="exceeds"):
        build_substrate("glyph", ["A"], 1025, font=otf_font)
    with pytest.raises(SubstrateError, match="augmentation"):
        build_substrate("glyph", ["A"], 4, font=otf_font, augment="heavy")


def test_missing_default_font_gives_install_hint(monkeypatch):
    monkeypatch.delenv(glyph.FONT_ENV, raising=False)
    monkeypatch.setattr(glyph, "DEFAULT_FONT_PATHS", ("/nonexistent/unifont.otf",))
    with pytest.raises(SubstrateError, match="apt-get install -y fonts-unifont unifont"):
        glyph.resolve_font(None)


@pytest.mark.slow
def test_full_bvv_vocabulary_glyph_table(bvv_vocab, otf_font):
    sub = build_substrate("glyph", bvv_vocab, 1024, font=otf_font)
    t = sub.table.numpy()
    assert t.shape == (65536, 1024)
    report = verify_substrate(sub)
    assert report["ok"], report["problems"]
    # distinct strings mostly give distinct glyph rows; duplicates are look-alikes (A/Alpha/A, ...)
    assert report["distinct_rows"] > 50000
    # spot-check ids against the literal recipe through the PCA: equal bits give equal rows
    bits = glyph_bits([bvv_vocab[i] for i in (65, 913, 1040, 0x4E2D)], otf_font)
    assert np.array_equal(bits[0], bits[1]) and np.array_equal(bits[0], bits[2])
    assert np.array_equal(t[65], t[913]) and not np.array_equal(t[65], t[0x4E2D])
    assert math.isclose(float(np.linalg.norm(t[0x4E2D])), 1.0, rel_tol=1e-5)
