"""A composed causal LM: N substrate-lm experts on one shared frozen substrate, mixed in logit space.

"Growing Transformers" (Bochkov, arXiv 2507.07129): experts trained separately on the same frozen
token-embedding table merge with no architectural change by averaging their logits,

    logits = sum_i w_i * logits_i                        (fusion "mean", weights sum to 1)
    logits = sum_i g_i(t) * logits_i,  g(t) = softmax(adapter(concat_i h_i(t)) + log w)
                                                         (fusion "adapter", h_i = final hidden state)

The substrate table is stored once (``token_embeddings``) and fed to every expert; each expert
keeps its blocks, final norm and head. One transformers ``Cache`` serves all experts: expert i's
block j uses cache layer ``offset_i + j`` (``offset_i`` = blocks of the experts before it), so
``generate`` keeps a KV cache per expert with no special handling.

This file is exported next to the weights by ``save_pretrained`` and loaded with
``trust_remote_code=True``: it imports only torch, transformers and its sibling files. Saving
records the sha256 of the weight files and loading checks them, as for a single expert; generation
crops to the context (the smallest expert's) and slides every expert's cache.

Shape legend: B batch, T query length, T' kept positions, V vocab, C_i expert i's d_model,
N experts, E = n_embed.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_composed import ComposedConfig
from .generation_substrate import SubstrateGenerationMixin
from .integrity_substrate import CheckedWeightsMixin
from .loss_substrate import causal_lm_loss, keep_positions, wants_loss
from .modeling_substrate import SubstrateForCausalLM


class ExpertCacheView:
    """The part of a shared cache that one expert uses: the expert's layer j is layer offset + j.

    Only what :class:`SubstrateForCausalLM` calls on a cache is needed (``update`` and
    ``get_seq_length``); everything else goes to the shared cache.
    """

    def __init__(self, cache: Cache, offset: int):
        self.cache = cache
        self.offset = offset

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        return self.cache.update(key_states, value_states, layer_idx + self.offset, *args, **kwargs)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.cache.get_seq_length(layer_idx + self.offset)

    def __getattr__(self, name):
        return getattr(self.cache, name)


class FusionAdapter(nn.Module):
    """Per-position mixing weights of N experts from their concatenated final hidden states.

    The output layer starts at zero, so the untrained adapter reproduces the prior weights ``w``.
    """

    def __init__(self, in_features: int, n_experts: int, hidden: int = 0):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, n_experts))
        else:
            self.net = nn.Linear(in_features, n_experts)
        self.out._zero_init = True  # see ComposedPreTrainedModel._init_weights

    @property
    def out(self) -> nn.Linear:
        return self.net[-1] if isinstance(self.net, nn.Sequential) else self.net

    def forward(self, h: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
        # h: (B, T', sum C_i); log_prior: (N,) -> gates (B, T', N), rows sum to 1
        return torch.softmax(self.net(h).float() + log_prior, dim=-1).to(h.dtype)


class ComposedPreTrainedModel(PreTrainedModel):
    config_class = ComposedConfig
    config: ComposedConfig
    base_model_prefix = "composed"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SubstrateBlock"]
    _supports_sdpa = True
    _can_compile_fullgraph = False
    _supports_attention_backend = False

    def _init_weights(self, module):
        # the experts initialise themselves (they are PreTrainedModels); this covers the shared
        # table and the adapter. transformers skips a parameter once it is initialised, so the
        # adapter's zero output layer is recognised on the Linear itself, not from its parent.
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            if getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)
            else:
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class ComposedForCausalLM(CheckedWeightsMixin, SubstrateGenerationMixin, ComposedPreTrainedModel, GenerationMixin):
    """N :class:`SubstrateForCausalLM` experts sharing one substrate table, mixed in logit space.

    Saving and loading check the shared table and the weight files as for one expert;
    ``generate`` samples by default, accepts ``generate(ids, n)`` and crops to the context.
    """

    _table_name = "the shared frozen table"
    _fingerprint_fix = _table_fix = "compose the experts again"

    def __init__(self, config: ComposedConfig):
        super().__init__(config)
        if not config.experts:
            raise ValueError("ComposedConfig has no experts; build it from the experts' configs")
        self.token_embeddings = nn.Embedding(config.vocab_size, config.n_embed)
        experts = []
        for i in range(config.n_experts):
            expert = SubstrateForCausalLM(config.expert_config(i))
            # the table lives once, in self.token_embeddings; experts receive widened rows
            expert.token_embeddings = None
            experts.append(expert)
        self.experts = nn.ModuleList(experts)
        if config.fusion == "adapter":
            in_features = sum(e.config.d_model for e in self.experts)
            self.adapter = FusionAdapter(in_features, config.n_experts, config.adapter_hidden)
        else:
            self.adapter = None
        self.post_init()
        self.token_embeddings.weight.requires_grad_(not config.substrate_frozen)
        self._sample_by_default()

    # -- HF plumbing -----------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.token_embeddings

    def set_input_embeddings(self, value):
        self.token_embeddings = value

    def get_output_embeddings(self):
        return None  # N heads; resizing the vocabulary of a composed model is not supported

    # -- mixing --------------------------------------------------------------------------------
    def mixing_prior(self, device=None) -> torch.Tensor:
        """The normalised weights as a float32 tensor (N,)."""
        return torch.tensor(self.config.weights, dtype=torch.float32, device=device)

    def _widen(self, input_ids: torch.Tensor, scale: int) -> torch.Tensor:
        x = self.token_embeddings(input_ids)  # (B, T, E)
        return x.repeat_interleave(scale, dim=-1) if scale > 1 else x  # (B, T, C_i)

    # -- forward ---------------------------------------------------------------------------------
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
        """Run every expert and mix their logits.

        Arguments and loss conventions are those of :meth:`SubstrateForCausalLM.forward`
        (``labels`` shifted inside, ``targets`` already aligned, ``return_logits=False`` for the
        chunked loss). ``inputs_embeds`` are widened rows (B, T, C) handed to every expert as they
        are. ``hidden_states`` (when asked) is the widened input of expert 1 followed by every
        expert's block outputs in order, each expert's last entry after its final norm.
        """
        if cache is None and "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        scored = wants_loss(labels, targets, logits_to_keep)
        chunked = scored and not return_logits
        need_h = output_hidden_states or self.adapter is not None or chunked
        # the chunked loss needs only the final hidden states: ask the experts for no logits at all
        device = self.token_embeddings.weight.device
        keep = torch.empty(0, dtype=torch.long, device=device) if chunked else logits_to_keep
        offsets = self.config.layer_offsets()

        outs = []
        for expert, offset in zip(self.experts, offsets):
            x = inputs_embeds if inputs_embeds is not None else self._widen(input_ids, expert.config.scale)
            outs.append(
                expert(
                    inputs_embeds=x,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    cache=ExpertCacheView(cache, offset) if use_cache else None,
                    use_cache=use_cache,
                    output_hidden_states=need_h,
                    logits_to_keep=keep,
                    return_dict=True,
                )
            )

        finals = [o.hidden_states[-1] for o in outs] if need_h else None  # N x (B, T, C_i)
        gates = None  # (B, T', N) per-position weights, or None for the fixed prior
        if self.adapter is not None:
            h = finals if chunked else [keep_positions(f, keep) for f in finals]
            gates = self.adapter(torch.cat(h, dim=-1), torch.log(self.mixing_prior(device=h[0].device)))

        loss = logits = None
        if chunked:
            # sum_i g_i (h_i @ W_i^T) == concat_i(g_i h_i) @ concat_i(W_i)^T: one fused chunked CE
            if gates is None:
                parts = [w * f for w, f in zip(self.config.weights, finals)]
            else:
                parts = [gates[..., i : i + 1] * f for i, f in enumerate(finals)]
            hcat = torch.cat(parts, dim=-1)  # (B, T, sum C_i)
            wcat = torch.cat([e.lm_head.weight for e in self.experts], dim=1)  # (V, sum C_i)
            loss = causal_lm_loss(hcat, labels, targets, head_weight=wcat, chunk=self.config.loss_chunk_size)
        else:
            if gates is None:
                logits = outs[0].logits * self.config.weights[0]
                for w, o in zip(self.config.weights[1:], outs[1:]):
                    logits = logits + w * o.logits  # (B, T', V)
            else:
                logits = gates[..., 0:1] * outs[0].logits
                for i, o in enumerate(outs[1:], start=1):
                    logits = logits + gates[..., i : i + 1] * o.logits
            if scored:
                loss = causal_lm_loss(logits, labels, targets)

        hidden_states = None
        if output_hidden_states:
            hidden_states = (outs[0].hidden_states[0],) + tuple(s for o in outs for s in o.hidden_states[1:])
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=cache if use_cache else None,
            hidden_states=hidden_states,
        )


__all__ = ["ComposedForCausalLM", "ComposedPreTrainedModel", "FusionAdapter", "ExpertCacheView"]
