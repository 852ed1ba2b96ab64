"""Backbone tests: parity with GPT-NeoX, KV cache, padding, loss paths, substrate freezing, configs."""

from __future__ import annotations

import pytest
import torch

from substrate_lm.convert import to_gpt_neox
from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM, chunked_cross_entropy, substrate_fingerprint
from substrate_lm.presets import PRESETS, get_preset

V = 300


def tiny(seed=0, **kw) -> SubstrateForCausalLM:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, n_embed=16, d_model=64, n_layer=2, n_head=4, block_size=96)
    cfg.update(kw)
    model = SubstrateForCausalLM(SubstrateConfig(**cfg)).eval()
    with torch.no_grad():  # move every weight off its init so the parity test exercises all of them
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n_embed", [16, 64])
def test_logits_match_gpt_neox(bias, n_embed):
    model = tiny(bias=bias, n_embed=n_embed)
    ref = to_gpt_neox(model).eval()
    x = torch.randint(0, V, (3, 50))
    mask = torch.ones_like(x)
    mask[0, :7] = 0  # left padding
    with torch.no_grad():
        ours, theirs = model(x).logits, ref(x).logits
        assert (ours - theirs).abs().max().item() <= 1e-5
        ours_m = model(x, attention_mask=mask).logits
        theirs_m = ref(x, attention_mask=mask).logits
        real = mask.bool()
        assert (ours_m[real] - theirs_m[real]).abs().max().item() <= 1e-5
        # non-vacuous: a changed weight must show up in the comparison
        model.blocks[-1].mlp.fc.weight.add_(0.1)
        assert (model(x).logits - theirs).abs().max().item() > 1e-3


def test_kv_cache_decode_equals_full_recompute():
    model = tiny()
    x = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        full = model(x).logits
        out = model(x[:, :12], use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(12, 20):
            o = model(x[:, t : t + 1], cache=cache, use_cache=True)
            cache = o.cache
            steps.append(o.logits)
        inc = torch.cat(steps, dim=1)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=1e-5)
    # the legacy argument name is accepted too
    with torch.no_grad():
        o1 = model(x[:, :12], use_cache=True)
        o2 = model(x[:, 12:13], past_key_values=o1.cache, use_cache=True)
    torch.testing.assert_close(o2.logits[:, 0], full[:, 12], atol=1e-5, rtol=1e-5)


def test_greedy_tokens_identical_with_and_without_cache():
    model = tiny(seed=1)
    ids = torch.randint(0, V, (1, 10))
    a = model.generate(ids, max_new_tokens=30, do_sample=False, use_cache=True)
    b = model.generate(ids, max_new_tokens=30, do_sample=False, use_cache=False)
    assert a.shape == (1, 40)
    assert torch.equal(a, b)


def test_batched_left_padded_generation_equals_one_by_one():
    model = tiny(seed=2)
    pad = 0
    prompts = [torch.randint(1, V, (n,)) for n in (5, 11, 8)]
    width = max(len(p) for p in prompts)
    batch = torch.full((3, width), pad)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    out = model.generate(batch, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=pad)
    for i, p in enumerate(prompts):
        single = model.generate(p[None], max_new_tokens=12, do_sample=False, pad_token_id=pad)
        assert torch.equal(out[i, width:], single[0, len(p) :]), f"prompt {i} differs"


def test_positional_generate_and_sampling_default():
    model = tiny(seed=3)
    ids = torch.randint(0, V, (1, 6))
    assert model.generation_config.do_sample is True
    torch.manual_seed(0)
    a = model.generate(ids, 25)  # the published call form: max_new_tokens as 2nd positional arg
    torch.manual_seed(1)
    b = model.generate(ids, 25)
    assert a.shape == (1, 31) and b.shape == (1, 31)
    assert not torch.equal(a, b), "sampling by default should vary with the seed"
    g1 = model.generate(ids, 25, do_sample=False)
    g2 = model.generate(ids, 25, do_sample=False)
    assert torch.equal(g1, g2)
    with pytest.raises(TypeError):
        model.generate(ids, 5, max_new_tokens=5)


def test_logits_to_keep_and_hidden_states():
    model = tiny(n_embed=16)
    x = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        full = model(x, output_hidden_states=True)
        last = model(x, logits_to_keep=1)
    assert last.logits.shape == (2, 1, V)
    torch.testing.assert_close(last.logits[:, 0], full.logits[:, -1])
    hs = full.hidden_states
    assert len(hs) == model.config.n_layer + 1
    # layer 0 is the substrate row widened by repeat_interleave(scale)
    expect0 = model.token_embeddings(x).repeat_interleave(model.config.scale, dim=-1)
    torch.testing.assert_close(hs[0], expect0)
    torch.testing.assert_close(model.lm_head(hs[-1]), full.logits)


@pytest.mark.parametrize("use_targets", [False, True])
def test_chunked_loss_equals_full_loss_and_grads(use_targets):
    model = tiny(n_embed=64)
    model.train()
    model.config.loss_chunk_size = 7  # several chunks, one ragged
    x = torch.randint(0, V, (2, 13))
    y = x.clone()
    y[0, 3] = -100
    kw = {"targets": y} if use_targets else {"labels": y}
    ref = model(x, **kw)
    ref.loss.backward()
    g_ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out = model(x, return_logits=False, **kw)
    assert out.logits is None
    out.loss.backward()
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-6)
    for n, p in model.named_parameters():
        if n in g_ref:
            torch.testing.assert_close(p.grad, g_ref[n], atol=1e-6, rtol=1e-5, msg=n)


def test_chunked_loss_under_bf16_autocast_is_close():
    torch.manual_seed(0)
    h = torch.randn(37, 32, requires_grad=True)
    w = torch.randn(V, 32, requires_grad=True)
    t = torch.randint(0, V, (37,))
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_cross_entropy(h, w, t, chunk=8)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 0.05 * ref.item()
    loss.backward()
    assert h.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def test_frozen_table_is_untouched_by_a_step_and_trainable_one_moves():
    for kind, frozen in (("bits", True), ("trainable", False)):
        model = tiny(substrate_kind=kind)
        model.train()
        table = (torch.rand(V, 16) > 0.5).float()
        model.set_substrate(table, kind=kind)
        assert model.token_embeddings.weight.requires_grad is (not frozen)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2)
        x = torch.randint(0, V, (2, 16))
        model(x, labels=x).loss.backward()
        opt.step()
        w = model.token_embeddings.weight
        if frozen:
            assert w.grad is None
            assert torch.equal(w, table)
            assert model.config.substrate_fingerprint == substrate_fingerprint(table)
        else:
            assert not torch.equal(w, table)


@pytest.mark.parametrize(
    "preset,lo,hi",
    [("1024-bit", 335.5e6, 335.7e6), ("256-bit", 285.2e6, 285.4e6), ("64-bit", 272.6e6, 272.8e6), ("16-bit", 269.4e6, 269.6e6)],
)
def test_paper_preset_parameter_counts(preset, lo, hi):
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = SubstrateForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert lo <= n <= hi, n
    assert (cfg.d_model, cfg.n_layer, cfg.n_head, cfg.block_size, cfg.vocab_size) == (1024, 16, 32, 1024, 65536)
    assert cfg.scale == 1024 // cfg.n_embed
    assert not model.token_embeddings.weight.requires_grad


def test_every_preset_builds_on_meta():
    for name in PRESETS:
        with torch.device("meta"):
            SubstrateForCausalLM(get_preset(name))


def test_hf_attribute_names():
    cfg = get_preset("1024-bit")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.max_position_embeddings) == (
        1024,
        16,
        32,
        1024,
    )
    assert {k: getattr(cfg, k) for k in ["vocab_size", "n_embed", "d_model", "n_layer", "n_head", "scale"]} == {
        "vocab_size": 65536,
        "n_embed": 1024,
        "d_model": 1024,
        "n_layer": 16,
        "n_head": 32,
        "scale": 1,
    }


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(d_model=64, n_head=5), "n_head=5 does not divide d_model=64"),
        (dict(d_model=64, n_embed=24), "n_embed=24 does not divide d_model=64"),
        (dict(d_model=64, n_embed=16, scale=2), "scale=2 disagrees with d_model/n_embed=4"),
        (dict(substrate_kind="nope"), "unknown substrate_kind"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
    ],
)
def test_bad_configs_fail_clearly(kw, needle):
    base = dict(vocab_size=V, n_embed=16, d_model=64, n_layer=2, n_head=4)
    base.update(kw)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        SubstrateConfig(**base)


def test_set_substrate_rejects_wrong_shape_and_context_overflow():
    model = tiny()
    with pytest.raises(ValueError, match="shape"):
        model.set_substrate(torch.zeros(V + 1, 16))
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, 97, dtype=torch.long))
