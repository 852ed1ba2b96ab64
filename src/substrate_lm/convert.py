"""Convert a substrate-lm model to transformers' ``GPTNeoXForCausalLM`` with the same math.

GPT-NeoX configured with full rotary (``partial_rotary_factor=1``), sequential residual
(``use_parallel_residual=False``), exact GELU and an untied head computes exactly our function once
the substrate is widened into its ``embed_in`` table. Uses: the parity tests, the benchmarks'
reference model, and serving our checkpoints with any runtime that supports GPT-NeoX.
"""

from __future__ import annotations

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from .modeling import SubstrateConfig, SubstrateForCausalLM


def gpt_neox_config(config: SubstrateConfig) -> GPTNeoXConfig:
    """The GPT-NeoX config that computes the same function as ``config``."""
    return GPTNeoXConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=config.block_size,
        layer_norm_eps=config.norm_eps,
        use_parallel_residual=False,
        attention_bias=config.bias,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta, "partial_rotary_factor": 1.0},
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        attention_dropout=0.0,
        hidden_dropout=0.0,
    )


def _qkv_to_neox(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Our fused qkv rows are [q heads | k heads | v heads]; NeoX interleaves them per head."""
    d_out = weight.shape[0] // 3
    hs = d_out // n_head
    rest = weight.shape[1:]
    w = weight.reshape(3, n_head, hs, *rest)  # (3, nh, hs, ...)
    return w.transpose(0, 1).reshape(3 * d_out, *rest)  # (nh, 3, hs, ...)


@torch.no_grad()
def to_gpt_neox(model: SubstrateForCausalLM) -> GPTNeoXForCausalLM:
    """A ``GPTNeoXForCausalLM`` with ``model``'s weights (substrate widened to d_model)."""
    c = model.config
    ref = GPTNeoXForCausalLM(gpt_neox_config(c)).to(model.lm_head.weight.dtype)
    table = model.token_embeddings.weight
    ref.gpt_neox.embed_in.weight.copy_(table.repeat_interleave(c.scale, dim=1) if c.scale > 1 else table)
    for ours, theirs in zip(model.blocks, ref.gpt_neox.layers):
        theirs.input_layernorm.load_state_dict(ours.ln_1.state_dict())
        theirs.post_attention_layernorm.load_state_dict(ours.ln_2.state_dict())
        att = theirs.attention
        att.query_key_value.weight.copy_(_qkv_to_neox(ours.attn.qkv.weight, c.n_head))
        att.dense.weight.copy_(ours.attn.proj.weight)
        if c.bias:
            att.query_key_value.bias.copy_(_qkv_to_neox(ours.attn.qkv.bias, c.n_head))
            att.dense.bias.copy_(ours.attn.proj.bias)
        mlp = theirs.mlp
        mlp.dense_h_to_4h.weight.copy_(ours.mlp.fc.weight)
        mlp.dense_4h_to_h.weight.copy_(ours.mlp.proj.weight)
        # NeoX's MLP always has biases; ours are zero when bias=False
        mlp.dense_h_to_4h.bias.copy_(ours.mlp.fc.bias if c.bias else torch.zeros_like(mlp.dense_h_to_4h.bias))
        mlp.dense_4h_to_h.bias.copy_(ours.mlp.proj.bias if c.bias else torch.zeros_like(mlp.dense_4h_to_h.bias))
    ref.gpt_neox.final_layer_norm.load_state_dict(model.ln_f.state_dict())
    ref.lm_head.weight.copy_(model.lm_head.weight)
    return ref.eval() if not model.training else ref
