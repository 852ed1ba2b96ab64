"""Build a model from a preset with its substrate installed: the one place that joins presets,
tokenizer and substrate (used by ``init``, the trainer, the demo and growth)."""

from __future__ import annotations

from .errors import SubstrateError


def build_model(preset: str, substrate: str | None = None, tokenizer=None, seed: int = 0, font=None, overrides=None):
    """A fresh model from a preset with its substrate installed (used by init, training and the demo).

    Without a tokenizer the vocabulary is only a size, which suffices for every kind but glyph.
    """
    import torch

    from .modeling import SubstrateForCausalLM
    from .presets import get_preset

    overrides = dict(overrides or {})
    if tokenizer is not None:
        overrides.setdefault("vocab_size", len(tokenizer))
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, attr, None) is not None:
                overrides.setdefault(attr, getattr(tokenizer, attr))
    try:
        cfg = get_preset(preset, substrate=substrate, **overrides)
    except (ValueError, TypeError) as exc:
        raise SubstrateError(str(exc)) from None
    torch.manual_seed(seed)
    model = SubstrateForCausalLM(cfg)
    from .substrates import build_substrate

    if tokenizer is not None:
        from .tokenizer import vocab_strings

        vocab = vocab_strings(tokenizer)
    elif cfg.substrate_kind == "glyph":
        raise SubstrateError("a glyph substrate renders the vocabulary's strings: pass --tokenizer DIR")
    else:
        vocab = cfg.vocab_size
    sub = build_substrate(cfg.substrate_kind, vocab, cfg.n_embed, seed=seed, font=font)
    model.set_substrate(sub.table, kind=sub.kind, frozen=cfg.substrate_kind != "trainable", meta=sub.meta)
    return model
