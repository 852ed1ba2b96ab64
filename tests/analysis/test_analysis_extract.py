"""Extraction pools exactly the span's tokens, per layer, with padding, for any HF causal LM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from substrate_lm.analysis.cka import linear_cka
from substrate_lm.analysis.extract import SUBSTRATE, extract_representations, resolve_layers, span_token_mask
from substrate_lm.errors import SubstrateError
from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM


def test_span_token_mask_overlap_rules():
    # BOS (0,0), "Hi", " Zor" (leading space included), "blax", ".", trailing
    offsets = [(0, 0), (0, 2), (2, 6), (6, 10), (10, 11)]
    assert span_token_mask(offsets, 3, 10) == [False, False, True, True, False]
    assert span_token_mask(offsets, 0, 2) == [False, True, False, False, False]
    assert span_token_mask(offsets, 10, 11) == [False, False, False, False, True]
    # a span ending exactly where a token starts does not take that token
    assert span_token_mask(offsets, 2, 6) == [False, False, True, False, False]


def test_resolve_layers():
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers("0,-1", 4) == [0, 3]
    assert resolve_layers([2, 2, 1], 4) == [1, 2]
    with pytest.raises(SubstrateError):
        resolve_layers([4], 4)
    with pytest.raises(SubstrateError):
        resolve_layers("a,b", 4)


def _reference(model, tok, item):
    """Unbatched, unpadded, untruncated pooling of one item, computed independently."""
    enc = tok(item["text"], return_offsets_mapping=True)
    ids = enc["input_ids"]
    sel = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < item["end"] and e > item["start"]]
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    table = model.get_input_embeddings().weight.detach()
    sub = table[torch.tensor([ids[i] for i in sel])].mean(0).numpy()
    return sel, ids, sub, [h[0, sel].mean(0).numpy() for h in hs]


def test_pools_the_span_tokens_in_every_layer(bpe_tokenizer, tiny_neox, items):
    tok, model = bpe_tokenizer, tiny_neox
    chosen = items[:9]  # different lengths and positions -> padding inside batches
    reps = extract_representations(model, tok, chosen, batch_size=4)
    n_layer = model.config.num_hidden_layers
    assert reps.names == [SUBSTRATE] + [str(i) for i in range(n_layer + 1)]
    assert len(reps.arrays) == n_layer + 2
    assert reps.valid.all()
    for r, item in enumerate(chosen):
        sel, ids, sub, per_layer = _reference(model, tok, item)
        # the pooled tokens are the name's tokens: they decode to the name (plus a leading space)
        assert tok.decode([ids[i] for i in sel]).strip() == item["text"][item["start"] : item["end"]]
        assert len(sel) >= 2  # invented names are several BPE tokens
        assert reps.n_tokens[r] == len(sel)
        np.testing.assert_allclose(reps[SUBSTRATE][r], sub, atol=1e-6)
        for k in range(n_layer + 1):
            np.testing.assert_allclose(reps[str(k)][r], per_layer[k], atol=1e-4, rtol=1e-4)


def test_items_in_different_batches_give_identical_rows(bpe_tokenizer, tiny_neox, items):
    a = extract_representations(tiny_neox, bpe_tokenizer, items[:12], batch_size=1)
    b = extract_representations(tiny_neox, bpe_tokenizer, items[:12], batch_size=5)
    for x, y in zip(a.arrays, b.arrays):
        np.testing.assert_allclose(x, y, atol=1e-4, rtol=1e-4)


def test_layer_selection_and_no_substrate(bpe_tokenizer, neox_factory, items):
    model = neox_factory(len(bpe_tokenizer)).train()
    reps = extract_representations(model, bpe_tokenizer, items[:4], layers="0,-1", include_substrate=False)
    assert model.training  # extraction runs in eval mode and restores the caller's mode
    tiny_neox = model
    assert reps.names == ["0", str(tiny_neox.config.num_hidden_layers)]
    assert reps.meta["n_layer"] == tiny_neox.config.num_hidden_layers
    assert reps.meta["hidden_size"] == tiny_neox.config.hidden_size


def test_long_context_keeps_the_window_ending_at_the_span(bpe_tokenizer, neox_factory):
    model = neox_factory(len(bpe_tokenizer), n_layer=1)
    model.config.max_position_embeddings = 16  # force truncation: the window must end at the name
    prefix = "Everyone knows that the river is old. " * 6
    item = {"text": prefix + "Zorblakin appeared.", "start": len(prefix), "end": len(prefix) + 9, "label": "x", "entity": "e"}
    reps = extract_representations(model, bpe_tokenizer, [item])
    assert reps.valid.all() and reps.n_tokens[0] >= 2


def test_span_without_tokens_is_marked_invalid(bpe_tokenizer, tiny_neox):
    class NoOffsets:
        """A fast-looking tokenizer whose offsets are all empty (a broken conversion)."""

        is_fast = True
        pad_token_id = 0
        model_max_length = 64

        def __call__(self, texts, **kw):
            ids = [bpe_tokenizer(t)["input_ids"] for t in texts]
            return {"input_ids": ids, "offset_mapping": [[(0, 0)] * len(i) for i in ids]}

    item = {"text": "Zorbla is here.", "start": 0, "end": 6, "label": "a", "entity": "e"}
    reps = extract_representations(tiny_neox, NoOffsets(), [item])
    assert not reps.valid[0] and reps.n_tokens[0] == 0


def test_slow_tokenizer_and_no_items_are_rejected(tiny_neox):
    class Slow:
        is_fast = False

    with pytest.raises(SubstrateError, match="fast tokenizer"):
        extract_representations(tiny_neox, Slow(), [{"text": "ab", "start": 0, "end": 1, "label": "x", "entity": "e"}])
    with pytest.raises(SubstrateError, match="no probe items"):
        extract_representations(tiny_neox, Slow(), [])


def test_substrate_model_layer_count(bpe_tokenizer, items):
    cfg = SubstrateConfig(vocab_size=len(bpe_tokenizer), n_embed=16, d_model=32, n_layer=2, n_head=4, block_size=64)
    model = SubstrateForCausalLM(cfg).eval()
    reps = extract_representations(model, bpe_tokenizer, items[:8], batch_size=3)
    assert reps.names == [SUBSTRATE, "0", "1", "2"]
    assert reps[SUBSTRATE].shape[1] == 16 and reps["0"].shape[1] == 32
    for r, item in enumerate(items[:8]):
        sel, _, sub, per_layer = _reference(model, bpe_tokenizer, item)
        np.testing.assert_allclose(reps[SUBSTRATE][r], sub, atol=1e-6)
        np.testing.assert_allclose(reps["2"][r], per_layer[2], atol=1e-4, rtol=1e-4)
    # hidden state 0 is the expanded substrate (repeat_interleave): same linear geometry
    assert linear_cka(reps[SUBSTRATE], reps["0"]) == pytest.approx(1.0, abs=1e-4)
