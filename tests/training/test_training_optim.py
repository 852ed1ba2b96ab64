"""AdamW groups (frozen table excluded, no decay on norms/biases), warmup + cosine, FLOP count."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from substrate_lm.errors import SubstrateError
from substrate_lm.presets import get_preset
from substrate_lm.modeling import SubstrateForCausalLM
from substrate_lm.training import (WarmupCosine, build_optimizer, build_scheduler, flops_per_token,
                                   matmul_params, param_groups)


def tiny_model(**kw):
    cfg = get_preset("tiny", vocab_size=512, bias=True, **kw)
    return SubstrateForCausalLM(cfg)


def test_frozen_table_never_reaches_the_optimizer():
    model = tiny_model()
    table = model.token_embeddings.weight
    assert not table.requires_grad
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(table) not in in_opt
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_opt == trainable
    assert opt.defaults["fused"]  # plain CPU parameters take the fused kernel


def test_no_decay_on_norms_and_biases():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(".bias" in n or "ln_" in n for n in no_decay["names"])
    assert any("ln_f" in n for n in no_decay["names"]) and any(".bias" in n for n in no_decay["names"])
    assert all(n.endswith(".weight") and "ln" not in n for n in decay["names"])
    assert "lm_head.weight" in decay["names"]
    assert "token_embeddings.weight" not in decay["names"] + no_decay["names"]


def test_trainable_table_is_optimised():
    model = tiny_model(substrate_kind="trainable", substrate_frozen=False)
    decay, _ = param_groups(model, 0.1)
    assert "token_embeddings.weight" in decay["names"]


def test_all_frozen_is_an_error():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(SubstrateError, match="no trainable parameters"):
        build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.95))


def test_warmup_then_cosine_to_min():
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(1 / 11)
    assert f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    vals = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_scheduler_drives_the_optimizer_and_round_trips():
    model = tiny_model()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    sched = build_scheduler(opt, lr=1e-3, min_lr=1e-4, warmup=2, steps=10)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3 / 3) and lrs[2] == pytest.approx(1e-3)
    state = sched.state_dict()
    assert state["lr_lambdas"][0] == {"warmup": 2, "total": 10, "min_ratio": pytest.approx(0.1)}
    opt2 = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    sched2 = build_scheduler(opt2, lr=1e-3, min_lr=1e-4, warmup=2, steps=10)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 5


def test_flops_per_token_formula_and_gpt_neox_agree():
    model = tiny_model()
    c = model.config
    n = matmul_params(model)
    # qkv + proj + fc + proj per block, plus the head; the input table is a lookup
    per_block = 3 * c.d_model**2 + c.d_model**2 + 2 * 4 * c.d_model**2
    assert n == c.n_layer * per_block + c.vocab_size * c.d_model
    T = 32
    hs = c.d_model // c.n_head
    assert flops_per_token(model, T) == 6 * n + 12 * c.n_layer * c.n_head * hs * T
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=512, hidden_size=c.d_model, num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head, intermediate_size=4 * c.d_model, max_position_embeddings=128,
        tie_word_embeddings=False))
    assert matmul_params(neox) == n
    assert math.isclose(flops_per_token(neox, T), flops_per_token(model, T))
