"""Lean greedy decoding (issue 16): the same tokens as transformers' generate loop, faster.

The reference is ``GenerationMixin.generate`` itself (HF's loop calling our ``forward``), reached by
setting ``fast_greedy = False``; the int8 head screen is checked against the fp32 head it stands in for.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM
from substrate_lm.modeling.generation_substrate import HeadScreen

V = 2048


def make_model(seed=0, head_scale=1.0, eos=None):
    torch.manual_seed(seed)
    cfg = SubstrateConfig(vocab_size=V, n_embed=16, d_model=64, n_layer=2, n_head=4, block_size=48,
                          substrate_kind="float", eos_token_id=eos)
    model = SubstrateForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("token_embeddings"):
                p.add_(torch.randn_like(p) * 0.1)
        model.lm_head.weight.mul_(head_scale)
    model.set_substrate(F.normalize(torch.randn(V, 16), dim=-1), kind="float")
    model.screen_min_head = 0  # screen this small head too, so the test exercises it
    return model


def hf_generate(model, *args, **kwargs):
    model.fast_greedy = False
    try:
        return model.generate(*args, **kwargs)
    finally:
        model.fast_greedy = True


def test_screen_bound_holds_and_argmax_is_the_fp32_one():
    torch.manual_seed(0)
    w = torch.randn(V, 64) * torch.rand(V, 1) * 0.5  # rows of different norms
    screen = HeadScreen(w)
    certified = 0
    for scale in (0.1, 1.0, 10.0, 100.0):
        h = torch.randn(64, 64) * scale
        f = F.linear(h, w)
        s, e, _ = screen.bounds(h)
        assert bool(((s - f).abs() <= e).all()), float(((s - f).abs() - e).max())
        for i in range(h.shape[0]):
            tok = screen.argmax(h[i : i + 1])
            if tok is not None:
                certified += 1
                assert int(tok) == int(f[i].argmax())
    assert certified > 200  # the screen decides almost every step itself


def test_screen_refuses_ties_and_the_model_falls_back_to_the_first_index():
    model = make_model()
    with torch.no_grad():
        w = model.lm_head.weight
        w[1234] = w[77]  # an exact tie between two rows
        h = (w[77] * 50).reshape(1, 1, -1)  # points at both rows, far above every other one
    assert HeadScreen(w).argmax(h[:, 0]) is None
    assert int(model._greedy_tokens(h)) == 77 == int(model.lm_head(h)[0, -1].argmax())


@pytest.mark.parametrize("head_scale", [1.0, 20.0])
def test_batch_one_greedy_matches_hf_token_for_token(head_scale):
    model = make_model(head_scale=head_scale)
    ids = torch.randint(1, V, (1, 7), generator=torch.Generator().manual_seed(1))
    kw = dict(max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert model._fast_greedy_plan(ids, kw) is not None  # the lean loop is what runs
    fast = model.generate(ids, **kw)
    assert "_head_screen" in model.__dict__
    assert torch.equal(fast, hf_generate(model, ids, **kw))
    assert fast.shape == (1, 37)
    # the published call form generate(ids, n), greedy
    assert torch.equal(model.generate(ids, 30, do_sample=False, pad_token_id=0), fast)


def test_left_padded_batch_with_eos_matches_hf():
    model = make_model(seed=3, eos=5)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(6, V, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    ids[0, :4] = 0
    mask[0, :4] = 0
    ids[2, :2] = 0
    mask[2, :2] = 0
    # make EOS likely for some rows: the first row's prompt ends with tokens whose successor is EOS
    with torch.no_grad():
        model.lm_head.weight[5] += 0.5 * model.lm_head.weight.mean(0)
    kw = dict(attention_mask=mask, max_new_tokens=25, do_sample=False, pad_token_id=0)
    assert model._fast_greedy_plan(ids, kw) is not None
    fast = model.generate(ids, **kw)
    assert torch.equal(fast, hf_generate(model, ids, **kw))


def test_eos_stops_a_single_prompt_like_hf():
    model = make_model(seed=4)
    ids = torch.randint(1, V, (1, 5), generator=torch.Generator().manual_seed(3))
    first = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    eos = int(first[0, 5 + 3])  # the 4th generated token becomes EOS
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=eos)
    fast = model.generate(ids, **kw)
    assert torch.equal(fast, hf_generate(model, ids, **kw))
    assert fast.shape[1] <= 5 + 4


def test_screen_follows_weight_updates():
    model = make_model(seed=5)
    ids = torch.randint(1, V, (1, 6), generator=torch.Generator().manual_seed(4))
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    model.generate(ids, **kw)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # in place: the same storage, a new version
    assert torch.equal(model.generate(ids, **kw), hf_generate(model, ids, **kw))


@pytest.mark.parametrize("kwargs", [
    dict(do_sample=True),  # sampling
    dict(do_sample=False, num_beams=2),
    dict(do_sample=False, repetition_penalty=1.3),
    dict(do_sample=False, output_scores=True, return_dict_in_generate=True),
    dict(do_sample=False, max_new_tokens=60),  # past the 48-token context: HF's sliding cache
])
def test_anything_but_plain_greedy_takes_hfs_path(kwargs):
    model = make_model()
    ids = torch.randint(1, V, (1, 6), generator=torch.Generator().manual_seed(5))
    kw = {"max_new_tokens": 5, "pad_token_id": 0, **kwargs}
    assert model._fast_greedy_plan(ids, kw) is None


def test_model_default_sampling_is_not_taken_over():
    model = make_model()
    ids = torch.randint(1, V, (1, 6), generator=torch.Generator().manual_seed(6))
    assert model.generation_config.do_sample  # the published default samples
    assert model._fast_greedy_plan(ids, dict(max_new_tokens=5)) is None
    # a pad token inside an unmasked prompt: HF infers a mask from it, so its loop runs
    assert model._fast_greedy_plan(ids, dict(max_new_tokens=5, do_sample=False, pad_token_id=int(ids[0, 2]))) is None


def test_streamer_sees_what_hfs_loop_shows_it():
    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    model = make_model(seed=6)
    ids = torch.randint(1, V, (1, 5), generator=torch.Generator().manual_seed(7))
    fast, slow = Recorder(), Recorder()
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert model._fast_greedy_plan(ids, {**kw, "streamer": fast}) is not None
    out = model.generate(ids, streamer=fast, **kw)
    assert torch.equal(out, hf_generate(model, ids, streamer=slow, **kw))
    assert fast.calls == slow.calls and fast.calls[-1] == "end" and len(fast.calls) == 10
