"""Prototype, measured and NOT used by the demo: train several same-shape models as one program.

Measured on the 2-core AMX Xeon (benchmarks/2026-12-06-demo-speed.md): at the demo's shape (d_model
64 x 4 blocks, 16 x 128 tokens, fp32, one thread) a step of three stacked models costs 19% MORE CPU
time per model than the one-model trainer's step (72.6 vs 61.1 cpu-ms), and with bf16 products
(AMX) about the same (63.3); the step is compute-bound, so stacking saves no work. Kept here so
the measurement can be rerun (``bench_demo_step.py steps`` and ``check``).

The demo's grid trains many tiny models that differ only in their token table and seed (same
backbone shape, data, schedule). One step of one such model is a few hundred small operations;
here the models of a group share every operation instead: each parameter is stacked into a
``[M, ...]`` tensor, the forward pass runs batched matrix products over the models, the loss is
the sum of the per-model mean losses (so each model's gradient is exactly its own), gradients are
clipped per model, and one fused AdamW steps all of them (AdamW is elementwise: stacking changes
nothing in its arithmetic).

What each model sees is what the one-model trainer (:class:`~substrate_lm.training.Trainer`) gives
it: the same initial weights (built by the same code after the same seeding), the same batches
(``data.get_batch(step, ..., seed=its seed)``), the same learning-rate schedule, weight decay,
clipping and validation (:func:`~substrate_lm.training.evaluate.mean_loss` on the model itself).
The arithmetic differs in summation order (batched products, cross-entropy from full logits
instead of the chunked loss). Measured by ``bench/bench_demo_step.py check`` (12 steps): random
bits and trainable tables agree within 4.3e-5, but one glyph-table seed differs by 1.9e-3, which
was not explained; treat it as unverified.

Only the plain :class:`~substrate_lm.modeling.SubstrateForCausalLM` in fp32 on a CPU, without
dropout, gradient accumulation or distribution, is handled (:func:`supported` says why not).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from substrate_lm.training.build import build_run_model, load_run_data, load_run_tokenizer
from substrate_lm.training.config import RunConfig
from substrate_lm.training.evaluate import mean_loss
from substrate_lm.training.optim import WarmupCosine
from substrate_lm.training.trainer import TrainResult, seed_everything


def supported(run: RunConfig) -> str | None:
    """None when :func:`train_batched` can train this config; else the reason it cannot."""
    t = run.train
    if t.precision != "fp32":
        return f"precision {t.precision} (the batched trainer is fp32 only)"
    if t.grad_accum != 1:
        return "gradient accumulation"
    if run.dist.strategy not in ("none", "auto"):
        return f"distribution strategy {run.dist.strategy}"
    if run.run.device not in ("cpu", "auto") or (run.run.device == "auto" and torch.cuda.is_available()):
        return f"device {run.run.device} (the batched trainer runs on the CPU)"
    if t.compile or t.activation_checkpointing:
        return "compile / activation checkpointing"
    if getattr(run.model, "init_from", None):
        return "init_from"
    return None


def shape_key(run: RunConfig) -> tuple:
    """Runs with the same key can be trained together: same model shape, data and schedule (their
    substrate and seed may differ)."""
    t, m = run.train, run.model
    return (m.preset, tuple(sorted(m.overrides.items())), m.tokenizer, run.data.path, run.data.mode,
            t.steps, t.batch_size, t.seq_len, t.lr, t.min_lr, t.warmup, t.weight_decay, tuple(t.betas), t.eps,
            t.clip, run.eval.interval, run.eval.steps, run.eval.batch_size, run.eval.mode, run.log.interval)


# ------------------------------------------------------------------------------------------------
# the stacked model


@dataclass
class Stack:
    """The stacked parameters of M same-shape models and what the batched forward needs."""

    names: list[str]
    params: dict[str, torch.Tensor]  # name -> [M, ...] (leaf; requires_grad as in the models)
    n_layer: int
    n_head: int
    d_model: int
    scale: int
    eps: float
    theta: float
    bias: bool

    @property
    def m(self) -> int:
        return next(iter(self.params.values())).shape[0]


def stack_models(models: list) -> Stack:
    """Stack the parameters of same-shape :class:`SubstrateForCausalLM` models (copies)."""
    cfg = models[0].config
    names = [n for n, _ in models[0].named_parameters()]
    params = {}
    for name in names:
        ps = [dict(m.named_parameters())[name] for m in models]
        grads = {p.requires_grad for p in ps}
        if len(grads) != 1:
            raise ValueError(f"{name} is trainable in some models and frozen in others; stack those separately")
        params[name] = torch.stack([p.detach() for p in ps]).clone().requires_grad_(grads.pop())
    return Stack(names, params, cfg.n_layer, cfg.n_head, cfg.d_model, int(cfg.scale or 1), float(cfg.norm_eps),
                 float(cfg.rope_theta), bool(cfg.bias))


@torch.no_grad()
def unstack_into(stack: Stack, models: list) -> None:
    """Copy each model's slice of the stacked parameters back into it."""
    for i, model in enumerate(models):
        for name, p in model.named_parameters():
            p.copy_(stack.params[name][i])


def _rope(T: int, hs: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
    freqs = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)  # (T, hs)


def _apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _ln(x, w, b, eps):
    # x (M, N, C); w, b (M, C)
    return torch.addcmul(b[:, None, :], F.layer_norm(x, x.shape[-1:], eps=eps), w[:, None, :])


def _linear(x, w, b=None, dtype=None):
    # x (M, N, K), w (M, O, K) -> (M, N, O); with ``dtype`` (bf16) the product runs in it, the
    # result and everything around it in fp32
    if dtype is not None and dtype != x.dtype:
        y = torch.bmm(x.to(dtype), w.to(dtype).transpose(1, 2)).to(x.dtype)
        return y if b is None else y + b[:, None, :]
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))


def batched_losses(stack: Stack, x: torch.Tensor, y: torch.Tensor, matmul_dtype: torch.dtype | None = None
                   ) -> torch.Tensor:
    """Per-model mean next-token cross-entropy ``[M]`` of ``x``, ``y`` ``[M, B, T]`` (aligned targets).

    ``matmul_dtype=torch.bfloat16``: the linear layers' and the head's products in bf16 (AMX on
    recent Xeons), attention, norms, activations and the loss in fp32; a different configuration
    (not the fp32 trainer's numbers)."""
    mm = matmul_dtype
    P, M = stack.params, stack.m
    _, B, T = x.shape
    C, H = stack.d_model, stack.n_head
    hs = C // H
    table = P["token_embeddings.weight"]  # (M, V, E)
    h = table[torch.arange(M)[:, None, None], x]  # (M, B, T, E)
    if stack.scale > 1:
        h = h.repeat_interleave(stack.scale, dim=-1)
    h = h.reshape(M, B * T, C)
    cos, sin = _rope(T, hs, stack.theta, h.dtype)
    g = (lambda k: P.get(k)) if stack.bias else (lambda k: None)
    for i in range(stack.n_layer):
        pre = f"blocks.{i}."
        a = _ln(h, P[pre + "ln_1.weight"], P[pre + "ln_1.bias"], stack.eps)
        qkv = _linear(a, P[pre + "attn.qkv.weight"], g(pre + "attn.qkv.bias"), mm)  # (M, N, 3C)
        q, k, v = qkv.view(M * B, T, 3, H, hs).unbind(dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (M*B, H, T, hs)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        o = o.transpose(1, 2).reshape(M, B * T, C)
        h = h + _linear(o, P[pre + "attn.proj.weight"], g(pre + "attn.proj.bias"), mm)
        a = _ln(h, P[pre + "ln_2.weight"], P[pre + "ln_2.bias"], stack.eps)
        a = F.gelu(_linear(a, P[pre + "mlp.fc.weight"], g(pre + "mlp.fc.bias"), mm))
        h = h + _linear(a, P[pre + "mlp.proj.weight"], g(pre + "mlp.proj.bias"), mm)
    h = _ln(h, P["ln_f.weight"], P["ln_f.bias"], stack.eps)
    logits = _linear(h, P["lm_head.weight"], dtype=mm)  # (M, N, V)
    nll = F.cross_entropy(logits.reshape(M * B * T, -1), y.reshape(-1), reduction="none")
    return nll.view(M, B * T).mean(dim=1)


def build_optimizer(stack: Stack, lr: float, weight_decay: float, betas, eps: float) -> torch.optim.AdamW:
    """One fused AdamW over the stacked trainable parameters, decay groups as
    :func:`substrate_lm.training.optim.param_groups` makes them (decay = a matrix in each model)."""
    decay = [p for p in stack.params.values() if p.requires_grad and p.ndim - 1 >= 2]
    no_decay = [p for p in stack.params.values() if p.requires_grad and p.ndim - 1 < 2]
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=True)


@torch.no_grad()
def clip_per_model(stack: Stack, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` of each model's own gradients (its slice of every stacked parameter);
    returns the per-model total norms ``[M]`` before clipping."""
    grads = [p.grad for p in stack.params.values() if p.requires_grad and p.grad is not None]
    sq = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads]).sum(dim=0)  # (M,)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.ndim - 1))))
    return norms


# ------------------------------------------------------------------------------------------------
# the training loop


def train_batched(runs: list[RunConfig], log: Callable[[str], None] = print,
                  matmul_dtype: torch.dtype | None = None) -> list[TrainResult]:
    """Train the runs (same :func:`shape_key`, each :func:`supported`) together; one
    :class:`~substrate_lm.training.TrainResult` per run, in order, with the model, the validation
    figures and a history of ``train``/``val`` records like the one-model trainer's.

    No checkpoints are written: the group is the unit of work (a killed group starts over).
    ``matmul_dtype``: see :func:`batched_losses` (None: fp32, the one-model trainer's numbers).
    """
    if not runs:
        return []
    keys = {shape_key(r) for r in runs}
    if len(keys) != 1:
        raise ValueError("train_batched needs runs of one shape, data and schedule")
    for r in runs:
        why = supported(r)
        if why:
            raise ValueError(f"train_batched cannot train {r.run.name}: {why}")
    t0 = time.perf_counter()
    t = runs[0].train
    models, datas, toks = [], [], []
    for r in runs:  # the same setup as Trainer._setup, model by model
        seed_everything(r.train.seed)
        data = load_run_data(r.data, tokenizer=r.model.tokenizer, seed=r.train.seed, is_main=True,
                             barrier=lambda: None, progress=False)
        tok = load_run_tokenizer(r.model, data) if r.model.tokenizer or (data.meta.get("tokenizer") or {}).get("name") \
            else None
        model = build_run_model(r.model, tok, seed=r.train.seed)
        if type(model).__name__ != "SubstrateForCausalLM" or float(model.config.dropout) != 0.0:
            raise ValueError(f"train_batched handles SubstrateForCausalLM without dropout, not {r.run.name}")
        models.append(model)
        datas.append(data)
        toks.append(tok)
    # frozen and trainable tables cannot share a stacked tensor: one stack per kind
    groups: dict[bool, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(bool(m.token_embeddings.weight.requires_grad), []).append(i)
    stacks = {k: stack_models([models[i] for i in idx]) for k, idx in groups.items()}
    opts = {k: build_optimizer(s, t.lr, t.weight_decay, t.betas, t.eps) for k, s in stacks.items()}
    sched = WarmupCosine(t.warmup, t.steps, t.min_lr / t.lr)
    histories: list[list[dict]] = [[] for _ in runs]
    vals: list[dict | None] = [None] * len(runs)
    best: list[float | None] = [None] * len(runs)
    last_loss: list[float | None] = [None] * len(runs)
    ev, lg = runs[0].eval, runs[0].log
    tokens_per_step = t.batch_size * t.seq_len
    for m in models:
        m.train()
    for step in range(1, t.steps + 1):
        lr = t.lr * sched(step - 1)
        for k, stack in stacks.items():
            idx = groups[k]
            xs, ys = zip(*(datas[i].train.get_batch(step - 1, t.batch_size, t.seq_len, seed=runs[i].train.seed,
                                                     mode=runs[i].data.mode, rank=0, world_size=1) for i in idx))
            losses = batched_losses(stack, torch.stack(xs), torch.stack(ys), matmul_dtype)
            losses.sum().backward()
            norms = clip_per_model(stack, t.clip) if t.clip > 0 else None
            for g in opts[k].param_groups:
                g["lr"] = lr
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            lv = losses.detach().tolist()
            nv = norms.tolist() if norms is not None else [None] * len(idx)
            for j, i in enumerate(idx):
                last_loss[i] = lv[j]
                if step % lg.interval == 0 or step == t.steps or step == 1:
                    histories[i].append({"event": "train", "step": step, "loss": lv[j], "lr": lr,
                                         "grad_norm": nv[j], "tokens": step * tokens_per_step,
                                         "elapsed": round(time.perf_counter() - t0, 2)})
        if (ev.interval and step % ev.interval == 0) or step == t.steps:
            for k, stack in stacks.items():
                unstack_into(stack, [models[i] for i in groups[k]])
            for i, (model, data, r) in enumerate(zip(models, datas, runs)):
                out = _validate(model, data, r)
                if out is None:
                    continue
                vals[i] = out
                best[i] = out["val_loss"] if best[i] is None else min(best[i], out["val_loss"])
                histories[i].append({"event": "val", "step": step, **out})
                model.train()
    for k, stack in stacks.items():
        unstack_into(stack, [models[i] for i in groups[k]])
    log(f"batched: {len(runs)} models x {t.steps} steps in {time.perf_counter() - t0:.0f} s")
    return [TrainResult(run_dir=Path(r.run_dir()), step=t.steps, train_loss=last_loss[i], val=vals[i],
                        best_val_loss=best[i], checkpoint=None, model=models[i].eval(), tokenizer=toks[i],
                        history=histories[i]) for i, r in enumerate(runs)]


@torch.no_grad()
def _validate(model, data, run: RunConfig) -> dict | None:
    """The one-model trainer's validation (:meth:`Trainer.evaluate`) of one model."""
    if data.val is None:
        return None
    ev, t = run.eval, run.train
    bs = ev.batch_size or t.batch_size
    batches = (data.val.get_batch(i, bs, t.seq_len, seed=t.seed, mode=ev.mode, rank=0, world_size=1)
               for i in range(max(1, ev.steps)))
    loss, _ = mean_loss(model, batches, precision=t.precision, chunked=t.chunked_loss, signature_of=model,
                        device=torch.device("cpu"), reduce=lambda x: x)
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
    cpt = data.chars_per_token("val")
    if cpt:
        out["val_bpc"] = loss / math.log(2) / cpt
    return out
