"""The small training loop used by growth stages and by adapter fusion.

It trains whatever parameters of a causal LM have ``requires_grad=True`` (a growth stage's new
blocks, an adapter, LoRA matrices) on deterministic batches ``data.get_batch(step, B, T, seed)``
(the :class:`substrate_lm.data.TokenShards` contract) with ``model(x, targets=y,
return_logits=False)``, the models' memory-saving loss. AdamW (matrices decayed, norms and biases
not), linear warmup then cosine decay, gradient clipping and accumulation, optional bf16 autocast.

Batches are addressed by a *global* step, ``step_offset + local step``: the stages of a growth run
continue the batch stream where the previous stage stopped, so a grown model and a monolithic
model trained for the same total number of steps see exactly the same tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import SubstrateError


@dataclass
class TrainSpec:
    """Optimisation settings of one training phase (a growth stage, the baseline, a fusion run)."""

    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 8
    """Sequences per micro-batch."""
    seq_len: int = 128
    """Tokens per sequence (at most the model's block size)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-3
    """Peak learning rate (after warmup)."""
    min_lr: float = 1e-4
    """Learning rate at the end of the cosine decay."""
    warmup: int = 10
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (never on norms and biases)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    clip: float = 1.0
    """Global gradient-norm clip; 0 disables it."""
    seed: int = 0
    """Seed of the data sampler (and of dropout)."""
    precision: str = "fp32"
    """``fp32`` or ``bf16`` (bf16 autocast, fp32 master weights)."""
    mode: str = "random"
    """Batch sampling of ``get_batch``: ``random`` windows or ``sequential`` packing."""

    def check(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.seq_len < 1 or self.grad_accum < 1:
            raise SubstrateError(
                f"steps must be >= 0 and batch_size, seq_len, grad_accum >= 1 (got {self.steps}, "
                f"{self.batch_size}, {self.seq_len}, {self.grad_accum})"
            )
        if self.precision not in ("fp32", "bf16"):
            raise SubstrateError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if not (self.lr > 0 and self.min_lr >= 0):
            raise SubstrateError(f"lr must be positive and min_lr non-negative (got {self.lr}, {self.min_lr})")


def lr_at(step: int, spec: TrainSpec) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine to ``min_lr``."""
    if spec.warmup > 0 and step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    span = max(1, spec.steps - spec.warmup)
    progress = min(1.0, (step - spec.warmup) / span)
    return spec.min_lr + 0.5 * (spec.lr - spec.min_lr) * (1.0 + math.cos(math.pi * progress))


def trainable_named(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` of every trainable parameter (shared parameters once)."""
    seen, out = set(), []
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def build_optimizer(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only; the frozen substrate never reaches it."""
    named = trainable_named(model)
    if not named:
        raise SubstrateError("nothing to train: every parameter of the model is frozen")
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": spec.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas), foreach=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters (what a stage checkpoint needs to hold)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in trainable_named(model)}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`trainable_state` back; the set of names must match exactly."""
    named = dict(trainable_named(model))
    if set(named) != set(state):
        missing, extra = sorted(set(named) - set(state)), sorted(set(state) - set(named))
        raise SubstrateError(
            f"checkpoint does not fit the model (missing {missing[:3]}, unexpected {extra[:3]}); "
            f"the run's config changed since it was written: start a new run.dir"
        )
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(state[name].to(p.device, p.dtype))


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lm_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of aligned ``(x, y)`` with the chunked path of substrate-lm models."""
    return model(x, targets=y, return_logits=False, use_cache=False).loss


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_loop(
    model: torch.nn.Module,
    data: Any,
    spec: TrainSpec,
    *,
    step_offset: int = 0,
    start: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    on_checkpoint: Callable[[int, torch.optim.Optimizer], None] | None = None,
    checkpoint_every: int = 0,
    log: Callable[[dict], None] | None = None,
    log_every: int = 10,
    history: list[float] | None = None,
) -> list[float]:
    """Train the trainable parameters of ``model`` from local step ``start`` to ``spec.steps``.

    Args:
        model: a causal LM taking ``(x, targets=y, return_logits=False)``.
        data: has ``get_batch(step, batch_size, seq_len, seed=..., mode=...) -> (x, y)``.
        spec: optimisation settings.
        step_offset: global index of local step 0 in the batch stream (see module docstring).
        start: first local step (a resumed phase passes its checkpoint's step).
        optimizer: an optimizer with restored state (resume); default a fresh one.
        on_checkpoint: called as ``on_checkpoint(done_steps, optimizer)`` every
            ``checkpoint_every`` steps and after the last step.
        log: receives ``{"step", "loss", "lr", "tokens_per_s"}`` every ``log_every`` steps.
        history: a list the loss of every step is appended to as it runs (so a checkpoint
            callback can save the curve so far); default a new list.

    Returns:
        ``history`` with the training loss of each optimizer step run here appended.

    Raises:
        SubstrateError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    spec.check()
    device = model_device(model)
    opt = optimizer or build_optimizer(model, spec)
    params = [p for group in opt.param_groups for p in group["params"]]
    model.train()
    losses: list[float] = history if history is not None else []
    t0, tokens = time.perf_counter(), 0
    for step in range(start, spec.steps):
        lr = lr_at(step, spec)
        for group in opt.param_groups:
            group["lr"] = lr
        total = 0.0
        for micro in range(spec.grad_accum):
            index = (step_offset + step) * spec.grad_accum + micro
            x, y = data.get_batch(index, spec.batch_size, spec.seq_len, seed=spec.seed, mode=spec.mode)
            x, y = x.to(device), y.to(device)
            with _autocast(device, spec.precision):
                loss = lm_loss(model, x, y)
            (loss / spec.grad_accum).backward()
            total += float(loss.detach()) / spec.grad_accum
            tokens += x.numel()
        if not math.isfinite(total):
            opt.zero_grad(set_to_none=True)
            raise SubstrateError(
                f"the loss became {total} at step {step + 1}; lower train.lr (now {spec.lr}) or use fp32; "
                f"the last checkpoint is kept"
            )
        if spec.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, spec.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        done = step + 1
        if log is not None and (done % max(1, log_every) == 0 or done == spec.steps):
            dt = max(time.perf_counter() - t0, 1e-9)
            log({"step": done, "loss": round(total, 6), "lr": lr, "tokens_per_s": round(tokens / dt, 1)})
        if on_checkpoint is not None and (done == spec.steps or (checkpoint_every and done % checkpoint_every == 0)):
            on_checkpoint(done, opt)
    return losses


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Any, batch_size: int, seq_len: int, max_batches: int = 20,
             precision: str = "fp32") -> dict[str, float]:
    """Mean next-token loss over the first ``max_batches`` sequential batches of ``data``.

    The same windows every time (``iter_batches`` of :class:`~substrate_lm.data.TokenShards`, or
    ``get_batch(i, mode="sequential")``), so stages and baseline are scored on identical tokens.

    Returns:
        ``{"loss": nats per token, "ppl": exp(loss), "tokens": scored tokens}``.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    if hasattr(data, "iter_batches"):
        batches = data.iter_batches(batch_size, seq_len, max_batches=max_batches)
    else:
        batches = (data.get_batch(i, batch_size, seq_len, seed=0, mode="sequential") for i in range(max_batches))
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with _autocast(device, precision):
            loss = lm_loss(model, x, y)
        total += float(loss) * y.numel()
        count += y.numel()
    model.train(was_training)
    if count == 0:
        raise SubstrateError("the evaluation split yielded no batch; prepare more data or lower seq_len")
    mean = total / count
    return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": count}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture_rng() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
