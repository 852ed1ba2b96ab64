"""Configuration of a composed model: N substrate-lm experts on one shared frozen substrate.

"Growing Transformers" (Bochkov, arXiv 2507.07129) merges experts trained separately on the same
frozen token-embedding table by averaging their logits. This configuration records the experts'
own configurations, the mixing weights and the optional fusion adapter.

This file is exported next to the weights by ``save_pretrained`` and loaded with
``trust_remote_code=True``: it imports only ``transformers`` and its sibling configuration file.

The Hugging Face names are derived from the experts: ``num_hidden_layers`` is the total number of
blocks over all experts (expert i's layer j is cache layer ``offset_i + j``, so one cache serves
all experts), ``hidden_size`` / ``num_attention_heads`` are the first expert's,
``max_position_embeddings`` is the smallest context of the experts.
"""

from __future__ import annotations

import inspect
import math

from transformers import PreTrainedConfig

from .configuration_substrate import SubstrateConfig

FUSIONS = ("mean", "adapter")

# fields of an expert that compose: the substrate-lm family fields of SubstrateConfig (not the
# generic PreTrainedConfig bookkeeping such as architectures or transformers_version)
EXPERT_FIELDS = tuple(inspect.get_annotations(SubstrateConfig))


def expert_config_dict(config) -> dict:
    """The family fields of an expert's config as a plain JSON-serialisable dict."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: d[k] for k in EXPERT_FIELDS if k in d}


def normalise_weights(weights, n: int) -> list[float]:
    """Validate mixing weights (n finite, non-negative numbers, positive sum) and scale them to sum 1.

    ``None`` gives equal weights.
    """
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"{len(w)} weights given for {n} experts; give one weight per expert")
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError(f"weights must be finite and non-negative, got {w}")
    total = sum(w)
    if total <= 0:
        raise ValueError(f"weights sum to {total}; at least one weight must be positive")
    return [x / total for x in w]


class ComposedConfig(PreTrainedConfig):
    """Configuration of :class:`ComposedForCausalLM`.

    Args:
        experts: one dict per expert with its :class:`SubstrateConfig` fields (see
            :func:`expert_config_dict`). All must share ``vocab_size``, ``n_embed`` and the substrate
            fingerprint.
        weights: mixing weights of the experts' logits (normalised to sum 1; default equal).
        fusion: ``"mean"``: logits = sum_i w_i logits_i. ``"adapter"``: per-position weights
            ``softmax(adapter(concat(final hidden states)) + log w)``; the adapter starts at zero,
            so an untrained adapter gives exactly the weighted mean.
        adapter_hidden: 0 for a linear adapter ``Linear(sum d_model -> N)``; otherwise the width of
            a GELU MLP ``sum d_model -> adapter_hidden -> N``.
        expert_names: where each expert came from (provenance only).
    """

    model_type = "substrate_lm_composed"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
        "n_positions": "block_size",
        "n_ctx": "block_size",
    }

    experts: list[dict] | None = None
    weights: list[float] | None = None
    fusion: str = "mean"
    adapter_hidden: int = 0
    expert_names: list[str] | None = None
    # derived from the experts in __post_init__ (stored so that tools reading config.json see them)
    vocab_size: int = 0
    n_embed: int = 0
    d_model: int = 0
    n_layer: int = 0
    n_head: int = 0
    block_size: int = 0
    substrate_kind: str | None = None
    substrate_frozen: bool = True
    substrate_fingerprint: str | None = None
    substrate_meta: dict | None = None
    loss_chunk_size: int = 4096
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.fusion not in FUSIONS:
            raise ValueError(f"ComposedConfig: unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if not isinstance(self.adapter_hidden, int) or self.adapter_hidden < 0:
            raise ValueError(f"ComposedConfig: adapter_hidden must be a non-negative integer, got {self.adapter_hidden!r}")
        if self.experts:  # a bare ComposedConfig() (HF builds one for defaults) has no experts yet
            configs = [self.expert_config(i) for i in range(len(self.experts))]
            self.experts = [expert_config_dict(c) for c in configs]
            first = configs[0]
            for i, c in enumerate(configs[1:], start=2):
                for name, what in (("vocab_size", "vocab_size"), ("n_embed", "substrate width n_embed")):
                    if getattr(c, name) != getattr(first, name):
                        raise ValueError(
                            f"expert {i} {what} {getattr(c, name)} differs from expert 1 {what} "
                            f"{getattr(first, name)}; experts must share the frozen substrate"
                        )
                fa, fb = c.substrate_fingerprint, first.substrate_fingerprint
                if fa and fb and fa != fb:
                    raise ValueError(
                        f"expert {i} substrate fingerprint {fa[:19]}.. differs from expert 1 {fb[:19]}..; "
                        f"experts must share the frozen substrate"
                    )
            self.weights = normalise_weights(self.weights, len(configs))
            if self.expert_names is not None and len(self.expert_names) != len(configs):
                raise ValueError(f"ComposedConfig: {len(self.expert_names)} expert_names for {len(configs)} experts")
            self.vocab_size = first.vocab_size
            self.n_embed = first.n_embed
            self.d_model = first.d_model
            self.n_head = first.n_head
            self.n_layer = sum(c.n_layer for c in configs)
            self.block_size = min(c.block_size for c in configs)
            self.substrate_kind = first.substrate_kind
            self.substrate_frozen = all(c.substrate_frozen for c in configs)
            # the experts' recorded fingerprint; else the one computed from the table at composition
            self.substrate_fingerprint = next(
                (c.substrate_fingerprint for c in configs if c.substrate_fingerprint), self.substrate_fingerprint
            )
            self.substrate_meta = first.substrate_meta
            self.initializer_range = first.initializer_range
            self.loss_chunk_size = first.loss_chunk_size
            for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if getattr(self, name) is None:
                    setattr(self, name, getattr(first, name))
        super().__post_init__(**kwargs)

    @property
    def n_experts(self) -> int:
        return len(self.experts or [])

    def expert_config(self, i: int) -> SubstrateConfig:
        """The :class:`SubstrateConfig` of expert ``i`` (0-based)."""
        d = self.experts[i]
        return SubstrateConfig(**{k: v for k, v in d.items() if k in EXPERT_FIELDS})

    def layer_offsets(self) -> list[int]:
        """Cache layer index of each expert's first block (the experts' blocks, end to end)."""
        offsets, total = [], 0
        for d in self.experts or []:
            offsets.append(total)
            total += int(d["n_layer"])
        return offsets


__all__ = ["ComposedConfig", "FUSIONS", "EXPERT_FIELDS", "expert_config_dict", "normalise_weights"]
