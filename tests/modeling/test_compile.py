"""The paper recipes set ``compile = true``: the model must compile without graph breaks.

``fullgraph=True`` turns any graph break into an error; the ``eager`` backend traces with dynamo
exactly as inductor would see the graph but skips code generation, so these run in seconds. One
test also runs inductor on a block, as the trainer does (per-block compile), and checks its numbers.
"""

from __future__ import annotations

import pytest
import torch

from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM
from substrate_lm.training.distributed import find_blocks


def tiny(bias: bool = False) -> SubstrateForCausalLM:
    torch.manual_seed(0)
    cfg = SubstrateConfig(vocab_size=97, n_embed=16, d_model=32, n_layer=2, n_head=4, block_size=32,
                          substrate_kind="trainable", substrate_frozen=False, bias=bias)
    return SubstrateForCausalLM(cfg).eval()


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("bias", [False, True])
def test_whole_model_logits_compile_without_graph_breaks(bias):
    model = tiny(bias)
    x = torch.randint(0, 97, (2, 12))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).logits, model(x).logits)


def test_chunked_loss_forward_and_backward_compile_without_graph_breaks():
    model = tiny()
    x, y = torch.randint(0, 97, (2, 12)), torch.randint(0, 97, (2, 12))

    def loss_of(m):
        return m(x, targets=y, return_logits=False).loss

    ref = loss_of(model)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    got = torch.compile(loss_of, fullgraph=True, backend="eager")(model)
    got.backward()
    torch.testing.assert_close(got, ref)
    for n, p in model.named_parameters():
        if n in ref_grads:
            torch.testing.assert_close(p.grad, ref_grads[n], msg=n)


def test_trainer_style_block_compile_with_inductor_matches_eager():
    model = tiny()
    block = find_blocks(model)[0]
    x = torch.randn(2, 12, 32)
    pos = torch.arange(12)[None]
    from substrate_lm.modeling.modeling_substrate import rope_cos_sin

    cos, sin = rope_cos_sin(pos, model.config.head_size, model.config.rope_theta, x.dtype)
    with torch.no_grad():
        ref = block(x, cos, sin)
        got = torch.compile(block, fullgraph=True)(x, cos, sin)  # inductor, as parallelize() does
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
