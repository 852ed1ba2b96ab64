"""The training loop: accumulation, clipping, bf16 autocast, validation, samples, checkpoints.

One :class:`Trainer` runs one config, in one process or under torchrun (DDP / FSDP2). Everything
it needs can also be handed in (a model, a tokenizer, data), which is how growth stages and the
demo reuse it in-process::

    from substrate_lm.training import Trainer, load_config
    result = Trainer(load_config("tiny", ["--train.steps", "50"])).fit()
    result.model, result.val["val_loss"], result.checkpoint

The loop never looks at the substrate: it trains exactly the parameters with ``requires_grad``.
Data batches are a pure function of (seed, micro-step, rank, world size), and every RNG is saved
in the checkpoint, so a resumed run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import math
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
from ..fsutil import FolderLock, atomic_write_text, disk_error
from .build import RunData, build_run_model, check_compat, load_run_data, load_run_tokenizer, model_spec
from .checkpoint import (CheckpointCorrupt, CheckpointManager, capture_rng_state, load_checkpoint,
                         restore_rng_state)
from .config import RunConfig
from .distributed import (DistContext, all_reduce_mean, barrier, broadcast_object,
                          full_model_state, full_optimizer_state, load_full_model_state,
                          load_full_optimizer_state, parallelize, setup_distributed,
                          teardown_distributed)
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
    """

    def __init__(self, config: RunConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                 data: RunData | None = None, resume: bool = False,
                 callbacks: Iterable[Callback] = ()):
        self.cfg = config
        self.model = model
        self.tokenizer = tokenizer
        self.data = data
        self.resume = resume
        self.callbacks = list(callbacks)

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
            if self.resume:
                found = ckpts.latest_valid(warn=lambda m: self.log.note(f"warning: {m}"))
                if found is None and ckpts.step_dirs():
                    decision = (None, f"no usable checkpoint in {ckpts.root} (see the warnings "
                                      "above); nothing was changed: move the damaged folders away "
                                      "to start over, or choose a new --run.dir")
                else:
                    if found is None:
                        self.log.note(f"note: nothing to resume in {ckpts.root}; starting at step 0")
                    decision = (str(found) if found else None, None)
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
        if ctx.is_main:
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            n_all = sum(p.numel() for p in model.parameters())
            self.log.note(
                f"training {type(model).__name__}: {n_all / 1e6:.2f}M parameters "
                f"({n_train / 1e6:.2f}M trainable), {ctx.world_size} x {ctx.device.type} "
                f"[{ctx.strategy}], {t.precision}, {format_count(tokens_per_step)} tokens/step, "
                f"steps {start_step}->{t.steps}, run folder {run_dir}")

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
            self.tokens += tokens_per_step
            window_steps += 1
            last_loss = loss
            step = self.step
            final = step == t.steps

            if step % cfg.log.interval == 0 or final or step == start_step + 1:
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize(ctx.device)
                now = time.perf_counter()
                dt = (now - window_t0) / max(1, window_steps)
                tok_s = tokens_per_step / dt if dt > 0 else 0.0
                mfu = (self.flops_per_token * tok_s / (peak * ctx.world_size)) if peak else None
                rec = {"event": "train", "step": step, "loss": loss, "lr": lr,
                       "grad_norm": grad_norm, "tokens": self.tokens, "tok_per_s": round(tok_s, 1),
                       "mfu": None if mfu is None else round(mfu, 5), "step_time": round(dt, 4),
                       "elapsed": round(now - run_t0, 2)}
                self._emit(rec, history)
                eta = dt * (t.steps - step)
                mfu_s = f" | MFU {100 * mfu:.1f}%" if mfu is not None else ""
                self.log.progress_line(
                    f"step {step}/{t.steps} | loss {loss:.4f} | lr {lr:.2e} | "
                    f"{format_count(tok_s)} tok/s{mfu_s} | ETA {format_duration(eta)}", final=final)
                window_t0, window_steps = time.perf_counter(), 0

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

    def _batch(self, data: Any, index: int, batch_size: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        t, ctx = self.cfg.train, self.ctx
        x, y = data.get_batch(index, batch_size, t.seq_len, seed=t.seed, mode=mode,
                              rank=ctx.rank, world_size=ctx.world_size)
        return x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)

    def _train_step(self) -> tuple[float, float | None]:
        """Forward/backward over ``grad_accum`` micro-batches and clip; no optimizer step."""
        t, ctx = self.cfg.train, self.ctx
        total = torch.zeros((), device=ctx.device)
        for micro in range(t.grad_accum):
            x, y = self._batch(self.data.train, self.step * t.grad_accum + micro, t.batch_size,
                               self.cfg.data.mode)
            last = micro == t.grad_accum - 1
            with self._grad_sync(last):
                with self._autocast():
                    loss = self._loss(self.fwd, x, y)
                (loss / t.grad_accum).backward()
            total += loss.detach().float()
        mean_loss = all_reduce_mean(total / t.grad_accum, ctx).item()
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
        """Validation loss, perplexity and bits per character over ``eval.steps`` batches."""
        cfg, ctx = self.cfg, self.ctx
        bs = cfg.eval.batch_size or cfg.train.batch_size
        n = max(1, cfg.eval.steps)
        batches = (self._batch(self.data.val, i, bs, cfg.eval.mode) for i in range(n))
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
            "data_position": self.step * self.cfg.train.grad_accum,
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
        """Gather the full state (collective) and write it on rank 0; errors reach every rank."""
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

    def _restore(self, path: Path) -> None:
        """Load model, optimizer, scheduler, RNG and position from a checkpoint folder."""
        try:
            ck = load_checkpoint(path, verify=not self.ctx.is_main)  # rank 0 verified it already
        except CheckpointCorrupt as exc:
            raise SubstrateError(f"checkpoint {path} is unusable on rank {self.ctx.rank}: {exc}") from None
        recorded = ck.state.get("data_tokenizer")
        current = (self.data.meta.get("tokenizer") or {}).get("fingerprint")
        if recorded and current and recorded != current:
            raise SubstrateError(f"tokenizer mismatch: {path} was trained on data from another "
                                 f"tokenizer than {self.data.path} holds; resume with the run's data")
        if ck.state.get("world_size", self.ctx.world_size) != self.ctx.world_size:
            self.log.note(f"note: resuming a {ck.state['world_size']}-process run on "
                          f"{self.ctx.world_size}: batches differ from the uninterrupted run")
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
