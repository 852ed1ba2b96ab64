"""The substrate-lm model: a GPT-like decoder on a frozen, non-semantic token-embedding table.

Architecture of Bochkov's "Emergent Semantics" family (Model_1024_BIT and its siblings):

    ids --token_embeddings (V x n_embed, frozen unless trainable)--> repeat_interleave(scale)
        --> n_layer x [x + attn(ln_1(x)); x + mlp(ln_2(x))]      (pre-norm, RoPE, SDPA, GELU MLP)
        --> ln_f --> lm_head (untied, d_model -> V)

This file is exported next to the weights by ``save_pretrained`` and loaded with
``trust_remote_code=True``: it imports only torch, transformers and its sibling files, which are
exported with it (transformers copies every relatively imported sibling):

    configuration_substrate.py  the config
    loss_substrate.py           next-token cross-entropy, chunked without logits
    integrity_substrate.py      the table's fingerprint and the sha256 of the weight files, checked
                                by save_pretrained / from_pretrained
    generation_substrate.py     generate(ids, n), cropping to the context, exact fast greedy decoding

Shape legend: B batch, T query length, S key length (cache + T), V vocab, C = d_model,
E = n_embed, nh heads, hs head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_substrate import SUBSTRATE_KINDS, SubstrateConfig
from .generation_substrate import GreedyDecodingMixin, cache_dropped, slide_cache
from .integrity_substrate import CheckedWeightsMixin, substrate_fingerprint
from .loss_substrate import causal_lm_loss, keep_positions, wants_loss


# ----------------------------------------------------------------------------------------------
# rotary position embeddings (full head dimension, GPT-NeoX "rotate_half" layout)


def rope_cos_sin(position_ids: torch.Tensor, head_size: int, theta: float, dtype: torch.dtype):
    """cos/sin tables for positions ``position_ids`` [B, T] -> two tensors [B, 1, T, hs].

    Computed on the fly (no buffers), so meta-device construction and loading need no special care.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_size, 2, device=position_ids.device, dtype=torch.float32) / head_size)
    )  # (hs/2,)
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hs)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


# ----------------------------------------------------------------------------------------------
# blocks


class SubstrateAttention(nn.Module):
    """Causal multi-head self-attention with RoPE, PyTorch SDPA and an optional KV cache."""

    def __init__(self, config: SubstrateConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_size = config.d_model // config.n_head
        self.dropout = float(config.dropout)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.proj.is_residual_proj = True

    def forward(self, x, cos, sin, mask=None, cache: Cache | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_size).unbind(dim=2)  # 3 x (B, T, nh, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs)
        dropout_p = self.dropout if self.training else 0.0
        if mask is None:
            # no padding and either no past (plain causal) or a single new token (sees everything)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class SubstrateMLP(nn.Module):
    def __init__(self, config: SubstrateConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=config.bias)
        self.proj.is_residual_proj = True

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))  # exact (erf) GELU


class SubstrateBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: SubstrateConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.attn = SubstrateAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.mlp = SubstrateMLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask=None, cache=None):
        x = x + self.drop(self.attn(self.ln_1(x), cos, sin, mask, cache))
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x


# ----------------------------------------------------------------------------------------------
# the model


class SubstratePreTrainedModel(PreTrainedModel):
    config_class = SubstrateConfig
    config: SubstrateConfig
    base_model_prefix = "substrate"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SubstrateBlock"]
    _supports_sdpa = True
    _can_compile_fullgraph = False
    _supports_attention_backend = False

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_proj", False):
                # GPT-2: projections into the residual stream scaled by 1/sqrt(2 * n_layer)
                std = std / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # a trainable baseline table starts as N(0, std); frozen kinds are overwritten by
            # set_substrate (until then the table is a random float stand-in)
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SubstrateForCausalLM(CheckedWeightsMixin, GreedyDecodingMixin, SubstratePreTrainedModel, GenerationMixin):
    """GPT-like causal LM whose input table ``token_embeddings`` is a (frozen) substrate.

    Saving records and loading checks the table's fingerprint and the weight files' sha256
    (:class:`CheckedWeightsMixin`); ``generate`` samples by default, accepts ``generate(ids, n)``
    and runs plain greedy searches in an exact lean loop (:class:`GreedyDecodingMixin`).
    """

    def __init__(self, config: SubstrateConfig):
        super().__init__(config)
        self.token_embeddings = nn.Embedding(config.vocab_size, config.n_embed)
        self.blocks = nn.ModuleList(SubstrateBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        self.token_embeddings.weight.requires_grad_(not config.substrate_frozen)
        self._sample_by_default()

    # -- HF plumbing -----------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.token_embeddings

    def set_input_embeddings(self, value):
        self.token_embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    # -- substrate -------------------------------------------------------------------------------
    @torch.no_grad()
    def set_substrate(self, table: torch.Tensor, kind: str | None = None, frozen: bool | None = None, meta=None):
        """Install a [vocab_size, n_embed] table; record its kind and fingerprint in the config."""
        table = torch.as_tensor(table)
        expected = (self.config.vocab_size, self.config.n_embed)
        if tuple(table.shape) != expected:
            raise ValueError(
                f"substrate table has shape {tuple(table.shape)} but the model expects {expected} "
                f"(vocab_size, n_embed); build the substrate for this vocabulary and width"
            )
        kind = kind or self.config.substrate_kind
        frozen = (kind != "trainable") if frozen is None else bool(frozen)
        if kind not in SUBSTRATE_KINDS:
            raise ValueError(f"unknown substrate kind {kind!r}; choose one of {', '.join(SUBSTRATE_KINDS)}")
        self.token_embeddings.weight.copy_(table.to(self.token_embeddings.weight.dtype))
        self.token_embeddings.weight.requires_grad_(not frozen)
        self.config.substrate_kind = kind
        self.config.substrate_frozen = frozen
        self.config.substrate_fingerprint = substrate_fingerprint(self.token_embeddings.weight)
        if meta is not None:
            self.config.substrate_meta = dict(meta)
        return self.config.substrate_fingerprint

    # -- forward ---------------------------------------------------------------------------------
    def _attention_mask(self, attention_mask, B, T, past, device):
        """Boolean SDPA mask (B, 1, T, S) or None when plain causal attention suffices."""
        S = past + T
        if attention_mask is not None and attention_mask.dim() == 4:
            return attention_mask  # a prepared 4-D mask is used as given
        if attention_mask is not None:
            attention_mask = attention_mask[:, -S:]  # the columns of the cache that is left, and of x
        pad = attention_mask is not None and not bool(attention_mask.all())
        if not pad and (past == 0 or T == 1):
            return None
        q_pos = torch.arange(past, S, device=device)[:, None]  # (T, 1)
        k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
        if pad:
            mask = mask & attention_mask[:, None, None, :].bool()  # (B, 1, T, S)
        # a left-pad query sees no key at all; let it see everything to keep SDPA finite
        return mask | ~mask.any(dim=-1, keepdim=True)

    def _trunk(self, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache, output_hidden_states):
        """Embedding, blocks and final norm: ``(x (B, T, C) after ln_f, cache, hidden states or None)``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            x = self.token_embeddings(input_ids)  # (B, T, E)
            if self.config.scale > 1:
                x = x.repeat_interleave(self.config.scale, dim=-1)  # (B, T, C), non-trainable widening
        else:
            x = inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        block = self.config.block_size
        if past + T > block:
            # past the context with a cache (generation): the oldest cache entries slide out
            if past == 0 or T > block or not slide_cache(cache, block - T, self.config.n_layer):
                raise ValueError(
                    f"sequence of {past + T} tokens exceeds the context length block_size={block}; "
                    f"generate() crops to the context, a forward pass does not"
                )
            past = block - T
        if position_ids is None:
            start = past + cache_dropped(cache, self.config.n_layer)
            position_ids = torch.arange(start, start + T, device=x.device)[None].expand(B, T)
        cos, sin = rope_cos_sin(position_ids, self.config.head_size, self.config.rope_theta, x.dtype)
        mask = self._attention_mask(attention_mask, B, T, past, x.device)

        hidden_states = [x] if output_hidden_states else None
        for blk in self.blocks:
            x = blk(x, cos, sin, mask=mask, cache=cache)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.ln_f(x)  # (B, T, C)
        if output_hidden_states:
            hidden_states[-1] = x  # HF convention: the last entry is after the final norm
        return x, cache, hidden_states

    def _loss(self, x, labels, targets, logits_to_keep, return_logits):
        """``(loss, logits)`` of the final hidden states x (B, T, C); either may be None.

        ``return_logits=False`` with a loss takes the chunked path: the loss straight from x and the
        head's weight, no logits at all.
        """
        scored = wants_loss(labels, targets, logits_to_keep)
        if scored and not return_logits:
            w = self.lm_head.weight  # (V, C)
            return causal_lm_loss(x, labels, targets, head_weight=w, chunk=self.config.loss_chunk_size), None
        logits = self.lm_head(keep_positions(x, logits_to_keep))  # (B, T', V)
        return (causal_lm_loss(logits, labels, targets) if scored else None), logits

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        targets: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_logits: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Run the model.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, S) with 1 for real tokens and 0 for (left) padding; S = past + T.
            position_ids: (B, T) RoPE positions; default ``past .. past+T-1``. ``generate`` derives
                them from the attention mask, so left padding does not shift positions.
            cache: a transformers ``Cache`` (``past_key_values`` is accepted too).
            labels: HF convention, shifted inside: position t is scored against ``labels[t+1]``.
            targets: nanoGPT convention, already aligned: position t is scored against ``targets[t]``.
            logits_to_keep: keep only the last k positions' logits (0 keeps all), or given indices.
            return_logits: False computes the loss with the chunked, memory-saving path and returns
                ``logits=None``.
        """
        if cache is None and "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x, cache, hidden_states = self._trunk(
            input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache, output_hidden_states
        )  # x: (B, T, C) after ln_f
        loss, logits = self._loss(x, labels, targets, logits_to_keep, return_logits)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )


__all__ = ["SubstrateForCausalLM", "SubstratePreTrainedModel"]
