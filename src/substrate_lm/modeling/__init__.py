"""The model family as self-contained Hugging Face files (they import only torch and transformers).

``save_pretrained`` copies ``modeling_substrate.py`` (or ``modeling_composed.py``) next to the weights
with every sibling it imports: ``configuration_substrate.py``, ``loss_substrate.py``,
``integrity_substrate.py`` and ``generation_substrate.py`` (see :data:`HF_FILES`), so a checkpoint
loads anywhere with ``trust_remote_code=True``. Importing this package also
registers both model types with the ``Auto*`` classes, so that in a process that imported
substrate-lm, ``AutoModelForCausalLM.from_pretrained(dir)`` (no ``trust_remote_code``) loads our
folders with these classes and never runs the ``.py`` files inside a folder.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_substrate import BINARY_SUBSTRATE_KINDS, SUBSTRATE_KINDS, SubstrateConfig
from .integrity_substrate import (
    WEIGHTS_HASH_KEY,
    check_weight_files,
    file_sha256,
    record_weight_hashes,
    substrate_fingerprint,
)
from .loss_substrate import chunked_cross_entropy
from .modeling_substrate import SubstrateForCausalLM, SubstratePreTrainedModel

from .configuration_composed import ComposedConfig  # noqa: E402
from .modeling_composed import ComposedForCausalLM  # noqa: E402

SubstrateConfig.register_for_auto_class()
SubstrateForCausalLM.register_for_auto_class("AutoModelForCausalLM")
ComposedConfig.register_for_auto_class()
ComposedForCausalLM.register_for_auto_class("AutoModelForCausalLM")
AutoConfig.register(SubstrateConfig.model_type, SubstrateConfig, exist_ok=True)
AutoConfig.register(ComposedConfig.model_type, ComposedConfig, exist_ok=True)
AutoModelForCausalLM.register(SubstrateConfig, SubstrateForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(ComposedConfig, ComposedForCausalLM, exist_ok=True)

#: The code files of an exported folder, by model_type: the modeling file and every sibling it imports.
_SUBSTRATE_FILES = ("configuration_substrate.py", "modeling_substrate.py", "loss_substrate.py",
                    "integrity_substrate.py", "generation_substrate.py")
HF_FILES = {
    SubstrateConfig.model_type: _SUBSTRATE_FILES,
    ComposedConfig.model_type: ("configuration_composed.py", "modeling_composed.py") + _SUBSTRATE_FILES,
}

#: ``config.json`` model_type -> the class that loads it (no code from the folder is run).
MODEL_CLASSES = {
    SubstrateConfig.model_type: SubstrateForCausalLM,
    ComposedConfig.model_type: ComposedForCausalLM,
}

__all__ = [
    "ComposedConfig",
    "ComposedForCausalLM",
    "HF_FILES",
    "MODEL_CLASSES",
    "SubstrateConfig",
    "SubstrateForCausalLM",
    "SubstratePreTrainedModel",
    "SUBSTRATE_KINDS",
    "BINARY_SUBSTRATE_KINDS",
    "WEIGHTS_HASH_KEY",
    "check_weight_files",
    "chunked_cross_entropy",
    "file_sha256",
    "record_weight_hashes",
    "substrate_fingerprint",
]
