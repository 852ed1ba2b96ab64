"""Building blocks below the trainer: the causal-LM loss and LoRA adapters.

They depend on nothing above :mod:`substrate_lm.errors` (and torch / peft), so the trainer, the
fine-tuner, evaluation and the growth run can all use them without importing each other, as
torchtitan keeps ``components/loss.py`` and ``components/lora.py`` below its trainer::

    from substrate_lm.components import causal_lm_loss, apply_lora, merge_lora

peft is imported only when LoRA is applied.
"""

from .lora import DEFAULT_TARGETS, LoraAdapter, apply_lora, check_lora, lora_parameter_count, target_regex
from .lora import merge as merge_lora
from .loss import causal_lm_loss

__all__ = [
    "DEFAULT_TARGETS", "LoraAdapter", "apply_lora", "causal_lm_loss", "check_lora",
    "lora_parameter_count", "merge_lora", "target_regex",
]
