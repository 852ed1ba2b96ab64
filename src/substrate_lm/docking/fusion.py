"""Adapter fusion and brief fine-tuning of a composed model.

"Growing Transformers" merges experts by averaging logits, optionally through a small trainable
adapter over the experts' outputs, and then trains the merged model briefly (best_bvv_moe: val
loss 2.7 right after merging -> 2.044). Here the adapter is a gate on the concatenated final hidden
states that outputs per-position mixing weights; it starts at the fixed weights, so training can
only move away from the plain weighted mean when that lowers the loss.

- ``train_fusion(model, data, spec, train="adapter")``: only the adapter learns; the experts and
  the substrate stay bit-identical.
- ``train="experts"``: brief fine-tuning of the merged model (every expert parameter and the
  adapter, if any); the substrate table stays frozen.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import SubstrateError
from .loop import TrainSpec, evaluate, train_loop

TRAIN_CHOICES = ("adapter", "experts")


def set_fusion_trainable(model, train: str = "adapter") -> int:
    """Freeze everything, then unfreeze the adapter (``"adapter"``) or the whole merged model
    except the substrate (``"experts"``). Returns the number of trainable parameters."""
    if train not in TRAIN_CHOICES:
        raise SubstrateError(f"unknown fusion training target {train!r}; choose one of {', '.join(TRAIN_CHOICES)}")
    for p in model.parameters():
        p.requires_grad_(False)
    if train == "adapter":
        if model.adapter is None:
            raise SubstrateError("this composed model has no adapter; compose with fusion='adapter' (--adapter)")
        params = list(model.adapter.parameters())
    else:
        params = [p for n, p in model.named_parameters() if not n.startswith("token_embeddings.")]
    for p in params:
        p.requires_grad_(True)
    return sum(p.numel() for p in params)


def train_fusion(
    model,
    data: Any,
    spec: TrainSpec,
    train: str = "adapter",
    val: Any = None,
    eval_batches: int = 10,
    log: Callable[[dict], None] | None = None,
    keep_best: bool = True,
) -> dict:
    """Train a composed model's adapter (or fine-tune the merged model) on token batches.

    Args:
        model: a :class:`ComposedForCausalLM` (with ``fusion="adapter"`` for ``train="adapter"``).
        data: training batches (``get_batch(step, B, T, seed=..., mode=...)``).
        spec: optimisation settings.
        train: ``"adapter"`` or ``"experts"`` (see module docstring).
        val: optional evaluation split; evaluated before and after.
        eval_batches: batches per evaluation.
        log: progress callback (see :func:`substrate_lm.docking.loop.train_loop`).
        keep_best: with ``val``, keep whichever of (the model before training, the trained model)
            has the lower validation loss; before training an adapter the model is the plain
            weighted average (the adapter's output layer starts at zero), so a training run that
            makes validation worse never replaces it.

    Returns:
        ``{"trainable", "losses", "val_before", "val_trained", "val_after", "kept"}``: the validation
        loss before and after training, the loss of the model kept (``val_after``) and which one
        was kept (``"trained"`` or ``"before"``; ``"trained"`` unchecked without ``val``, whose
        entries are then None).
    """
    n = set_fusion_trainable(model, train)
    before = evaluate(model, val, spec.batch_size, spec.seq_len, eval_batches, spec.precision) if val is not None else None
    snapshot = ({k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
                if keep_best and val is not None else None)
    try:
        losses = train_loop(model, data, spec, log=log)
    finally:
        # back to the state of a loaded model: everything trainable but a frozen substrate
        for p in model.parameters():
            p.requires_grad_(True)
        model.token_embeddings.weight.requires_grad_(not model.config.substrate_frozen)
        model.eval()
    trained = evaluate(model, val, spec.batch_size, spec.seq_len, eval_batches, spec.precision) if val is not None else None
    kept, after = "trained", trained
    if snapshot is not None and trained["loss"] > before["loss"]:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in snapshot.items():
                params[k].copy_(v)
        kept, after = "before", before
    return {"trainable": n, "losses": losses, "val_before": before, "val_trained": trained, "val_after": after,
            "kept": kept}


@torch.no_grad()
def mixing_weights(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-position mixing weights (B, T, N) the model applies to ``input_ids`` (fixed or gated)."""
    n = model.config.n_experts
    if model.adapter is None:
        w = model.mixing_prior(device=input_ids.device)
        return w.expand(*input_ids.shape, n).clone()
    out = model(input_ids, output_hidden_states=True, use_cache=False)
    # final hidden state of each expert: the last entry of each expert's slice of hidden_states
    ends, pos = [], 0
    for d in model.config.experts:
        pos += int(d["n_layer"])
        ends.append(out.hidden_states[pos])
    return model.adapter(torch.cat(ends, dim=-1), torch.log(model.mixing_prior(device=input_ids.device)))
