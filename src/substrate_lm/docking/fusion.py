"""Adapter fusion and brief fine-tuning of a composed model, trained by the one Trainer.

"Growing Transformers" merges experts by averaging logits, optionally through a small trainable
adapter over the experts' outputs, and then trains the merged model briefly (best_bvv_moe: val
loss 2.7 right after merging -> 2.044). Here the adapter is a gate on the concatenated final hidden
states that outputs per-position mixing weights; it starts at the fixed weights, so training can
only move away from the plain weighted mean when that lowers the loss.

Training is an ordinary :class:`~substrate_lm.training.Trainer` run (``model=`` the composed
model, only the chosen parameters trainable): the same schedule, optimizer, verified checkpoints,
resume, DDP/FSDP2 and logs as any training run; :func:`fusion_run_config` makes its config.

- ``train_fusion(model, data, config, train="adapter")``: only the adapter learns; the experts and
  the substrate stay bit-identical.
- ``train="experts"``: brief fine-tuning of the merged model (every expert parameter and the
  adapter, if any); the substrate table stays frozen.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from ..errors import SubstrateError
from ..training import RunConfig, RunData, Trainer, evaluate_loss
from ..training.config import config_from_dict

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


def fusion_run_config(run_dir: str | os.PathLike, *, steps: int, batch_size: int = 8, seq_len: int = 128,
                      lr: float = 1e-3, min_lr: float | None = None, warmup: int | None = None, seed: int = 0,
                      precision: str = "fp32", device: str = "auto", eval_batches: int = 10,
                      log_interval: int = 1, checkpoint_interval: int = 0, **sections: dict) -> RunConfig:
    """The :class:`RunConfig` of a fusion (or brief fine-tuning) run in ``run_dir``.

    ``min_lr`` defaults to ``lr / 10`` and ``warmup`` to a tenth of the steps (at most 10);
    validation (``eval_batches`` sequential batches) runs at the end only; no text samples.
    ``sections`` update whole sections, e.g. ``dist={"strategy": "ddp"}``.
    """
    raw: dict[str, dict[str, Any]] = {
        "run": {"name": os.path.basename(os.fspath(run_dir)) or "fusion", "dir": os.fspath(run_dir),
                "device": device},
        "train": {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": lr,
                  "min_lr": lr / 10 if min_lr is None else min_lr,
                  "warmup": min(10, steps // 10) if warmup is None else warmup, "seed": seed,
                  "precision": precision},
        "eval": {"interval": 0, "steps": eval_batches, "mode": "sequential"},
        "log": {"interval": log_interval, "tensorboard": False, "progress": False, "sample_prompts": []},
        "checkpoint": {"interval": checkpoint_interval, "keep_best": False},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


def train_fusion(
    model,
    data: Any,
    config: RunConfig,
    train: str = "adapter",
    val: Any = None,
    log: Callable[[dict], None] | None = None,
    keep_best: bool = True,
    resume: bool = False,
) -> dict:
    """Train a composed model's adapter (or fine-tune the merged model) with the Trainer.

    Args:
        model: a :class:`ComposedForCausalLM` (with ``fusion="adapter"`` for ``train="adapter"``).
        data: the training split (``get_batch(step, B, T, seed=..., mode=..., rank=..., world_size=...)``)
            or a :class:`~substrate_lm.training.RunData` (whose ``val`` is the default ``val``).
        config: the run's config (folder, steps, optimizer; see :func:`fusion_run_config`);
            ``eval.steps`` batches score validation.
        train: ``"adapter"`` or ``"experts"`` (see module docstring).
        val: optional evaluation split; evaluated before and after.
        log: receives every training record of the trainer (``step``, ``loss``, ``lr`` ...).
        keep_best: with ``val``, keep whichever of (the model before training, the trained model)
            has the lower validation loss; before training an adapter the model is the plain
            weighted average (the adapter's output layer starts at zero), so a training run that
            makes validation worse never replaces it.
        resume: continue the run in ``config.run_dir()`` from its newest intact checkpoint.

    Returns:
        ``{"trainable", "losses", "val_before", "val_trained", "val_after", "kept", "run_dir"}``:
        the logged training losses, the validation loss before and after training, the loss of
        the model kept (``val_after``) and which one was kept (``"trained"`` or ``"before"``;
        ``"trained"`` unchecked without ``val``, whose entries are then None).
    """
    if isinstance(data, RunData):
        val = data.val if val is None else val
        data = data.train
    n = set_fusion_trainable(model, train)
    t, e = config.train, config.eval
    eval_bs = e.batch_size or t.batch_size

    def score():
        return evaluate_loss(model, val, eval_bs, t.seq_len, max(1, e.steps), t.precision) if val is not None else None

    before = score()
    snapshot = ({k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
                if keep_best and val is not None else None)
    losses: list[float] = []

    def record(r: dict) -> None:
        if r.get("event") != "train":
            return
        losses.append(r["loss"])
        if log is not None:
            log(r)

    try:
        Trainer(config, model=model, data=RunData(train=data, val=val), resume=resume, callbacks=[record]).fit()
    finally:
        # back to the state of a loaded model: everything trainable but a frozen substrate
        for p in model.parameters():
            p.requires_grad_(True)
        model.token_embeddings.weight.requires_grad_(not model.config.substrate_frozen)
        model.eval()
    trained = score()
    kept, after = "trained", trained
    if snapshot is not None and trained["loss"] > before["loss"]:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in snapshot.items():
                params[k].copy_(v)
        kept, after = "before", before
    return {"trainable": n, "losses": losses, "val_before": before, "val_trained": trained, "val_after": after,
            "kept": kept, "run_dir": str(config.run_dir())}


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
