"""Configuration of the substrate-lm model family (Bochkov's frozen-substrate GPT-like LMs).

This file is exported next to the weights by ``save_pretrained`` and loaded with
``trust_remote_code=True``: it imports only ``transformers``.

Field names follow the published model cards (``vocab_size, n_embed, d_model, n_layer, n_head,
scale``); the Hugging Face names (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
``max_position_embeddings``) are aliases through ``attribute_map`` so that ``generate``, the cache
classes, lm-eval and ``device_map`` find what they look for.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

# Substrate kinds the model knows about. The model treats them all alike (a [V, n_embed] table);
# the kind is metadata that tools use to verify the table (binary kinds must hold exact 0/1).
SUBSTRATE_KINDS = ("bits", "token-id", "float", "glyph", "trainable")
BINARY_SUBSTRATE_KINDS = ("bits", "token-id")


class SubstrateConfig(PreTrainedConfig):
    """Configuration of :class:`SubstrateForCausalLM`.

    Args:
        vocab_size: rows of the substrate table and of the output head (65,536 for bvv241-2-3).
        n_embed: width of the substrate table (1024, 256, 64 or 16 in the paper family).
        d_model: width of the residual stream.
        n_layer: number of transformer blocks.
        n_head: attention heads; head size is ``d_model // n_head``.
        scale: ``d_model // n_embed``, the non-trainable ``repeat_interleave`` factor that widens a
            table row to ``d_model``. Derived when omitted; a disagreeing value is an error.
        block_size: context length (``max_position_embeddings``).
        rope_theta: RoPE base; rotary embeddings cover the whole head dimension.
        mlp_ratio: MLP hidden width as a multiple of ``d_model`` (GELU MLP).
        norm_eps: LayerNorm epsilon.
        bias: biases in the linear layers (LayerNorms always have weight and bias).
        dropout: dropout on attention probabilities and residual branches (training only).
        initializer_range: std of the normal init of linear layers and of a trainable table.
        substrate_kind: one of ``SUBSTRATE_KINDS``; "trainable" is the unfrozen baseline.
        substrate_frozen: whether the table is frozen (``requires_grad=False``).
        substrate_fingerprint: ``"sha256:<hex>"`` of the table, recorded when a substrate is
            installed; a loaded table that does not match it is refused.
        substrate_meta: free-form provenance of the table (seed, width, font, builder version).
        loss_chunk_size: rows of logits computed at a time by the memory-saving loss.
    """

    model_type = "substrate_lm"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
        "n_positions": "block_size",
        "n_ctx": "block_size",
    }

    vocab_size: int = 65536
    n_embed: int = 1024
    d_model: int = 1024
    n_layer: int = 16
    n_head: int = 32
    scale: int | None = None
    block_size: int = 1024
    rope_theta: float = 10000.0
    mlp_ratio: int = 4
    norm_eps: float = 1e-5
    bias: bool = False
    dropout: float = 0.0
    initializer_range: float = 0.02
    substrate_kind: str = "bits"
    substrate_frozen: bool = True
    substrate_fingerprint: str | None = None
    substrate_meta: dict | None = None
    loss_chunk_size: int = 1024
    use_cache: bool = True
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "n_embed", "d_model", "n_layer", "n_head", "block_size", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SubstrateConfig: {name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"SubstrateConfig: n_head={self.n_head} does not divide d_model={self.d_model}; "
                f"choose n_head from the divisors of d_model"
            )
        if (self.d_model // self.n_head) % 2 != 0:
            raise ValueError(
                f"SubstrateConfig: head size d_model/n_head={self.d_model // self.n_head} must be even for RoPE"
            )
        if self.d_model % self.n_embed != 0:
            raise ValueError(
                f"SubstrateConfig: n_embed={self.n_embed} does not divide d_model={self.d_model}; the table "
                f"is widened by an integer repeat_interleave, so n_embed must be a divisor of d_model"
            )
        derived = self.d_model // self.n_embed
        if self.scale is None:
            self.scale = derived
        elif self.scale != derived:
            raise ValueError(
                f"SubstrateConfig: scale={self.scale} disagrees with d_model/n_embed={derived}; "
                f"omit scale or set it to {derived}"
            )
        if self.substrate_kind not in SUBSTRATE_KINDS:
            raise ValueError(
                f"SubstrateConfig: unknown substrate_kind {self.substrate_kind!r}; choose one of {', '.join(SUBSTRATE_KINDS)}"
            )
        if self.substrate_kind == "trainable" and self.substrate_frozen:
            # the unfrozen baseline is trainable by definition
            self.substrate_frozen = False
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"SubstrateConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.loss_chunk_size <= 0:
            raise ValueError(f"SubstrateConfig: loss_chunk_size must be positive, got {self.loss_chunk_size}")
        super().__post_init__(**kwargs)

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_head

    @property
    def intermediate_size(self) -> int:
        return self.mlp_ratio * self.d_model


__all__ = ["SubstrateConfig", "SUBSTRATE_KINDS", "BINARY_SUBSTRATE_KINDS"]
