"""The training loop: accumulation, clipping, bf16 autocast, validation, samples, checkpoints.

One :class:`Trainer` runs one config, in one process or under torchrun (DDP / FSDP2). Everything
it needs can also be handed in (a model, a tokenizer, data), which is how growth stages and the
demo reuse it in-process::

    from substrate_lm.training import Trainer, load_config
    result = Trainer(load_config("tiny", ["--train.steps", "50"])).fit()
    result.model, result.val["val_loss"], result.checkpoint

The loop never looks at the substrate: it trains exactly the parameters with ``requires_grad``.
Data batches are a pure function of (seed, step) and the global batch: micro-batch ``m`` of rank
``r`` reads rows ``(m * world_size + r) * batch_size ...`` of the step's global batch of
``batch_size * grad_accum * world_size`` sequences, and the loss is the token-weighted mean over that
global batch, so any split of one global batch into ranks and micro-batches trains the same model
(up to float rounding). Every RNG is saved in the checkpoint, so a resumed run is bit-identical to
an uninterrupted one on CPU, and a run resumed at another world size (same global batch) continues
the same loss curve.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..components.loss import causal_lm_loss
from ..errors import SubstrateError
from ..fsutil import FolderLock, atomic_write_text, disk_error, sha256_file
from .build import RunData, build_run_model, check_compat, load_run_data, load_run_tokenizer, model_spec
from .checkpoint import (SHARD_DIR, CheckpointCorrupt, CheckpointManager, capture_rng_state,
                         load_checkpoint, restore_rng_state)
from .config import RunConfig, resume_changes
from .distributed import (DistContext, all_gather_object, all_reduce_mean, all_reduce_sum, barrier,
                          broadcast_object, full_model_state, full_optimizer_state, load_full_model_state,
                          load_full_optimizer_state, load_sharded, parallelize, save_sharded,
                          setup_distributed, teardown_distributed)
from .evaluate import mean_loss
from .metrics import RunLogger, flops_per_token, format_count, format_duration, peak_flops
from .optim import WarmupCosine, build_optimizer, build_scheduler

Callback = Callable[[dict], None]


@dataclass
class TrainResult:
    """What a finished :meth:`Trainer.fit` hands back."""

    run_dir: Path
    step: int
    """Optimizer steps done."""
    train_loss: float | None
    """Loss of the last step (mean over ranks)."""
    val: dict[str, float] | None
    """Last validation: ``val_loss``, ``val_ppl`` and ``val_bpc`` (when chars/token is known)."""
    best_val_loss: float | None
    checkpoint: Path | None
    """The final checkpoint folder."""
    model: nn.Module
    """The trained model (unwrapped; still sharded in place under FSDP2)."""
    tokenizer: Any = None
    history: list[dict] = field(default_factory=list)
    """Every train/val record of this process's run (the same as ``log.jsonl`` on rank 0)."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train a causal LM from a :class:`~substrate_lm.training.config.RunConfig`.

    Args:
        config: the run config.
        model: a model to train instead of building ``config.model`` (any HF causal LM).
        tokenizer: its tokenizer (samples, vocabulary checks, export); default from the config/data.
        data: a :class:`~substrate_lm.training.build.RunData` instead of opening ``config.data``.
        resume: continue from the newest valid checkpoint of the run folder (fresh start if none;
            an error if it has checkpoints but none is usable).

    While it runs, the trainer holds the run folder's lock (:class:`~substrate_lm.fsutil.FolderLock`):
    a second trainer on the same folder fails at once, naming the holder's pid.
        callbacks: called with every record (``{"event": "train"|"val"|"sample"|"checkpoint", ...}``)
            on the main rank; an exception raised there stops the run (the checkpoints stay).
        validate_first: a run starting at step 0 validates the untrained model first (a ``val``
            record at step 0), so its log shows the start of the curve (the fine-tuner: base -> tuned).
    """

    def __init__(self, config: RunConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                 data: RunData | None = None, resume: bool = False,
                 callbacks: Iterable[Callback] = (), validate_first: bool = False):
        self.cfg = config
        self.model = model
        self.tokenizer = tokenizer
        self.data = data
        self.resume = resume
        self.callbacks = list(callbacks)
        self.validate_first = validate_first
        self.step_tokens = (0, 0)  # (tokens that reach the loss, scored targets) of the last step

    # ------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Run the loop to ``train.steps``; see the module docstring."""
        cfg = self.cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        ctx = setup_distributed(cfg.dist.strategy, cfg.run.device, cfg.dist.backend)
        self.ctx = ctx
        run_dir = cfg.run_dir()
        created = not run_dir.exists()
        lock = None
        try:
            if ctx.is_main:
                # one trainer per run folder: a second one fails here, before touching anything
                try:
                    lock = FolderLock(run_dir, "run folder").acquire()
                except OSError as exc:
                    raise disk_error(exc, f"the run folder {run_dir}") from None
            self.log = RunLogger(run_dir, jsonl=cfg.log.jsonl, tensorboard=cfg.log.tensorboard,
                                 progress=cfg.log.progress, enabled=ctx.is_main)
            if lock is not None and lock.took_over:
                self.log.note(f"note: took over the lock of {run_dir} from pid {lock.took_over}, "
                              "which is no longer running")
            try:
                return self._fit(ctx)
            finally:
                self.log.close()
        finally:
            if lock is not None:
                lock.release()
                if created:
                    _remove_if_empty(run_dir)  # a run refused before writing leaves no folder
            teardown_distributed(ctx)

    # ------------------------------------------------------------------------------------------
    def _setup(self, ctx: DistContext) -> None:
        cfg, t = self.cfg, self.cfg.train
        seed_everything(t.seed)
        if self.data is None:
            self.data = load_run_data(cfg.data, tokenizer=cfg.model.tokenizer or self.tokenizer,
                                      seed=t.seed, is_main=ctx.is_main,
                                      barrier=lambda: barrier(ctx), progress=cfg.log.progress)
        recorded_tok = (self.data.meta.get("tokenizer") or {}).get("name")
        if self.tokenizer is None and (cfg.model.tokenizer or recorded_tok):
            self.tokenizer = load_run_tokenizer(cfg.model, self.data)
        if self.model is None:
            self.model = build_run_model(cfg.model, self.tokenizer, seed=t.seed)
        check_compat(self.model, self.data, self.tokenizer)
        if t.loss_chunk_size and hasattr(self.model.config, "loss_chunk_size"):
            self.model.config.loss_chunk_size = t.loss_chunk_size
        block = getattr(self.model.config, "max_position_embeddings", None)
        if block and t.seq_len > block:
            raise SubstrateError(f"train.seq_len {t.seq_len} exceeds the model's context length "
                                 f"{block}; lower --train.seq_len")
        self.model.to(ctx.device)

    def _fit(self, ctx: DistContext) -> TrainResult:
        cfg, t = self.cfg, self.cfg.train
        run_dir = cfg.run_dir()
        ckpts = CheckpointManager(run_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last,
                                  keep_best=cfg.checkpoint.keep_best, rank0=ctx.is_main)

        # which checkpoint to start from (rank 0 decides, everyone follows); before any heavy work
        decision: tuple[str | None, str | None] = (None, None)
        if ctx.is_main:
            removed = ckpts.clean_debris()  # our own temp names, left by a killed save or prune
            if removed:
                self.log.note(f"note: removed {len(removed)} unfinished checkpoint folder(s) of a "
                              f"killed run from {ckpts.root}: {', '.join(sorted(removed)[:3])}")
            if self.resume:
                found = ckpts.latest_valid(warn=lambda m: self.log.note(f"warning: {m}"))
                if found is None and ckpts.step_dirs():
                    decision = (None, f"no usable checkpoint in {ckpts.root} (see the warnings "
                                      "above); nothing was changed: move the damaged folders away "
                                      "to start over, or choose a new --run.dir")
                else:
                    if found is None:
                        self.log.note(f"note: nothing to resume in {ckpts.root}; starting at step 0")
                    decision = (str(found) if found else None,
                                self._check_resume(found, ctx) if found else None)
            elif ckpts.step_dirs():
                decision = (None, f"{run_dir} already holds checkpoints (latest "
                                  f"{ckpts.step_dirs()[0].name}); pass --resume to continue that run "
                                  f"or choose a new --run.dir / --run.name")
        resume_path, error = broadcast_object(decision, ctx)
        if error:
            raise SubstrateError(error)
        self._setup(ctx)
        model = self.model

        # flops per token on the unwrapped model (the counts do not change under sharding)
        self.flops_per_token = flops_per_token(model, t.seq_len)
        self.model_spec = model_spec(model)  # the plain class, before fully_shard swaps it
        self.fwd = parallelize(model, ctx, compile=t.compile,
                               activation_checkpointing=t.activation_checkpointing)
        self.optimizer = build_optimizer(model, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas,
                                         eps=t.eps)
        self.scheduler = build_scheduler(self.optimizer, lr=t.lr, min_lr=t.min_lr, warmup=t.warmup,
                                         steps=t.steps)
        self.step, self.tokens, self.best_val = 0, 0, None
        if resume_path:
            self._restore(Path(resume_path))
        else:
            # records of an earlier attempt that died before its first checkpoint are not part of
            # this run: start the log afresh instead of appending duplicates
            self.log.truncate_after(0)
        if ctx.is_main:
            self._write_run_files(run_dir)
        if self.data.val is None and ctx.is_main:
            self.log.note("note: the data has no validation split; validation is skipped")

        tokens_per_step = t.batch_size * t.seq_len * t.grad_accum * ctx.world_size
        peak = cfg.log.peak_flops or peak_flops(ctx.device, t.precision)
        history: list[dict] = []
        last_loss: float | None = None
        last_val: dict | None = None
        last_ckpt: Path | None = None
        start_step = self.step
        window_t0, window_steps, run_t0 = time.perf_counter(), 0, time.perf_counter()
        window_tokens = [0, 0]  # real (non-padding) and scored tokens since the last train record
        if ctx.is_main:
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            n_all = sum(p.numel() for p in model.parameters())
            self.log.note(
                f"training {type(model).__name__}: {n_all / 1e6:.2f}M parameters "
                f"({n_train / 1e6:.2f}M trainable), {ctx.world_size} x {ctx.device.type} "
                f"[{ctx.strategy}], {t.precision}, {format_count(tokens_per_step)} tokens/step, "
                f"steps {start_step}->{t.steps}, run folder {run_dir}")

        if self.validate_first and start_step == 0 and self.data.val is not None:
            base = self.evaluate()
            self._emit({"event": "val", "step": 0, **base}, history)
            self.log.note(f"val step 0 (before training): loss {base['val_loss']:.4f} | ppl {base['val_ppl']:.2f}"
                          + (f" | bpc {base['val_bpc']:.3f}" if "val_bpc" in base else ""))
            window_t0 = time.perf_counter()
        model.train()
        while self.step < t.steps:
            lr = self.optimizer.param_groups[0]["lr"]
            loss, grad_norm = self._train_step()
            if not (math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm))):
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                value = loss if not math.isfinite(loss) else grad_norm
                good = ckpts.step_dirs()[0].name if ckpts.step_dirs() else "none yet"
                self.optimizer.zero_grad(set_to_none=True)
                raise SubstrateError(
                    f"{what} is {value} at step {self.step + 1} (lr {lr:.3g}); stopped before the "
                    f"update, last good checkpoint: {good} in {ckpts.root}; resume with --resume "
                    f"and a lower --train.lr, a longer --train.warmup or --train.clip 1.0")
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.tokens += self.step_tokens[0]
            window_tokens = [w + n for w, n in zip(window_tokens, self.step_tokens)]
            window_steps += 1
            last_loss = loss
            step = self.step
            final = step == t.steps

            if step % cfg.log.interval == 0 or final or step == start_step + 1:
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize(ctx.device)
                now = time.perf_counter()
                dt = (now - window_t0) / max(1, window_steps)
                # real tokens only: padding after a row's last scored target is not counted
                tok_s = window_tokens[0] / (now - window_t0) if now > window_t0 else 0.0
                learned_s = window_tokens[1] / (now - window_t0) if now > window_t0 else 0.0
                mfu = (self.flops_per_token * tok_s / (peak * ctx.world_size)) if peak else None
                rec = {"event": "train", "step": step, "loss": loss, "lr": lr,
                       "grad_norm": grad_norm, "tokens": self.tokens, "tok_per_s": round(tok_s, 1),
                       "learned_tok_per_s": round(learned_s, 1),
                       "mfu": None if mfu is None else round(mfu, 5), "step_time": round(dt, 4),
                       "elapsed": round(now - run_t0, 2)}
                self._emit(rec, history)
                eta = dt * (t.steps - step)
                mfu_s = f" | MFU {100 * mfu:.1f}%" if mfu is not None else ""
                self.log.progress_line(
                    f"step {step}/{t.steps} | loss {loss:.4f} | lr {lr:.2e} | "
                    f"{format_count(tok_s)} tok/s{mfu_s} | ETA {format_duration(eta)}", final=final)
                window_t0, window_steps, window_tokens = time.perf_counter(), 0, [0, 0]

            pause_t0 = time.perf_counter()
            evaluated = None
            if self.data.val is not None and ((cfg.eval.interval and step % cfg.eval.interval == 0)
                                              or final):
                evaluated = self.evaluate()
                last_val = evaluated
                if self.best_val is None or evaluated["val_loss"] < self.best_val:
                    self.best_val = evaluated["val_loss"]
                self._emit({"event": "val", "step": step, **evaluated}, history)
                bpc = f" | bpc {evaluated['val_bpc']:.3f}" if "val_bpc" in evaluated else ""
                self.log.note(f"val step {step}: loss {evaluated['val_loss']:.4f} | "
                              f"ppl {evaluated['val_ppl']:.2f}{bpc}")
            if (cfg.log.sample_interval and step % cfg.log.sample_interval == 0) or final:
                self.sample(step, history)
            if (cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0) or final:
                last_ckpt = self.save_checkpoint(
                    ckpts, val_loss=evaluated["val_loss"] if evaluated else None)
                self._emit({"event": "checkpoint", "step": step,
                            "path": str(last_ckpt) if last_ckpt else None}, history, jsonl=False)
            # validation, samples and saving are not training time: keep them out of tokens/s
            window_t0 += time.perf_counter() - pause_t0

        if last_ckpt is None and ctx.is_main:
            found = ckpts.step_dirs()
            last_ckpt = found[0] if found else None
        return TrainResult(run_dir=run_dir, step=self.step, train_loss=last_loss, val=last_val,
                           best_val_loss=self.best_val, checkpoint=last_ckpt, model=model,
                           tokenizer=self.tokenizer, history=history)

    # ------------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.train.precision == "bf16")

    def _loss(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return causal_lm_loss(module, x, y, chunked=self.cfg.train.chunked_loss,
                              signature_of=self.model)

    def _batch(self, data: Any, index: int, batch_size: int, mode: str,
               micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``micro`` of this rank in global batch ``index`` (CPU tensors).

        The global batch has ``batch_size * grad_accum * world_size`` rows; micro-batch ``m`` of
        rank ``r`` is its slice ``m * world_size + r``, asked of the data as rank
        ``m * world_size + r`` of ``world_size * grad_accum`` (the data's own rank slicing). With
        ``grad_accum == 1`` that is exactly the rank's slice.
        """
        t, ctx = self.cfg.train, self.ctx
        return data.get_batch(index, batch_size, t.seq_len, seed=t.seed, mode=mode,
                              rank=micro * ctx.world_size + ctx.rank,
                              world_size=ctx.world_size * t.grad_accum)

    def _train_step(self) -> tuple[float, float | None]:
        """Forward/backward over ``grad_accum`` micro-batches and clip; no optimizer step.

        The loss is the mean over every scored target of the global batch: each micro-batch's
        mean is weighted by its share of the scored targets (``1 / grad_accum`` when every target
        is scored, as in pre-training; masked prompts and padding make shares unequal), times the
        world size because DDP and FSDP2 average gradients over ranks.
        """
        t, ctx = self.cfg.train, self.ctx
        batches = [self._batch(self.data.train, self.step, t.batch_size, self.cfg.data.mode, micro)
                   for micro in range(t.grad_accum)]
        counts = [int((y != -100).sum()) for _, y in batches]
        real = [_tokens_to_last_target(y) for _, y in batches]  # what tok/s and MFU count
        sums = all_reduce_sum(torch.tensor([sum(counts), sum(real)], dtype=torch.int64, device=ctx.device), ctx)
        scored, n_real = (int(v) for v in sums.tolist())
        self.step_tokens = (n_real, scored)
        uniform = scored == t.batch_size * t.seq_len * t.grad_accum * ctx.world_size
        total = torch.zeros((), device=ctx.device)
        for micro, (x, y) in enumerate(batches):
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            last = micro == t.grad_accum - 1
            with self._grad_sync(last):
                with self._autocast():
                    loss = self._loss(self.fwd, x, y)
                if uniform:
                    (loss / t.grad_accum).backward()
                else:
                    (loss * (counts[micro] * ctx.world_size / max(1, scored))).backward()
            total += loss.detach().float() * (1 if uniform else counts[micro])
        if uniform:
            mean_loss = all_reduce_mean(total / t.grad_accum, ctx).item()
        else:
            mean_loss = all_reduce_sum(total, ctx).item() / max(1, scored)
        grad_norm = None
        if t.clip > 0:
            params = [p for p in self.model.parameters() if p.requires_grad]
            norm = torch.nn.utils.clip_grad_norm_(params, t.clip)
            if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
                norm = norm.full_tensor()
            grad_norm = float(norm)
        return mean_loss, grad_norm

    def _grad_sync(self, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
        if self.ctx.strategy == "ddp" and not sync:
            return self.fwd.no_sync()
        if self.ctx.strategy == "fsdp2":
            self.model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss, perplexity and bits per character over ``eval.steps`` global batches.

        Each global batch has ``eval.batch_size x grad_accum x world size`` rows, read like a
        training step's (``grad_accum`` micro-batches per rank), so every split of the same global
        batch validates the same windows.
        """
        cfg, ctx = self.cfg, self.ctx
        bs = cfg.eval.batch_size or cfg.train.batch_size
        n = max(1, cfg.eval.steps)
        batches = (self._batch(self.data.val, i, bs, cfg.eval.mode, micro)
                   for i in range(n) for micro in range(cfg.train.grad_accum))
        loss, _ = mean_loss(self.model, batches, precision=cfg.train.precision,
                            chunked=cfg.train.chunked_loss, signature_of=self.model, device=ctx.device,
                            reduce=lambda t: all_reduce_mean(t, ctx))
        self.model.train()
        out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
        cpt = self.data.chars_per_token("val")
        if cpt:
            # nats per token -> bits per character
            out["val_bpc"] = loss / math.log(2) / cpt
        return out

    @torch.no_grad()
    def sample(self, step: int, history: list[dict] | None = None) -> list[str]:
        """Generate ``log.sample_tokens`` from each prompt; RNG-neutral (does not perturb training)."""
        cfg, ctx, tok = self.cfg, self.ctx, self.tokenizer
        prompts = cfg.log.sample_prompts
        if tok is None or not prompts or not hasattr(self.model, "generate") \
                or getattr(self, "_samples_off", False):
            return []
        if ctx.strategy != "fsdp2" and not ctx.is_main:
            return []  # under FSDP2 every rank must run the forward passes
        texts: list[str] = []
        block = getattr(self.model.config, "max_position_embeddings", 1 << 30)
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=devices), self._autocast():
                torch.manual_seed(cfg.train.seed + step)
                for prompt in prompts:
                    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
                    ids = ids[:, -(block - 1):].to(ctx.device)
                    n = max(1, min(cfg.log.sample_tokens, block - ids.shape[1]))
                    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                    out = self.model.generate(ids, max_new_tokens=n, do_sample=True, top_k=50,
                                              pad_token_id=pad)
                    text = tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
                    texts.append(text)
                    self._emit({"event": "sample", "step": step, "prompt": prompt, "text": text},
                               history)
                    self.log.note(f"sample step {step}: {prompt!r} -> {text!r}")
        except Exception as exc:  # noqa: BLE001 - a sampling failure must never stop training
            self._samples_off = True
            self.log.note(f"note: text samples disabled ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})")
        finally:
            self.model.train()
        return texts

    # ------------------------------------------------------------------------------------------
    def _emit(self, record: dict, history: list[dict] | None, jsonl: bool = True) -> None:
        if history is not None:
            history.append(record)
        if not self.ctx.is_main:
            return
        if jsonl:
            self.log.log(record)
        for cb in self.callbacks:
            cb(record)

    def _write_run_files(self, run_dir: Path) -> None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.toml", self.cfg.to_toml())
            tok_dir = run_dir / "tokenizer"
            if self.tokenizer is not None and not tok_dir.exists():
                # a copy beside the checkpoints, so export works even if the data folder moves
                tmp = run_dir / ".tokenizer.tmp"
                self.tokenizer.save_pretrained(str(tmp))
                tmp.rename(tok_dir)
        except OSError as exc:
            raise disk_error(exc, f"the run files in {run_dir}") from None

    def _state(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "data_position": self.step,  # the global batch the next step reads
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "config": self.cfg.to_dict(),
            "world_size": self.ctx.world_size,
            "data_tokenizer": (self.data.meta.get("tokenizer") or {}).get("fingerprint"),
            "model_spec": self.model_spec,
            "best_val_loss": self.best_val,
            "version": __version__,
        }

    def save_checkpoint(self, ckpts: CheckpointManager, val_loss: float | None = None) -> Path | None:
        """Gather the full state (collective) and write it on rank 0; errors reach every rank.

        Under FSDP2 nothing is gathered: every rank writes its own shards (:meth:`_save_sharded`).
        """
        if self.ctx.strategy == "fsdp2":
            return self._save_sharded(ckpts, val_loss)
        model_state = full_model_state(self.model)
        optim_state = full_optimizer_state(self.model, self.optimizer)
        path, error = None, None
        if self.ctx.is_main:
            try:
                path = ckpts.save(self.step, model_state=model_state, optimizer_state=optim_state,
                                  state=self._state(), val_loss=val_loss,
                                  config_toml=self.cfg.to_toml())
            except SubstrateError as exc:
                error = str(exc)
        error = broadcast_object(error, self.ctx)
        if error:
            raise SubstrateError(error)
        return path

    def _save_sharded(self, ckpts: CheckpointManager, val_loss: float | None) -> Path | None:
        """FSDP2: rank 0 makes the temp folder; every rank writes and hashes its shards
        (``torch.distributed.checkpoint``); rank 0 adds the state and the manifest and renames
        the folder into place. Any rank's failure is one line on every rank; the temp folder goes."""
        ctx = self.ctx
        tmp, error = None, None
        if ctx.is_main:
            try:
                tmp = ckpts.begin_sharded(self.step, os.getpid())
            except SubstrateError as exc:
                error = str(exc)
        tmp, error = broadcast_object((str(tmp) if tmp else None, error), ctx)
        if error:
            raise SubstrateError(error)
        shard_dir = Path(tmp) / SHARD_DIR
        groups, extra, mine, error = None, None, {}, None
        try:
            groups, extra = save_sharded(self.model, self.optimizer, shard_dir)
        except Exception as exc:  # noqa: BLE001 - DCP raises the same failure on every rank
            error = _one_line(exc, f"checkpoint {ckpts.root / Path(tmp).name}")
        barrier(ctx)
        if error is None:
            try:  # each rank hashes its share of the files (all are written: DCP has finished)
                files = sorted(p.name for p in shard_dir.iterdir())
                for i, name in enumerate(files):
                    if i % ctx.world_size == ctx.rank:
                        fp = shard_dir / name
                        mine[f"{SHARD_DIR}/{name}"] = {"sha256": sha256_file(fp), "bytes": fp.stat().st_size}
            except OSError as exc:
                error = _one_line(exc, f"checkpoint {ckpts.root / Path(tmp).name}")
        gathered = all_gather_object((mine, error), ctx)
        errors = [e for _, e in gathered if e]
        path = None
        if ctx.is_main:
            if errors:
                ckpts.discard(Path(tmp))
            else:
                shard_files = {k: v for part, _ in gathered for k, v in part.items()}
                state = dict(self._state(), optimizer_param_groups=groups, optimizer_extra=extra)
                try:
                    path = ckpts.save(self.step, model_state=None, optimizer_state=None, state=state,
                                      val_loss=val_loss, config_toml=self.cfg.to_toml(),
                                      tmp=Path(tmp), shard_files=shard_files)
                except SubstrateError as exc:
                    errors = [str(exc)]
        error = broadcast_object(errors[0] if errors else None, ctx)
        if error:
            raise SubstrateError(error)
        return path

    def _check_resume(self, path: Path, ctx: DistContext) -> str | None:
        """Rank 0, before any heavy work: refuse a resume whose config breaks the run's identity
        (one line listing the changes); note the allowed changes in the log."""
        try:
            ck = load_checkpoint(path, verify=False, load_optimizer=False, load_model=False)
        except CheckpointCorrupt as exc:
            return f"checkpoint {path} is unusable: {exc}"
        saved = ck.state.get("config")
        if not isinstance(saved, dict):
            return None
        refused, allowed = resume_changes(saved, int(ck.state.get("world_size") or 1), self.cfg,
                                          ctx.world_size)
        if refused:
            return (f"--resume cannot change {'; '.join(refused)} of the run in {path.parent.parent}: "
                    f"the run would no longer be the one its checkpoints belong to; drop these "
                    f"overrides, or start a new --run.dir")
        if allowed:
            self.log.note(f"note: resuming {path.name} with changed settings: {'; '.join(allowed)}")
        return None

    def _check_model_spec(self, path: Path, recorded: Any) -> None:
        """The checkpoint's model (class and config) must be the model being trained."""
        if not isinstance(recorded, dict) or not recorded:
            return
        changes = _spec_changes(recorded, self.model_spec)
        if changes:
            raise SubstrateError(f"--resume cannot change the model of the run in {path.parent.parent} "
                                 f"({'; '.join(changes[:6])}): its checkpoints hold another model; "
                                 f"drop the model overrides, or start a new --run.dir")

    def _restore(self, path: Path) -> None:
        """Load model, optimizer, scheduler, RNG and position from a checkpoint folder."""
        sharded_here = self.ctx.strategy == "fsdp2" and (path / SHARD_DIR).is_dir()
        try:
            # rank 0 verified it already; under FSDP2 each rank reads its own pieces of the shards
            ck = load_checkpoint(path, verify=not self.ctx.is_main, load_model=not sharded_here,
                                 load_optimizer=not sharded_here)
        except CheckpointCorrupt as exc:
            raise SubstrateError(f"checkpoint {path} is unusable on rank {self.ctx.rank}: {exc}") from None
        self._check_model_spec(path, ck.state.get("model_spec"))
        recorded = ck.state.get("data_tokenizer")
        current = (self.data.meta.get("tokenizer") or {}).get("fingerprint")
        if recorded and current and recorded != current:
            raise SubstrateError(f"tokenizer mismatch: {path} was trained on data from another "
                                 f"tokenizer than {self.data.path} holds; resume with the run's data")
        if sharded_here:
            load_sharded(self.model, self.optimizer, path / SHARD_DIR,
                         ck.state.get("optimizer_param_groups"), ck.state.get("optimizer_extra"))
        else:
            load_full_model_state(self.model, ck.model_state)
            if ck.optimizer_state is not None:
                load_full_optimizer_state(self.model, self.optimizer, ck.optimizer_state)
        self.scheduler.load_state_dict(ck.state["scheduler"])
        # the config is the source of truth for the schedule (e.g. train.steps extended)
        t = self.cfg.train
        lam = WarmupCosine(t.warmup, t.steps, t.min_lr / t.lr)
        self.scheduler.lr_lambdas = [lam] * len(self.optimizer.param_groups)
        self.scheduler.base_lrs = [t.lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group["lr"] = t.lr * lam(self.scheduler.last_epoch)
            group["initial_lr"] = t.lr
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        restore_rng_state(ck.state["rng"])
        self.step = ck.step
        self.tokens = int(ck.state.get("tokens", 0))
        self.best_val = ck.state.get("best_val_loss")
        self.log.truncate_after(self.step)
        self.log.note(f"resumed from {path} (step {self.step})")


#: Model config fields that may differ between a checkpoint and its resume (set by the trainer
#: itself, or bookkeeping of transformers).
_SPEC_IGNORED = {"loss_chunk_size", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
                 "architectures", "use_cache", "_attn_implementation_autoset"}


def _spec_changes(old: dict, new: dict) -> list[str]:
    """``"key old -> new"`` for each difference of two model specs (class, config fields)."""
    out = []
    if old.get("class") != new.get("class"):
        out.append(f"class {old.get('class')} -> {new.get('class')}")
    try:
        a, b = json.loads(old.get("config") or "{}"), json.loads(new.get("config") or "{}")
    except (TypeError, ValueError):
        return out
    for key in sorted(set(a) & set(b) - _SPEC_IGNORED):
        if a[key] != b[key]:
            va, vb = (json.dumps(v, sort_keys=True)[:60] for v in (a[key], b[key]))
            out.append(f"{key} {va} -> {vb}")
    return out


def _one_line(exc: BaseException, what: str) -> str:
    """One line for a failure while writing ``what`` (a full disk named as such)."""
    if isinstance(exc, OSError):
        return str(disk_error(exc, what))
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "No space left" in text or "os error 28" in text or "Errno 28" in text:
        return str(disk_error(OSError(28, "No space left on device"), what))
    return f"could not write {what}: {text[:300]}; nothing was overwritten"


def _tokens_to_last_target(y: torch.Tensor) -> int:
    """Positions of ``y`` [B, T] up to each row's last scored target: the tokens that reach the loss
    (right padding, and anything after a row's last learned token, do not); ``B * T`` when every
    target is scored, as in pre-training."""
    scored = y != -100
    if bool(scored.all()):
        return int(y.numel())
    pos = torch.arange(1, y.shape[-1] + 1, device=y.device)
    return int((scored * pos).amax(dim=-1).sum())


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is empty (``rmdir`` refuses otherwise, e.g. when another trainer
    has locked it in the meantime)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def train(config: RunConfig, **kwargs: Any) -> TrainResult:
    """``Trainer(config, **kwargs).fit()``."""
    return Trainer(config, **kwargs).fit()
