"""The causal-LM loss: mean next-token cross-entropy, the one definition every loop uses.

The trainer (:mod:`substrate_lm.training.trainer`), validation (:func:`~substrate_lm.training.mean_loss`)
and the fine-tuner all call :func:`causal_lm_loss`; it lives below them so none of them imports
another for it::

    from substrate_lm.components import causal_lm_loss
    loss = causal_lm_loss(model, x, y)            # x, y: [B, T], y is x shifted by one
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=None)
def _loss_kwargs(cls: type) -> tuple[bool, bool]:
    """(accepts aligned ``targets``, has the chunked ``return_logits=False`` path) of a model class."""
    params = inspect.signature(cls.forward).parameters
    return "targets" in params, "targets" in params and "return_logits" in params


def causal_lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunked: bool = True,
                   signature_of: nn.Module | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM on inputs ``x`` and aligned targets ``y``.

    Our model takes ``targets`` (already aligned: position t is scored against ``y[t]``) and, with
    ``chunked``, computes the loss without materialising the B x T x V logits. Any other HF causal
    LM gives full logits and the loss is taken here.

    Args:
        model: the module to call (possibly a DDP wrapper).
        x, y: LongTensors [B, T]; ``y`` is ``x`` shifted by one token.
        chunked: use the memory-saving loss where the model has it.
        signature_of: the unwrapped model whose ``forward`` signature decides (default ``model``;
            for a peft wrapper, the model inside it).
    """
    owner = signature_of if signature_of is not None else model
    base = getattr(owner, "get_base_model", None)  # a peft wrapper passes every keyword on
    aligned, has_chunked = _loss_kwargs(type(base() if callable(base) else owner))
    if aligned:
        kw = {"return_logits": False} if (chunked and has_chunked) else {}
        return model(input_ids=x, targets=y, use_cache=False, **kw).loss
    logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
