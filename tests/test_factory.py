"""build_model: presets + substrate, and backbones that differ only in the substrate."""

from __future__ import annotations

import pytest
import torch

from substrate_lm.errors import SubstrateError
from substrate_lm.factory import build_model


def test_same_seed_same_backbone_whatever_the_substrate():
    a = build_model("tiny", "16-bit", seed=3)
    b = build_model("tiny", "bits", seed=3)
    c = build_model("tiny", "bits", seed=4)
    assert a.config.n_embed == 16 and b.config.n_embed == 64
    same = [torch.equal(p, q) for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()) if "token_emb" not in n]
    assert all(same)
    differ = [torch.equal(p, q) for (n, p), (_, q) in zip(b.named_parameters(), c.named_parameters()) if n.endswith("qkv.weight")]
    assert not any(differ)
    # residual projections get the GPT-2 scaled init
    std_proj = torch.cat([blk.attn.proj.weight.flatten() for blk in a.blocks]).std().item()
    assert std_proj == pytest.approx(0.02 / (2 * a.config.n_layer) ** 0.5, rel=0.1)


def test_substrate_installed_and_recorded():
    m = build_model("tiny", "16-bit", seed=0)
    w = m.token_embeddings.weight
    assert not w.requires_grad and m.config.substrate_kind == "token-id"
    assert set(torch.unique(w).tolist()) == {0.0, 1.0}
    m.verify_substrate()
    t = build_model("tiny", "unfrozen", seed=0)
    assert t.token_embeddings.weight.requires_grad and t.config.substrate_kind == "trainable"


def test_bad_preset_is_a_user_error():
    with pytest.raises(SubstrateError, match="unknown preset"):
        build_model("huge")


def test_unknown_substrate_spec_names_both_trainable_aliases():
    from substrate_lm.substrates.registry import parse_spec

    assert parse_spec("unfrozen", 64) == parse_spec("trainable", 64) == ("trainable", 64)
    with pytest.raises(SubstrateError, match="unknown substrate spec") as exc:
        parse_spec("frozen-ish", 64)
    assert "unfrozen" in str(exc.value) and "trainable" in str(exc.value)
