"""AdamW over the trainable parameters only, and the warmup + cosine learning-rate schedule.

The frozen substrate table (``requires_grad=False``) never reaches the optimizer, so it has no
optimizer state, no weight decay and cannot drift. Matrices are decayed; vectors (norm gains,
biases) are not, following GPT-2/nanoGPT practice.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SubstrateError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters into a decayed and a non-decayed group.

    Args:
        model: any module; parameters with ``requires_grad=False`` are skipped entirely.
        weight_decay: decay applied to parameters with two or more dimensions.

    Returns:
        Parameter groups for :class:`torch.optim.AdamW` (each carries its parameter names).
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        # ndim < 2: LayerNorm/RMSNorm gains and biases; decaying them only hurts (GPT-2 recipe)
        if p.ndim >= 2:
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    if not decay and not no_decay:
        raise SubstrateError("the model has no trainable parameters (every requires_grad is False)")
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    betas: tuple[float, float] | list[float], eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` (see :func:`param_groups`).

    The fused kernel (one pass over each tensor) is used for plain CPU/CUDA parameters: on a CPU it
    is about 6x faster than the multi-tensor ``foreach`` path and allocates no temporaries the size
    of the model. FSDP2's sharded (DTensor) parameters take the ``foreach`` path.
    """
    groups = [g for g in param_groups(model, weight_decay) if g["params"]]
    for g in groups:
        g.pop("names")
    params = [p for g in groups for p in g["params"]]
    fused = all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") for p in params)
    kind = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kind)


class WarmupCosine:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to ``min_ratio``.

    A plain callable object (not a lambda) so :class:`torch.optim.lr_scheduler.LambdaLR` saves its
    fields in ``state_dict()`` and a resumed run uses the same schedule.

    Args:
        warmup: warmup steps (the multiplier at step s < warmup is (s + 1) / (warmup + 1)).
        total: total optimizer steps; the cosine reaches ``min_ratio`` at ``total``.
        min_ratio: final learning rate as a fraction of the peak.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup = int(warmup)
        self.total = int(total)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            # (s+1)/(w+1): the very first step already moves (lr 0 would waste it)
            return (step + 1) / (self.warmup + 1)
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, *, lr: float, min_lr: float, warmup: int,
                    steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine schedule on ``optimizer`` (call ``.step()`` once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, steps, min_lr / lr))
