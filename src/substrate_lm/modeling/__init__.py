"""The model family as self-contained Hugging Face files (they import only torch and transformers).

``save_pretrained`` copies ``configuration_substrate.py`` and ``modeling_substrate.py`` next to the
weights, so a checkpoint loads anywhere with ``trust_remote_code=True``.
"""

from .configuration_substrate import BINARY_SUBSTRATE_KINDS, SUBSTRATE_KINDS, SubstrateConfig
from .modeling_substrate import SubstrateForCausalLM, SubstratePreTrainedModel, chunked_cross_entropy, substrate_fingerprint

from .configuration_composed import ComposedConfig  # noqa: E402
from .modeling_composed import ComposedForCausalLM  # noqa: E402

SubstrateConfig.register_for_auto_class()
SubstrateForCausalLM.register_for_auto_class("AutoModelForCausalLM")
ComposedConfig.register_for_auto_class()
ComposedForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "ComposedConfig",
    "ComposedForCausalLM",
    "SubstrateConfig",
    "SubstrateForCausalLM",
    "SubstratePreTrainedModel",
    "SUBSTRATE_KINDS",
    "BINARY_SUBSTRATE_KINDS",
    "chunked_cross_entropy",
    "substrate_fingerprint",
]
