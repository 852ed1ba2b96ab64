"""Validation loss: the one place that turns batches into a mean next-token loss.

:meth:`Trainer.evaluate <substrate_lm.training.trainer.Trainer.evaluate>` scores ``eval.steps``
batches of its validation split with :func:`mean_loss`; :func:`evaluate_loss` scores the first
``max_batches`` sequential windows of any split (growth stages, fusion, the docking demo), so
stages, baselines and merged models are compared on identical tokens::

    from substrate_lm.training import evaluate_loss
    evaluate_loss(model, shards, batch_size=8, seq_len=128, max_batches=20)  # {"loss", "ppl", "tokens"}
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..components.loss import causal_lm_loss
from ..errors import SubstrateError


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
              precision: str = "fp32", chunked: bool = True, signature_of: nn.Module | None = None,
              device: torch.device | None = None,
              reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, int]:
    """Token-weighted mean next-token loss of ``model`` over ``(x, y)`` batches, in eval mode.

    Args:
        model: the module to call (a causal LM, possibly a DDP wrapper).
        batches: aligned ``(x, y)`` LongTensors.
        precision: ``bf16`` scores under bf16 autocast.
        chunked, signature_of: see :func:`~substrate_lm.components.loss.causal_lm_loss`.
        device: where the batches go (default the model's).
        reduce: sums a tensor over processes (the all-reduce of a distributed evaluation).

    Returns:
        ``(mean loss in nats per token, scored tokens)``; the training mode is restored.
    """
    device = device or _device_of(model)
    was_training = model.training
    model.eval()
    # (loss * tokens, tokens), summed on the device (no sync per batch); fp64 where it exists
    dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    acc = torch.zeros(2, dtype=dtype, device=device)
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = causal_lm_loss(model, x, y, chunked=chunked, signature_of=signature_of)
            n = (y != -100).sum()  # masked targets (fine-tuning prompts, padding) are not scored
            # a batch with no scored target (padding rows at the end of a split) adds nothing, even
            # where the unchunked cross entropy returns NaN for it
            acc[0] += torch.where(n > 0, loss.detach().to(dtype) * n, torch.zeros((), dtype=dtype, device=device))
            acc[1] += n
    finally:
        model.train(was_training)
    if reduce is not None:
        acc = reduce(acc)
    total, count = acc.tolist()
    if count == 0:
        raise SubstrateError("the evaluation split yielded no batch; prepare more data or lower seq_len")
    return total / count, int(count)


def evaluate_loss(model: nn.Module, data: Any, batch_size: int, seq_len: int, max_batches: int = 20,
                  precision: str = "fp32", *, chunked: bool = True) -> dict[str, float]:
    """Mean next-token loss over the first ``max_batches`` sequential batches of ``data``.

    The same windows every time (``iter_batches`` of :class:`~substrate_lm.data.TokenShards`, or
    ``get_batch(i, mode="sequential")``), so models are scored on identical tokens.

    Returns:
        ``{"loss": nats per token, "ppl": exp(loss), "tokens": scored tokens}``.
    """
    if hasattr(data, "iter_batches"):
        batches = data.iter_batches(batch_size, seq_len, max_batches=max_batches)
    else:
        batches = (data.get_batch(i, batch_size, seq_len, seed=0, mode="sequential") for i in range(max_batches))
    loss, tokens = mean_loss(model, batches, precision=precision, chunked=chunked)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": tokens}
