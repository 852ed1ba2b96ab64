"""LoRA adapters on a model's blocks, merged back into the weights when done.

Used by the growth run ("Growing Transformers" v1 lets the existing layers adapt a little while a
new layer trains: low-rank updates on every earlier layer, folded in before the next stage) and by
LoRA fine-tuning (:mod:`substrate_lm.training.finetune`). peft (imported only when LoRA is applied,
it is slow to import) injects LoRA into the linear layers named by ``targets`` (``qkv``, ``proj``,
``fc``: attention in/out and MLP in/out) of blocks ``0 .. n_lower-1`` only; ``merge`` calls
``merge_and_unload`` and returns the plain model with the updates folded in.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Sequence

from ..errors import SubstrateError

DEFAULT_TARGETS = ("qkv", "proj", "fc")


@dataclass
class LoraAdapter:
    """LoRA adapters (peft): rank, scale, dropout and which block linears get them."""

    r: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA alpha (scale alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input, in [0, 1)."""
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """Linear layers of a block that get LoRA (attention qkv/proj, MLP fc/proj)."""


def check_lora(section: LoraAdapter, name: str = "lora") -> None:
    """Range checks of LoRA settings (types are the settings engine's); one line naming the key."""
    if section.r < 1:
        raise SubstrateError(f"{name}.r must be >= 1, got {section.r}")
    if not (section.alpha > 0 and math.isfinite(section.alpha)):
        raise SubstrateError(f"{name}.alpha must be a positive number, got {section.alpha}")
    if not 0 <= section.dropout < 1:
        raise SubstrateError(f"{name}.dropout must be in [0, 1), got {section.dropout}")
    bad = [t for t in section.targets if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t)]
    if bad or not section.targets:
        raise SubstrateError(f"{name}.targets must be module names such as qkv, proj, fc; got {section.targets}")


def _peft():
    try:
        import peft
    except ImportError:
        raise SubstrateError("LoRA needs peft: pip install 'substrate-lm[docking]' (or pip install peft)") from None
    return peft


def target_regex(n_lower: int, targets: Sequence[str] = DEFAULT_TARGETS) -> str:
    """A peft ``target_modules`` regex for the ``targets`` linears of blocks 0..n_lower-1."""
    if n_lower < 1:
        raise SubstrateError("LoRA needs at least one lower block to adapt")
    bad = [t for t in targets if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t)]
    if bad or not targets:
        raise SubstrateError(f"lora.targets must be module names such as qkv, proj, fc; got {list(targets)}")
    blocks = "|".join(str(i) for i in range(n_lower))
    names = "|".join(re.escape(t) for t in targets)
    return rf"(.*\.)?blocks\.({blocks})\.(.*\.)?({names})"


def apply_lora(model, n_lower: int, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: Sequence[str] = DEFAULT_TARGETS):
    """Wrap ``model`` with LoRA adapters on the lower blocks' linears (peft ``get_peft_model``).

    peft freezes every base parameter; the caller unfreezes what else should train (new blocks,
    head). The wrapper forwards every argument to the model (``targets=``, ``return_logits=``).

    Returns:
        The peft model.
    """
    peft = _peft()
    if r < 1:
        raise SubstrateError(f"lora.r must be >= 1, got {r}")
    config = peft.LoraConfig(
        r=int(r),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=target_regex(n_lower, targets),
        bias="none",
    )
    try:
        with warnings.catch_warnings():
            # peft asks transformers a deprecated question (is_gradient_checkpointing); not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. no module matched
        raise SubstrateError(f"LoRA could not be applied ({str(exc).splitlines()[0]}); check lora.targets") from None


def lora_parameter_count(peft_model) -> int:
    return sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


def merge(peft_model):
    """Fold the LoRA updates into the weights; returns the plain (unwrapped) model."""
    return peft_model.merge_and_unload()
