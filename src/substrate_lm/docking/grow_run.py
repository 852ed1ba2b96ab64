"""A resumable, distributable growth run: stages and a monolithic baseline, each one Trainer run.

Every phase (a growth stage or the baseline) is an ordinary :class:`~substrate_lm.training.Trainer`
run in its own sub-run folder, with the :class:`~substrate_lm.training.RunConfig` that
:func:`~.grow_config.phase_run_config` derives from the :class:`GrowConfig`: the same schedule, optimizer,
verified checkpoints, resume, DDP/FSDP2, compile and logs as ``substrate-lm train``. The model of a
phase is built here (:mod:`.grow`: the previous stage's exported weights below, frozen, new blocks
on top; optional LoRA from :mod:`substrate_lm.components.lora`) and handed to the trainer as ``model=``.

Run folder layout::

    <run>/grow.json                        the resolved config (a resumed run must match it)
    <run>/stages/01-depth1/                the trainer's run folder of stage 1:
        config.toml, log.jsonl, tokenizer/   written by the trainer
        checkpoints/step-*/                  verified checkpoints (removed once the stage is exported)
        model/                               the exported model after the stage (HF directory)
        metrics.json                         the stage is finished (written last)
    <run>/baseline-depth9/...              the monolithic model, same layout
    <run>/results.{json,md}, depth.png     metrics against depth

A phase with ``metrics.json`` and an exported model is never redone; an interrupted one resumes
with ``Trainer(resume=True)`` on the same model built again (a damaged checkpoint is detected by its
manifest hashes and the newest intact one is used). Batches are a pure function of the global step,
so an interrupted and resumed run computes what an uninterrupted one does. The exported model is
rebuilt from the phase's final checkpoint, so it is exactly the weights that training recorded.

Stage k trains on global steps ``S_1 + ... + S_{k-1}`` onwards; the baseline trains on global steps
``0 .. sum S_k - 1``: grown and monolithic models see exactly the same training tokens.

Under ``torchrun`` every rank runs the stages together (``dist.strategy``); rank 0 alone writes
exports, metrics and the report, and the others wait for it.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..components.lora import apply_lora, merge
from ..errors import SubstrateError
from ..export import export_model, parameter_counts
from ..factory import build_model
from ..fsutil import atomic_write_json, read_json
from ..modeling import SubstrateForCausalLM
from ..training import (CheckpointManager, RunData, Trainer, evaluate_loss, load_checkpoint, load_run_data,
                        load_run_tokenizer)
from ..training.distributed import (DistContext, barrier, broadcast_object, setup_distributed,
                                    teardown_distributed)
from .grow import Stage, block_fingerprints, grow_model, plan_stages, set_stage_trainable
from .grow_config import RESUMABLE_CHANGES, GrowConfig, diff_keys, phase_run_config, run_device
from .report import write_report


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RunContext:
    cfg: GrowConfig
    run_dir: Path
    dist: DistContext
    data: RunData
    """Training split and the evaluation split (the training split when the data has no usable val)."""
    eval_split: str
    chars_per_token: float | None
    tokenizer: Any
    vocab_size: int
    log: Callable[[str], None]
    on_record: Callable[[dict], None] | None = None


class StepOffset:
    """A training split whose batch ``i`` is batch ``offset + i`` of ``split``: a phase that starts
    at global step ``s`` of the stream reads the batches an uninterrupted stream would read there."""

    def __init__(self, split: Any, offset: int):
        self.split, self.offset = split, int(offset)

    def get_batch(self, step: int, *args, **kwargs):
        return self.split.get_batch(self.offset + step, *args, **kwargs)

    def __len__(self) -> int:
        return len(self.split)

    def __getattr__(self, name: str):
        return getattr(self.split, name)


# ----------------------------------------------------------------------------------------------
# setup


def prepare_context(cfg: GrowConfig, dist: DistContext, log: Callable[[str], None] = _stderr,
                    on_record=None) -> RunContext:
    """Open (or prepare) data and tokenizer, check vocabulary sizes."""
    base = phase_run_config(cfg, "probe", cfg.run_dir(), depth=cfg.grow.n_layer, steps=1, lr=cfg.train.lr)
    data = load_run_data(base.data, tokenizer=cfg.model.tokenizer or None, seed=cfg.train.seed,
                         is_main=dist.is_main, barrier=lambda: barrier(dist), progress=False)
    meta = data.meta
    tok = None
    if cfg.model.tokenizer or (meta.get("tokenizer") or {}).get("name"):
        tok = load_run_tokenizer(base.model, data)
    data_vocab = int((meta.get("tokenizer") or {}).get("vocab_size") or 0)
    vocab = len(tok) if tok is not None else int(cfg.model.overrides.get("vocab_size") or data_vocab)
    if data_vocab and data_vocab != vocab:
        raise SubstrateError(
            f"tokenizer/substrate mismatch: {data.path} was tokenised with a vocabulary of {data_vocab} but the "
            f"model would have {vocab} rows; use the data's tokenizer (model.tokenizer) or prepare the data again"
        )
    if not vocab:
        raise SubstrateError("unknown vocabulary size: set model.tokenizer or model.overrides.vocab_size")
    val, split = data.val, "val"
    if val is None or len(val) < cfg.train.seq_len + 1:
        log(f"note: {data.path} has no validation split of {cfg.train.seq_len + 1}+ tokens; "
            f"evaluating on the training split")
        val, split = data.train, "train"
    data = RunData(train=data.train, val=val, path=data.path, meta=data.meta, stats=data.stats)
    return RunContext(cfg=cfg, run_dir=cfg.run_dir(), dist=dist, data=data, eval_split=split,
                      chars_per_token=data.chars_per_token(split), tokenizer=tok, vocab_size=vocab,
                      log=log, on_record=on_record)


def _check_run_dir(cfg: GrowConfig, run_dir: Path, resume: bool, log) -> None:
    saved = read_json(run_dir / "grow.json", missing=None, corrupt=None)
    current = cfg.to_dict()
    if saved is None:
        has_stages = (run_dir / "stages").is_dir() and any((run_dir / "stages").iterdir())
        if has_stages:
            raise SubstrateError(f"{run_dir} holds stages but no grow.json; choose another run.dir")
        if run_dir.is_file() or (run_dir.is_dir() and any(run_dir.iterdir())):
            raise SubstrateError(f"run.dir {run_dir} is not empty and holds no growth run; choose a new or "
                                 f"empty folder (the run writes results.md, grow.json, stages/ there)")
        if resume:
            log(f"nothing to resume in {run_dir}; starting a new growth run")
    else:
        if not resume:
            raise SubstrateError(f"{run_dir} already holds a growth run; pass --resume to continue it or choose another run.dir")
        changed = [k for k in diff_keys(saved, current) if k not in RESUMABLE_CHANGES]
        if changed:
            raise SubstrateError(
                f"the config differs from the one {run_dir} was started with ({', '.join(changed)}); "
                f"resume with the same config or start a new run.dir"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "grow.json", current, default=str)


def _on_main(ctx: DistContext, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; every rank gets its result (or its SubstrateError)."""
    out, error = None, None
    if ctx.is_main:
        try:
            out = fn()
        except SubstrateError as exc:
            error = str(exc)
    out, error = broadcast_object((out, error), ctx)
    if error:
        raise SubstrateError(error)
    return out


# ----------------------------------------------------------------------------------------------
# phases (a growth stage or the baseline)


@dataclass
class Phase:
    kind: str  # "stage" or "baseline"
    label: str
    dir: Path
    depth: int
    steps: int
    step_offset: int
    tokens_total: int
    lr: float
    trained: str
    build: Callable[[], tuple[Any, Callable[[Any], Any], int]]
    """Returns (model ready to train, finalize(model) -> plain model, lower blocks that must not move)."""


def _is_done(phase: Phase) -> dict | None:
    metrics = read_json(phase.dir / "metrics.json", missing=None, corrupt=None)
    if metrics is not None and (phase.dir / "model" / "config.json").is_file():
        return metrics
    return None


def _train_losses(log_path: Path) -> list[float]:
    """Training losses recorded in a trainer's ``log.jsonl`` (in step order)."""
    out = []
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if r.get("event") == "train" and r.get("loss") is not None:
                out.append(float(r["loss"]))
    return out


def run_phase(ctx: RunContext, phase: Phase) -> dict:
    """Train (or resume) one phase with the Trainer, export its model, evaluate it; returns its metrics."""
    done = _is_done(phase)
    if done is not None:
        ctx.log(f"[{phase.label}] finished earlier: val loss {done.get('val_loss'):.4f}; skipped")
        return done
    cfg = ctx.cfg
    run_cfg = phase_run_config(cfg, phase.label, phase.dir, depth=phase.depth, steps=phase.steps, lr=phase.lr)
    t = run_cfg.train
    model = phase.build()[0]
    if t.seq_len > model.config.block_size:
        raise SubstrateError(f"train.seq_len={t.seq_len} exceeds the model's block_size={model.config.block_size}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    resume = bool(CheckpointManager(phase.dir / "checkpoints", rank0=False).step_dirs())
    data = RunData(train=StepOffset(ctx.data.train, phase.step_offset), val=ctx.data.val,
                   path=ctx.data.path, meta=ctx.data.meta, stats=ctx.data.stats)

    def record(r: dict) -> None:
        if r.get("event") != "train":
            return
        r = {"phase": phase.label, **r, "global_step": phase.step_offset + r["step"]}
        ctx.log(f"[{phase.label}] step {r['step']}/{t.steps} loss {r['loss']:.4f} lr {r['lr']:.2e} "
                f"{r['tok_per_s']:,.0f} tok/s")
        if ctx.on_record is not None:
            ctx.on_record(r)

    ctx.log(f"[{phase.label}] {'resuming' if resume else 'training'} {phase.trained}: {trainable:,} parameters, "
            f"{t.steps} steps, run folder {phase.dir}")
    t0 = time.perf_counter()
    result = Trainer(run_cfg, model=model, tokenizer=ctx.tokenizer, data=data, resume=resume,
                     callbacks=[record]).fit()
    seconds = time.perf_counter() - t0
    del model
    final_ckpt = broadcast_object(str(result.checkpoint) if result.checkpoint else None, ctx.dist)
    if final_ckpt is None:  # pragma: no cover - the trainer always saves at the last step
        raise SubstrateError(f"{phase.dir} has no final checkpoint; resume the growth run")
    world = ctx.dist.world_size
    metrics = _on_main(ctx.dist, lambda: _finish_phase(ctx, phase, Path(final_ckpt), t, trainable, seconds, world))
    barrier(ctx.dist)
    return metrics


def _finish_phase(ctx: RunContext, phase: Phase, ckpt: Path, t, trainable: int, seconds: float, world: int) -> dict:
    """Rank 0: rebuild the phase's model from its final (verified) checkpoint, finalize (merge LoRA),
    export, evaluate, write ``metrics.json`` and drop the checkpoints."""
    cfg = ctx.cfg
    model, finalize, n_lower = phase.build()
    lower_before = block_fingerprints(model)[:n_lower]
    ck = load_checkpoint(ckpt)
    if ck.step != phase.steps:
        raise SubstrateError(f"{ckpt} is at step {ck.step}, the phase has {phase.steps}; resume the growth run")
    try:
        model.load_state_dict(ck.model_state, strict=True)
    except RuntimeError as exc:
        raise SubstrateError(f"{ckpt} does not fit the phase's model ({str(exc).splitlines()[0]}); "
                             f"the config changed since it was written: start a new run.dir") from None
    lower_after = block_fingerprints(model)[:n_lower]
    model = finalize(model).to(ctx.dist.device)
    model.eval()
    name = f"{cfg.run.name}-{phase.label}"
    card = (f"Grown layer by layer with substrate-lm ({phase.label}: {phase.trained}; "
            f"{phase.tokens_total:,} training tokens in total).")
    export_model(model, phase.dir / "model", tokenizer=ctx.tokenizer, name=name, card_extra=card)
    ev = evaluate_loss(model, ctx.data.val, cfg.eval.batch_size or t.batch_size, t.seq_len, cfg.eval.steps,
                       t.precision)
    bpc = ev["loss"] / math.log(2) / ctx.chars_per_token if ctx.chars_per_token else None
    losses = _train_losses(phase.dir / "log.jsonl")
    tail = losses[-min(10, len(losses)):] if losses else []
    metrics = {
        "model": phase.label,
        "kind": phase.kind,
        "depth": phase.depth,
        "trained": phase.trained,
        "steps": t.steps,
        "tokens": t.steps * t.batch_size * t.seq_len * t.grad_accum * world,
        "tokens_total": phase.tokens_total * world,
        "train_loss": sum(tail) / len(tail) if tail else None,
        "val_loss": ev["loss"],
        "val_ppl": ev["ppl"],
        "val_bpc": bpc,
        "eval_split": ctx.eval_split,
        "eval_tokens": ev["tokens"],
        "params_total": parameter_counts(model)["total"],
        "params_trainable": trainable,
        "seconds": seconds,
        # None where nothing was pinned (first stage, baseline, LoRA on the lower blocks)
        "lower_blocks_unchanged": (lower_before == lower_after) if n_lower else None,
        "substrate_fingerprint": model.config.substrate_fingerprint,
        "model_dir": str((phase.dir / "model").relative_to(ctx.run_dir)),
        "world_size": world,
    }
    atomic_write_json(phase.dir / "metrics.json", metrics, default=str)
    shutil.rmtree(phase.dir / "checkpoints", ignore_errors=True)
    ctx.log(f"[{phase.label}] val loss {ev['loss']:.4f}" + (f", {bpc:.4f} bits/char" if bpc else "")
            + f"; exported {phase.dir / 'model'}")
    return metrics


# ----------------------------------------------------------------------------------------------
# the run


def _first_model(ctx: RunContext, depth: int):
    cfg = ctx.cfg
    overrides = dict(cfg.model.overrides)
    overrides["n_layer"] = depth
    if ctx.tokenizer is None:
        overrides.setdefault("vocab_size", ctx.vocab_size)
    return build_model(cfg.model.preset, substrate=cfg.model.substrate or None, tokenizer=ctx.tokenizer,
                       seed=cfg.model.substrate_seed, overrides=overrides)


def _stage_phase(ctx: RunContext, stage: Stage, stages: list[Stage], steps: list[int], tokens_per_step: int) -> Phase:
    cfg = ctx.cfg
    lora_on = cfg.lora.enabled and stage.index >= cfg.lora.from_stage and stage.n_lower > 0
    offset = sum(steps[: stage.index - 1])
    stage_dir = ctx.run_dir / "stages"
    if stage.index == 1:
        trained = f"blocks 1-{stage.depth} + head" if stage.depth > 1 else "block 1 + head"
    else:
        new = f"block {stage.depth}" if stage.n_new == 1 else f"blocks {stage.n_lower + 1}-{stage.depth}"
        trained = new + (" + head" if cfg.grow.train_head else "")
        if lora_on:
            trained += f" + LoRA r{cfg.lora.r} on blocks 1-{stage.n_lower}"

    def build():
        """The stage's model, built the same way every time (training, resume, export)."""
        if stage.index == 1:
            model = _first_model(ctx, stage.depth)
        else:
            prev = stage_dir / stages[stage.index - 2].name / "model"
            try:
                base = SubstrateForCausalLM.from_pretrained(str(prev))
            except (OSError, ValueError) as exc:
                raise SubstrateError(f"cannot load the previous stage's model {prev}: {str(exc).splitlines()[0]}") from None
            model = grow_model(base, stage.n_new, seed=cfg.train.seed * 1_000_003 + stage.index)
        finalize = lambda m: m  # noqa: E731
        if lora_on:
            torch.manual_seed(cfg.train.seed * 1_000_003 + 500 + stage.index)
            model = apply_lora(model, stage.n_lower, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                               targets=cfg.lora.targets)
            finalize = merge
        set_stage_trainable(model, stage.n_lower, cfg.grow.train_head, train_substrate=stage.index == 1)
        # with LoRA the lower blocks are meant to move; otherwise they must stay bit-identical
        return model, finalize, 0 if lora_on else stage.n_lower

    return Phase(kind="stage", label=f"stage{stage.index}", dir=stage_dir / stage.name, depth=stage.depth,
                 steps=steps[stage.index - 1], step_offset=offset,
                 tokens_total=sum(steps[: stage.index]) * tokens_per_step, lr=cfg.train.lr, trained=trained, build=build)


def _baseline_phase(ctx: RunContext, depth: int, steps: int, tokens_per_step: int) -> Phase:
    cfg = ctx.cfg

    def build():
        model = _first_model(ctx, depth)
        set_stage_trainable(model, 0, True, train_substrate=True)
        return model, (lambda m: m), 0

    return Phase(kind="baseline", label="baseline", dir=ctx.run_dir / f"baseline-depth{depth}", depth=depth,
                 steps=steps, step_offset=0, tokens_total=steps * tokens_per_step,
                 lr=cfg.baseline.lr or cfg.train.lr, trained=f"all {depth} blocks + head (monolithic)", build=build)


def run_growth(cfg: GrowConfig, resume: bool = False, log: Callable[[str], None] = _stderr,
               on_record: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) a growth run end to end; under ``torchrun`` on every rank.

    Args:
        cfg: the run's :class:`GrowConfig`.
        resume: continue the run in ``cfg.run_dir()`` (finished phases are skipped, a running one
            resumes from its newest intact checkpoint). Without it an existing run folder is refused.
        log: receives progress lines (rank 0).
        on_record: receives every training log record of rank 0 (``phase``, ``step``,
            ``global_step``, ``loss``, ``lr`` ...); an exception raised there stops the run.

    Returns:
        ``{"stages": [metrics...], "baseline": metrics | None, "paths": {...}, "table": markdown,
        "info": {...}}`` (the same on every rank).
    """
    run_dir = cfg.run_dir()
    dist = setup_distributed(cfg.dist.strategy, run_device(cfg.run.device), cfg.dist.backend)
    if not dist.is_main:
        log = lambda m: None  # noqa: E731
        on_record = None
    try:
        _on_main(dist, lambda: _check_run_dir(cfg, run_dir, resume, log))
        ctx = prepare_context(cfg, dist, log, on_record)
        stages = plan_stages(cfg.grow.n_layer, cfg.grow.first_layers, cfg.grow.layers_per_stage)
        steps = [cfg.train.first_steps or cfg.train.steps] + [cfg.train.steps] * (len(stages) - 1)
        tokens_per_step = cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum
        log(f"growth plan: depths {[s.depth for s in stages]}, steps {steps}, "
            f"{sum(steps) * tokens_per_step * dist.world_size:,} training tokens, {dist.world_size} x {dist.device}")
        results = []
        for stage in stages:
            results.append(run_phase(ctx, _stage_phase(ctx, stage, stages, steps, tokens_per_step)))
        baseline = None
        if cfg.baseline.enabled:
            b_steps = cfg.baseline.steps or sum(steps)
            baseline = run_phase(ctx, _baseline_phase(ctx, cfg.grow.n_layer, b_steps, tokens_per_step))
        info = {
            "name": cfg.run.name,
            "plan": [s.depth for s in stages],
            "steps": steps,
            "tokens_per_step": tokens_per_step * dist.world_size,
            "world_size": dist.world_size,
            "eval_split": ctx.eval_split,
            "same_substrate": baseline is None
            or baseline["substrate_fingerprint"] == results[0]["substrate_fingerprint"],
            "final_model": str(run_dir / results[-1]["model_dir"]),
        }
        paths = _on_main(dist, lambda: write_report(run_dir, results, baseline, info))
        log(f"results: {paths['markdown']}" + (f", plot {paths['plot']}" if paths["plot"] else ""))
        return {"stages": results, "baseline": baseline, "paths": paths, "table": paths["table"], "info": info}
    finally:
        teardown_distributed(dist)
