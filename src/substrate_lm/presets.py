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
``"unfrozen"``/``"trainable"``, ``"bits"``/``"float"`` (width = d_model), ``"token-id"``. The
substrate registry (:func:`substrate_lm.substrates.registry.parse_spec`) owns the kinds, their
aliases and the spec syntax; a :class:`Preset` only names a backbone and a spec.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SubstrateError
from .substrates.registry import is_frozen, parse_spec

if TYPE_CHECKING:  # imported where used: listing presets (info --presets) needs no transformers
    from .modeling.configuration_substrate import SubstrateConfig

# bvv241 special-token ids (pad, bos, eos) of the 65,536-entry vocabulary
BVV241_SPECIAL_IDS = {"pad_token_id": 57344, "bos_token_id": 57345, "eos_token_id": 57346}


@dataclass(frozen=True)
class Backbone:
    """The shape of a model without its substrate."""

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

#: The backbone of the papers' models; presets on it reproduce the published substrates.
PAPER_BACKBONE = "paper"


@dataclass(frozen=True)
class Preset:
    """A named model configuration: a backbone (a key of :data:`BACKBONES`) under a substrate spec.

    ``kind`` and ``n_embed`` are the spec resolved on the backbone's ``d_model``
    (:func:`substrate_lm.substrates.registry.parse_spec`).
    """

    name: str
    backbone: str
    spec: str

    @property
    def shape(self) -> Backbone:
        """The :class:`Backbone` this preset names."""
        return BACKBONES[self.backbone]

    @property
    def is_paper(self) -> bool:
        """A preset of the papers' family (its substrate is built with the published options)."""
        return self.backbone == PAPER_BACKBONE

    @property
    def kind(self) -> str:
        return parse_spec(self.spec, self.shape.d_model)[0]

    @property
    def n_embed(self) -> int:
        return parse_spec(self.spec, self.shape.d_model)[1]

    def config(self, substrate: str | None = None, **overrides: Any) -> SubstrateConfig:
        """The :class:`SubstrateConfig` of this preset.

        Args:
            substrate: a substrate spec replacing the preset's (``"16-bit"``, ``"uni-glyph"``, ...).
            **overrides: any config field (``n_layer=4``, ``block_size=512``, ...); an explicit
                ``substrate_kind`` decides (through the registry) whether the table is frozen.

        Raises:
            SubstrateError: an unknown substrate spec.
            ValueError, TypeError: fields :class:`SubstrateConfig` refuses.
        """
        from .modeling.configuration_substrate import SubstrateConfig

        bb = self.shape
        kind, width = parse_spec(substrate or self.spec, overrides.get("d_model", bb.d_model))
        fields: dict[str, Any] = dict(vocab_size=bb.vocab_size, n_embed=width, d_model=bb.d_model,
                                      n_layer=bb.n_layer, n_head=bb.n_head, block_size=bb.block_size,
                                      substrate_kind=kind)
        fields.update(overrides)
        fields.setdefault("substrate_frozen", is_frozen(fields["substrate_kind"]))
        if fields["vocab_size"] == 65536:  # the bvv241 layout's specials, unless given explicitly
            for key, value in BVV241_SPECIAL_IDS.items():
                fields.setdefault(key, value)
        return SubstrateConfig(**fields)

    def row(self) -> dict[str, Any]:
        """The JSON row of ``substrate-lm info --presets`` (without parameter counts)."""
        bb = self.shape
        return dict(name=self.name, backbone=self.backbone, substrate=self.kind, n_embed=self.n_embed,
                    d_model=bb.d_model, n_layer=bb.n_layer, n_head=bb.n_head, block_size=bb.block_size,
                    vocab_size=bb.vocab_size)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("1024-bit", "paper", "1024-bit"),
        Preset("256-bit", "paper", "256-bit"),
        Preset("64-bit", "paper", "64-bit"),
        Preset("16-bit", "paper", "16-bit"),
        Preset("1024-float", "paper", "1024-float"),
        Preset("256-float", "paper", "256-float"),
        Preset("64-float", "paper", "64-float"),
        Preset("16-float", "paper", "16-float"),
        Preset("uni-glyph", "paper", "uni-glyph"),
        Preset("unfrozen", "paper", "unfrozen"),
        Preset("small", "small", "bits"),
        Preset("tiny", "tiny", "bits"),
    )
}


def lookup_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``.

    Raises:
        SubstrateError: no preset has that name (the message lists them).
    """
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise SubstrateError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return preset


def check_override_keys(overrides: dict, where: str = "model.overrides") -> None:
    """Refuse override keys that are not fields of :class:`SubstrateConfig` (a typo such as
    ``n_layers`` would otherwise ride along unused); one line with the nearest field."""
    from .modeling.configuration_substrate import SubstrateConfig

    known = set(inspect.get_annotations(SubstrateConfig)) | set(SubstrateConfig.attribute_map)
    for key in overrides:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {near[0]}?)" if near else f"; known keys: {', '.join(sorted(known))}"
            raise SubstrateError(f"--{where}.{key}: not a model config field{hint}")


def get_preset(name: str, substrate: str | None = None, **overrides: Any) -> SubstrateConfig:
    """The :class:`SubstrateConfig` of a named preset: ``lookup_preset(name).config(...)``.

    Args:
        name: a key of :data:`PRESETS`.
        substrate: override the preset's substrate spec (e.g. ``get_preset("tiny", substrate="16-bit")``).
        **overrides: any config field (``n_layer=4``, ``block_size=512``, ...).

    Raises:
        SubstrateError: an unknown preset or substrate spec.
        ValueError, TypeError: fields :class:`SubstrateConfig` refuses.
    """
    return lookup_preset(name).config(substrate, **overrides)


def describe_presets() -> list[Preset]:
    """Every preset, in the order of :data:`PRESETS` (for ``info --presets``)."""
    return list(PRESETS.values())
