"""Named model configurations: the paper family and CPU sizes.

A preset is a backbone size plus a substrate spec. The paper family (Bochkov 2025) is one backbone
(16 layers, d_model 1024, 32 heads, context 1024, vocab 65,536) under every substrate of the papers:

    get_preset("1024-bit")              # Model_1024_BIT, 335.6M parameters (frozen table included)
    get_preset("16-bit")                # token-id bits, repeat_interleave(64), 269.5M
    get_preset("uni-glyph")             # glyph bitmaps -> PCA -> L2, 1024 wide
    get_preset("unfrozen")              # trainable random table, the baseline
    get_preset("tiny", substrate="16-bit")   # CPU sizes with any substrate spec

Substrate specs: ``"<width>-bit"`` (random collision-free 0/1 codes; 16-bit means token-id bits as
in the papers), ``"<width>-float"`` (PCA'd random codes, unit rows), ``"uni-glyph"``/``"glyph"``,
``"unfrozen"``/``"trainable"``, ``"bits"``/``"float"`` (width = d_model), ``"token-id"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .modeling.configuration_substrate import SubstrateConfig

# bvv241 special-token ids (pad, bos, eos) of the 65,536-entry vocabulary
BVV241_SPECIAL_IDS = {"pad_token_id": 57344, "bos_token_id": 57345, "eos_token_id": 57346}


@dataclass(frozen=True)
class Backbone:
    d_model: int
    n_layer: int
    n_head: int
    block_size: int
    vocab_size: int = 65536
    doc: str = ""


BACKBONES: dict[str, Backbone] = {
    "paper": Backbone(1024, 16, 32, 1024, doc="the papers' 335M backbone (GPU)"),
    "growth": Backbone(1024, 9, 32, 1024, doc="Growing Transformers controlled study, 9 layers (GPU)"),
    "small": Backbone(256, 4, 8, 256, doc="CPU runs of minutes (~3M in blocks + 2 x V x 256)"),
    "tiny": Backbone(64, 2, 4, 128, doc="seconds-long CPU tests and the quick demo"),
}

# preset name -> (backbone, substrate spec)
PRESETS: dict[str, tuple[str, str]] = {
    "1024-bit": ("paper", "1024-bit"),
    "256-bit": ("paper", "256-bit"),
    "64-bit": ("paper", "64-bit"),
    "16-bit": ("paper", "16-bit"),
    "1024-float": ("paper", "1024-float"),
    "256-float": ("paper", "256-float"),
    "64-float": ("paper", "64-float"),
    "16-float": ("paper", "16-float"),
    "uni-glyph": ("paper", "uni-glyph"),
    "unfrozen": ("paper", "unfrozen"),
    "small": ("small", "bits"),
    "tiny": ("tiny", "bits"),
}


def parse_substrate_spec(spec: str, d_model: int) -> tuple[str, int]:
    """``"256-bit"`` -> ("bits", 256); ``"16-bit"`` -> ("token-id", 16); ``"glyph"`` -> ("glyph", d_model)."""
    s = spec.strip().lower()
    m = re.fullmatch(r"(\d+)-(bit|float|glyph)", s)
    if m:
        width, what = int(m.group(1)), m.group(2)
        if what == "bit":
            # the papers' 16-bit model is the token id's own 16-bit code
            return ("token-id" if width == 16 else "bits"), width
        return ("float" if what == "float" else "glyph"), width
    named = {
        "bits": "bits",
        "bit": "bits",
        "float": "float",
        "glyph": "glyph",
        "uni-glyph": "glyph",
        "unfrozen": "trainable",
        "trainable": "trainable",
        "token-id": "token-id",
    }
    if s not in named:
        raise ValueError(
            f"unknown substrate spec {spec!r}; use <width>-bit, <width>-float, <width>-glyph, uni-glyph, "
            f"unfrozen or trainable (the same: a trainable random table), bits, float, glyph, token-id"
        )
    kind = named[s]
    return kind, (16 if kind == "token-id" else d_model)


def check_override_keys(overrides: dict, where: str = "model.overrides") -> None:
    """Refuse override keys that are not fields of :class:`SubstrateConfig` (a typo such as
    ``n_layers`` would otherwise ride along unused); one line with the nearest field."""
    import difflib
    import inspect

    from .errors import SubstrateError

    known = set(inspect.get_annotations(SubstrateConfig)) | set(SubstrateConfig.attribute_map)
    for key in overrides:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {near[0]}?)" if near else f"; known keys: {', '.join(sorted(known))}"
            raise SubstrateError(f"--{where}.{key}: not a model config field{hint}")


def get_preset(name: str, substrate: str | None = None, **overrides) -> SubstrateConfig:
    """Build the :class:`SubstrateConfig` of a named preset.

    Args:
        name: a key of :data:`PRESETS`.
        substrate: override the preset's substrate spec (e.g. ``get_preset("tiny", substrate="16-bit")``).
        **overrides: any config field (``n_layer=4``, ``block_size=512``, ...).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    backbone_name, spec = PRESETS[name]
    bb = BACKBONES[backbone_name]
    d_model = overrides.get("d_model", bb.d_model)
    kind, width = parse_substrate_spec(substrate or spec, d_model)
    fields = dict(
        vocab_size=bb.vocab_size,
        n_embed=width,
        d_model=bb.d_model,
        n_layer=bb.n_layer,
        n_head=bb.n_head,
        block_size=bb.block_size,
        substrate_kind=kind,
        substrate_frozen=kind != "trainable",
    )
    fields.update(overrides)
    if fields["vocab_size"] == 65536:  # the bvv241 layout's specials, unless given explicitly
        for key, value in BVV241_SPECIAL_IDS.items():
            fields.setdefault(key, value)
    return SubstrateConfig(**fields)


def describe_presets() -> list[dict]:
    """One row per preset (name, backbone, substrate kind/width, layers, d_model) for `info --presets`."""
    rows = []
    for name, (bb_name, spec) in PRESETS.items():
        bb = BACKBONES[bb_name]
        kind, width = parse_substrate_spec(spec, bb.d_model)
        rows.append(
            dict(
                name=name,
                backbone=bb_name,
                substrate=kind,
                n_embed=width,
                d_model=bb.d_model,
                n_layer=bb.n_layer,
                n_head=bb.n_head,
                block_size=bb.block_size,
                vocab_size=bb.vocab_size,
            )
        )
    return rows
