"""Build a model from a preset with its substrate installed: the one place that joins presets,
tokenizer and substrate (used by ``init``, the trainer, the demo and growth)."""

from __future__ import annotations

from typing import Any

import torch

from .errors import SubstrateError
from .modeling import SubstrateForCausalLM
from .presets import lookup_preset
from .substrates import build_substrate, check_vocab, load_substrate
from .substrates.registry import is_frozen, paper_options
from .tokenizer import vocab_strings


def build_model(
    preset: str,
    substrate: str | None = None,
    *,
    tokenizer: Any = None,
    seed: int = 0,
    font: str | None = None,
    overrides: dict[str, Any] | None = None,
    substrate_file: str | None = None,
) -> SubstrateForCausalLM:
    """A fresh model from a preset with its substrate installed (used by init, training and the demo).

    Args:
        preset: a name of :data:`substrate_lm.presets.PRESETS`.
        substrate: a substrate spec overriding the preset's (``"16-bit"``, ``"uni-glyph"``, ...).
        tokenizer: sets the vocabulary size and special ids and provides the strings a glyph
            substrate renders; without it the vocabulary is only a size (enough for all but glyph).
        seed: seed of the backbone init (independent of the substrate) and of random substrates.
        font: Unifont file for glyph substrates.
        overrides: config fields to change (``{"n_layer": 4}``).
        substrate_file: install a saved substrate (``substrate-lm substrate build --out FILE``)
            instead of building one; its kind and width replace the preset's.

    Raises:
        SubstrateError: an unknown preset or spec, an inconsistent config, or a substrate that does
            not fit the tokenizer's vocabulary.
    """
    spec = lookup_preset(preset)
    overrides = dict(overrides or {})
    vocab = None
    if tokenizer is not None:
        vocab = vocab_strings(tokenizer)
        overrides.setdefault("vocab_size", len(vocab))
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, attr, None) is not None:
                overrides.setdefault(attr, getattr(tokenizer, attr))
    sub = None
    if substrate_file is not None:
        sub = load_substrate(substrate_file)
        check_vocab(sub, vocab if vocab is not None else overrides.get("vocab_size", sub.vocab_size))
        overrides.update(n_embed=sub.width, substrate_kind=sub.kind)
        overrides.setdefault("vocab_size", sub.vocab_size)
    try:
        cfg = spec.config(substrate, **overrides)
    except (ValueError, TypeError) as exc:
        raise SubstrateError(str(exc)) from None
    model = SubstrateForCausalLM(cfg)
    init_backbone(model, seed)
    if sub is None:
        if vocab is None and cfg.substrate_kind == "glyph":
            raise SubstrateError("a glyph substrate renders the vocabulary's strings: pass --tokenizer DIR")
        # the paper presets reproduce the published artefacts (e.g. 512 random bits tiled to 1024)
        options = paper_options(cfg.substrate_kind, cfg.n_embed) if spec.is_paper else {}
        sub = build_substrate(cfg.substrate_kind, vocab if vocab is not None else cfg.vocab_size, cfg.n_embed,
                              seed=seed, font=font, **options)
    model.set_substrate(sub.table, kind=sub.kind, frozen=is_frozen(sub.kind), meta=sub.meta)
    return model


def init_backbone(model: SubstrateForCausalLM, seed: int) -> None:
    """Initialise every weight but the substrate table from ``seed`` alone.

    The table's width differs across an ablation (16 to 1024 columns); initialising the blocks
    after it from one shared RNG stream would make the backbones differ too. Here the backbone of
    two models with the same seed and shape is bit-identical whatever their substrates.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if module is not model.token_embeddings and module is not model:
                model._init_weights(module)
