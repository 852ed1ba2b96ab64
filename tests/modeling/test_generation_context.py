"""Generation past the context: long prompts are cropped, the KV cache slides (issue 15).

The references are independent of the cache code: a model whose cache keeps the newest
``block_size`` entries computes exactly what a full forward pass computes with a banded causal
mask (each query sees itself and the ``block_size - 1`` tokens before it) on a copy of the model
with a larger context; without a cache, every step is nanoGPT's crop of the last ``block_size``
tokens.
"""

from __future__ import annotations

import pytest
import torch

from substrate_lm.modeling import ComposedForCausalLM, SubstrateConfig, SubstrateForCausalLM

V, BLOCK = 61, 12


def make_model(seed=0, block=BLOCK):
    torch.manual_seed(seed)
    cfg = SubstrateConfig(vocab_size=V, n_embed=8, d_model=32, n_layer=2, n_head=4, block_size=block,
                          substrate_kind="float")
    model = SubstrateForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("token_embeddings"):
                p.add_(torch.randn_like(p) * 0.3)  # far from init, so that every position matters
    model.set_substrate(torch.nn.functional.normalize(torch.randn(V, 8), dim=-1), kind="float")
    return model


def wide_copy(model, block=256):
    """The same weights with a context long enough to see the whole sequence at once."""
    cfg = SubstrateConfig(**{**model.config.to_dict(), "block_size": block})
    wide = SubstrateForCausalLM(cfg).eval()
    wide.load_state_dict(model.state_dict())
    return wide


def banded_logits(wide, seq, window):
    """Logits of a full forward pass where each query sees only the last ``window`` keys."""
    L = seq.shape[1]
    q = torch.arange(L)[:, None]
    k = torch.arange(L)[None, :]
    mask = ((k <= q) & (k > q - window))[None, None]  # (1, 1, L, L)
    with torch.no_grad():
        return wide(seq, attention_mask=mask).logits


def test_forward_past_the_context_is_still_an_error():
    model = make_model()
    with pytest.raises(ValueError, match="exceeds the context length"):
        model(torch.randint(0, V, (1, BLOCK + 1)))


def test_cached_generation_slides_like_a_banded_window():
    model = make_model()
    prompt = torch.randint(0, V, (2, 5))
    new = 3 * BLOCK  # far past the context
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=new, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
    seq = out.sequences
    assert seq.shape == (2, 5 + new)
    ref = banded_logits(wide_copy(model), seq[:, :-1], BLOCK)  # (2, L-1, V)
    scores = torch.stack(out.scores, dim=1)  # (2, new, V): the logits of each generated position
    torch.testing.assert_close(scores, ref[:, 4:], rtol=1e-4, atol=1e-4)
    assert torch.equal(seq[:, 5:], ref[:, 4:].argmax(-1))


def test_long_prompt_keeps_its_last_block_tokens():
    model = make_model(1)
    prompt = torch.randint(0, V, (1, 3 * BLOCK + 2))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=2 * BLOCK, do_sample=False)
    assert torch.equal(out[:, : prompt.shape[1]], prompt)
    # the model only ever saw the prompt's last BLOCK tokens, then a window sliding from there
    kept = out[:, prompt.shape[1] - BLOCK :]
    ref = banded_logits(wide_copy(model), kept[:, :-1], BLOCK)
    assert torch.equal(kept[:, BLOCK:], ref[:, BLOCK - 1 :].argmax(-1))


def test_generation_without_cache_is_nanogpt_crop():
    model = make_model(2)
    prompt = torch.randint(0, V, (1, 7))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=2 * BLOCK, do_sample=False, use_cache=False)
        idx = prompt
        for _ in range(2 * BLOCK):  # nanoGPT: idx_cond = idx[:, -block_size:]
            logits = model(idx[:, -BLOCK:], use_cache=False).logits
            idx = torch.cat([idx, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, idx)


def test_left_padded_batch_past_the_context_equals_one_by_one():
    model = make_model(3)
    a, b = torch.randint(0, V, (1, 9)), torch.randint(0, V, (1, 4))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 5, dtype=torch.long), b], 1)])
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        both = model.generate(ids, attention_mask=mask, max_new_tokens=2 * BLOCK, do_sample=False, pad_token_id=0)
        one_a = model.generate(a, max_new_tokens=2 * BLOCK, do_sample=False)
        one_b = model.generate(b, max_new_tokens=2 * BLOCK, do_sample=False)
    assert torch.equal(both[0, 9:], one_a[0, 9:])
    # row b's window holds 5 pad columns until they slide out: its first BLOCK - 9 tokens are exact
    assert torch.equal(both[1, 9 : 9 + BLOCK - 9], one_b[0, 4 : 4 + BLOCK - 9])


def test_composed_model_generates_past_the_context():
    from substrate_lm.docking import compose

    a, b = make_model(4), make_model(5)
    with torch.no_grad():
        b.token_embeddings.weight.copy_(a.token_embeddings.weight)
    b.config.substrate_fingerprint = a.config.substrate_fingerprint
    moe = compose([a, b])
    assert isinstance(moe, ComposedForCausalLM)
    prompt = torch.randint(0, V, (1, 2 * BLOCK))
    with torch.no_grad():
        out = moe.generate(prompt, max_new_tokens=3 * BLOCK, do_sample=False)
    assert out.shape == (1, 5 * BLOCK)


def test_pipeline_with_a_long_prompt(tmp_path):
    from transformers import pipeline

    from substrate_lm.tokenizer import build_from_stats

    stats = [{"lang": "en", "language_name": "English", "top_ngrams": {2: [("th", 5)], 3: [("the", 2)]}}]
    tok = build_from_stats(stats)
    torch.manual_seed(0)
    cfg = SubstrateConfig(vocab_size=len(tok), n_embed=16, d_model=32, n_layer=1, n_head=2, block_size=16,
                          substrate_kind="float")
    model = SubstrateForCausalLM(cfg).eval()
    model.set_substrate(torch.nn.functional.normalize(torch.randn(len(tok), 16), dim=-1), kind="float")
    gen = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    text = "the other thing " * 10  # far more than 16 tokens
    out = gen(text, max_new_tokens=40, do_sample=False)
    assert out[0]["generated_text"].startswith(text) and len(out[0]["generated_text"]) > len(text)
