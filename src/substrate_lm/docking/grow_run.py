"""A resumable growth run: stages, a monolithic baseline, exports, evaluation and the final table.

Run folder layout::

    <run>/grow.json                     the resolved config (a resumed run must match it)
    <run>/stages/01-depth1/ckpt.safetensors  checkpoint of the running stage, pickle-free (deleted when it finishes)
    <run>/stages/01-depth1/log.jsonl    training curve
    <run>/stages/01-depth1/model/       the exported model after the stage (HF directory)
    <run>/stages/01-depth1/metrics.json the stage is finished (written last)
    <run>/baseline-depth9/...           the monolithic model, same layout
    <run>/results.{json,md}, depth.png  metrics against depth

A stage with ``metrics.json`` and an exported model is never redone; a stage with a checkpoint
resumes from it (trainable parameters, optimizer, RNG, step), and the batches are a pure function
of the global step, so an interrupted and resumed run computes what an uninterrupted one does.

Stage k trains on global steps ``S_1 + ... + S_{k-1}`` onwards; the baseline trains on global steps
``0 .. sum S_k - 1``: grown and monolithic models see exactly the same training tokens.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import SubstrateError
from ..fsutil import atomic_write_json, atomic_write_text
from ..training.checkpoint import CheckpointCorrupt, load_plain_file, save_plain_file
from ._io import read_json
from .grow import Stage, block_fingerprints, grow_model, plan_stages, set_stage_trainable
from .grow_config import RESUMABLE_CHANGES, GrowConfig, diff_keys
from .loop import (
    TrainSpec,
    build_optimizer,
    capture_rng,
    evaluate,
    load_trainable_state,
    restore_rng,
    train_loop,
    trainable_state,
)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class RunContext:
    cfg: GrowConfig
    run_dir: Path
    device: torch.device
    train: Any
    val: Any
    eval_split: str
    chars_per_token: float | None
    tokenizer: Any
    vocab_size: int
    log: Callable[[str], None]
    on_record: Callable[[dict], None] | None = None


# ----------------------------------------------------------------------------------------------
# setup


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SubstrateError(f"run.device is {name} but CUDA is not available; use run.device=cpu")
    return torch.device(name)


def _open_data(cfg: GrowConfig, log):
    """Training and evaluation splits (prepared first when ``data.sources`` is set and needed)."""
    from ..data import TokenShards

    if not cfg.data.path:
        raise SubstrateError("no training data: set data.path to a folder written by `substrate-lm data prepare`")
    path = Path(os.path.expanduser(cfg.data.path))
    try:
        train = TokenShards(path, split="train")
    except SubstrateError:
        if not cfg.data.sources:
            raise
        if not cfg.model.tokenizer:
            raise SubstrateError(f"data.sources needs a tokenizer to prepare {path}: set model.tokenizer") from None
        from ..data import prepare_data

        log(f"preparing {path} from {', '.join(cfg.data.sources)}")
        prepare_data(cfg.data.sources, cfg.model.tokenizer, path, val_fraction=cfg.data.val_fraction,
                     seed=cfg.train.seed, progress=False)
        train = TokenShards(path, split="train")
    try:
        val = TokenShards(path, split="val")
    except SubstrateError:
        val = None
    need = cfg.train.seq_len + 1
    split = "val"
    if val is None or len(val) < need:
        log(f"note: {path} has no validation split of {need}+ tokens; evaluating on the training split")
        val, split = train, "train"
    return path, train, val, split


def _chars_per_token(path: Path, split: str) -> float | None:
    stats = read_json(path / "stats.json") or {}
    s = (stats.get("splits") or {}).get(split) or {}
    chars, tokens = s.get("characters"), s.get("tokens")
    return (chars / tokens) if chars and tokens else None


def _tokenizer(cfg: GrowConfig, data_path: Path):
    meta = read_json(data_path / "meta.json") or {}
    name = cfg.model.tokenizer or (meta.get("tokenizer") or {}).get("name")
    if not name:
        return None, meta
    from ..tokenizer import load_tokenizer

    try:
        return load_tokenizer(name), meta
    except SubstrateError:
        raise
    except Exception as exc:  # file and hub errors come in many types
        raise SubstrateError(f"cannot load tokenizer {name}: {str(exc).splitlines()[0]}") from None


def prepare_context(cfg: GrowConfig, log: Callable[[str], None] = _stderr, on_record=None) -> RunContext:
    """Open data and tokenizer, pick the device, check vocabulary and context sizes."""
    path, train, val, split = _open_data(cfg, log)
    tok, meta = _tokenizer(cfg, path)
    data_vocab = int((meta.get("tokenizer") or {}).get("vocab_size") or 0)
    if tok is not None:
        vocab = len(tok)
    else:
        vocab = int(cfg.model.overrides.get("vocab_size") or data_vocab)
    if data_vocab and data_vocab != vocab:
        raise SubstrateError(
            f"tokenizer/substrate mismatch: {path} was tokenised with a vocabulary of {data_vocab} but the "
            f"model would have {vocab} rows; use the data's tokenizer (model.tokenizer) or prepare the data again"
        )
    if not vocab:
        raise SubstrateError("unknown vocabulary size: set model.tokenizer or model.overrides.vocab_size")
    return RunContext(cfg=cfg, run_dir=cfg.run_dir(), device=_device(cfg.run.device), train=train, val=val,
                      eval_split=split, chars_per_token=_chars_per_token(path, split), tokenizer=tok,
                      vocab_size=vocab, log=log, on_record=on_record)


def _check_run_dir(cfg: GrowConfig, run_dir: Path, resume: bool, log) -> None:
    saved = read_json(run_dir / "grow.json")
    current = cfg.to_dict()
    if saved is None:
        has_stages = (run_dir / "stages").is_dir() and any((run_dir / "stages").iterdir())
        if has_stages:
            raise SubstrateError(f"{run_dir} holds stages but no grow.json; choose another run.dir")
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


def _spec(cfg: GrowConfig, steps: int, lr: float) -> TrainSpec:
    t = cfg.train
    return TrainSpec(steps=steps, batch_size=t.batch_size, seq_len=t.seq_len, grad_accum=t.grad_accum, lr=lr,
                     min_lr=min(t.min_lr, lr), warmup=min(t.warmup, max(0, steps - 1)), weight_decay=t.weight_decay,
                     betas=list(t.betas), clip=t.clip, seed=t.seed, precision=t.precision, mode=cfg.data.mode)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past ``step`` (written after the checkpoint a resumed phase restarts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue  # a torn last line
    atomic_write_text(path, "".join(f"{x}\n" for x in keep))


def _is_done(phase: Phase) -> dict | None:
    metrics = read_json(phase.dir / "metrics.json")
    if metrics is not None and (phase.dir / "model" / "config.json").is_file():
        return metrics
    return None


def run_phase(ctx: RunContext, phase: Phase) -> dict:
    """Train (or resume) one phase, export its model, evaluate it; returns its metrics."""
    from ..export import export_model, parameter_counts

    done = _is_done(phase)
    if done is not None:
        ctx.log(f"[{phase.label}] finished earlier: val loss {done.get('val_loss'):.4f}; skipped")
        return done
    cfg = ctx.cfg
    phase.dir.mkdir(parents=True, exist_ok=True)
    model, finalize, n_lower = phase.build()
    spec = _spec(cfg, phase.steps, phase.lr)
    if spec.seq_len > model.config.block_size:
        raise SubstrateError(f"train.seq_len={spec.seq_len} exceeds the model's block_size={model.config.block_size}")
    lower_before = block_fingerprints(model)[:n_lower]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = build_optimizer(model, spec)
    ckpt_path, log_path = phase.dir / "ckpt.safetensors", phase.dir / "log.jsonl"
    start, history, seconds = 0, [], 0.0
    if ckpt_path.is_file():
        try:
            state = load_plain_file(ckpt_path)  # safetensors + JSON: loading runs no code
        except CheckpointCorrupt as exc:  # a damaged file: one line, then start the phase over
            ctx.log(f"[{phase.label}] checkpoint unusable ({exc}); restarting the stage")
            state = None
        if state is not None:
            if state.get("steps") != spec.steps:
                raise SubstrateError(
                    f"{ckpt_path} was written for {state.get('steps')} steps, the config now says {spec.steps}; "
                    f"resume with the same config"
                )
            load_trainable_state(model, state["trainable"])
            opt.load_state_dict(state["optimizer"])
            restore_rng(state["rng"])
            start, history, seconds = int(state["step"]), list(state["losses"]), float(state.get("seconds", 0.0))
            ctx.log(f"[{phase.label}] resuming at step {start}/{spec.steps}")
    _truncate_log(log_path, start)
    t0 = time.perf_counter()

    def save(step: int, optimizer) -> None:
        save_plain_file(ckpt_path, {
            "step": step, "steps": spec.steps, "label": phase.label, "trainable": trainable_state(model),
            "optimizer": optimizer.state_dict(), "rng": capture_rng(), "losses": list(history),
            "seconds": seconds + time.perf_counter() - t0,
        })

    def record(r: dict) -> None:
        r = {"phase": phase.label, **r, "global_step": phase.step_offset + r["step"]}
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(r) + "\n")
        ctx.log(f"[{phase.label}] step {r['step']}/{spec.steps} loss {r['loss']:.4f} lr {r['lr']:.2e} "
                f"{r['tokens_per_s']:,.0f} tok/s")
        if ctx.on_record is not None:
            ctx.on_record(r)

    if start < spec.steps:
        ctx.log(f"[{phase.label}] training {phase.trained}: {trainable:,} parameters, {spec.steps} steps")
        train_loop(model, ctx.train, spec, step_offset=phase.step_offset, start=start, optimizer=opt,
                   on_checkpoint=save, checkpoint_every=cfg.checkpoint.interval, log=record,
                   log_every=cfg.log.interval, history=history)
    seconds += time.perf_counter() - t0
    lower_after = block_fingerprints(model)[:n_lower]
    model = finalize(model)
    model.eval()
    name = f"{cfg.run.name}-{phase.label}"
    card = (f"Grown layer by layer with substrate-lm ({phase.label}: {phase.trained}; "
            f"{phase.tokens_total:,} training tokens in total).")
    export_model(model, phase.dir / "model", tokenizer=ctx.tokenizer, name=name, card_extra=card)
    ev = evaluate(model, ctx.val, cfg.eval.batch_size or cfg.train.batch_size, cfg.train.seq_len,
                  cfg.eval.batches, cfg.train.precision)
    bpc = ev["loss"] / math.log(2) / ctx.chars_per_token if ctx.chars_per_token else None
    tail = history[-min(10, len(history)):] if history else []
    metrics = {
        "model": phase.label,
        "kind": phase.kind,
        "depth": phase.depth,
        "trained": phase.trained,
        "steps": spec.steps,
        "tokens": spec.steps * spec.batch_size * spec.seq_len * spec.grad_accum,
        "tokens_total": phase.tokens_total,
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
    }
    atomic_write_json(phase.dir / "metrics.json", metrics, default=str)
    ckpt_path.unlink(missing_ok=True)
    ctx.log(f"[{phase.label}] val loss {ev['loss']:.4f}" + (f", {bpc:.4f} bits/char" if bpc else "")
            + f"; exported {phase.dir / 'model'}")
    return metrics


# ----------------------------------------------------------------------------------------------
# the run


def _first_model(ctx: RunContext, depth: int):
    from ..factory import build_model

    cfg = ctx.cfg
    overrides = dict(cfg.model.overrides)
    overrides["n_layer"] = depth
    if ctx.tokenizer is None:
        overrides.setdefault("vocab_size", ctx.vocab_size)
    return build_model(cfg.model.preset, substrate=cfg.model.substrate or None, tokenizer=ctx.tokenizer,
                       seed=cfg.model.substrate_seed, overrides=overrides)


def _stage_phase(ctx: RunContext, stage: Stage, stages: list[Stage], steps: list[int], tokens_per_step: int) -> Phase:
    from ..modeling import SubstrateForCausalLM

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
        if stage.index == 1:
            model = _first_model(ctx, stage.depth)
        else:
            prev = stage_dir / stages[stage.index - 2].name / "model"
            try:
                base = SubstrateForCausalLM.from_pretrained(str(prev))
            except (OSError, ValueError) as exc:
                raise SubstrateError(f"cannot load the previous stage's model {prev}: {str(exc).splitlines()[0]}") from None
            model = grow_model(base, stage.n_new, seed=cfg.train.seed * 1_000_003 + stage.index)
        model.to(ctx.device)
        finalize = lambda m: m  # noqa: E731
        if lora_on:
            from .lora import apply_lora, merge

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
        model = _first_model(ctx, depth).to(ctx.device)
        set_stage_trainable(model, 0, True, train_substrate=True)
        return model, (lambda m: m), 0

    return Phase(kind="baseline", label="baseline", dir=ctx.run_dir / f"baseline-depth{depth}", depth=depth,
                 steps=steps, step_offset=0, tokens_total=steps * tokens_per_step,
                 lr=cfg.baseline.lr or cfg.train.lr, trained=f"all {depth} blocks + head (monolithic)", build=build)


def run_growth(cfg: GrowConfig, resume: bool = False, log: Callable[[str], None] = _stderr,
               on_record: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) a growth run end to end.

    Args:
        cfg: the run's :class:`GrowConfig`.
        resume: continue the run in ``cfg.run_dir()`` (finished stages are skipped, a running one
            resumes from its checkpoint). Without it an existing run folder is refused.
        log: receives progress lines.
        on_record: receives every training log record (``phase``, ``step``, ``loss`` ...).

    Returns:
        ``{"stages": [metrics...], "baseline": metrics | None, "paths": {...}, "table": markdown}``.
    """
    from .report import write_report

    run_dir = cfg.run_dir()
    _check_run_dir(cfg, run_dir, resume, log)
    ctx = prepare_context(cfg, log, on_record)
    stages = plan_stages(cfg.grow.n_layer, cfg.grow.first_layers, cfg.grow.layers_per_stage)
    steps = [cfg.train.first_steps or cfg.train.steps] + [cfg.train.steps] * (len(stages) - 1)
    tokens_per_step = cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum
    log(f"growth plan: depths {[s.depth for s in stages]}, steps {steps}, "
        f"{sum(steps) * tokens_per_step:,} training tokens, device {ctx.device}")
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
        "tokens_per_step": tokens_per_step,
        "eval_split": ctx.eval_split,
        "same_substrate": baseline is None or baseline["substrate_fingerprint"] == results[0]["substrate_fingerprint"],
        "final_model": str(run_dir / results[-1]["model_dir"]),
    }
    paths = write_report(run_dir, results, baseline, info)
    log(f"results: {paths['markdown']}" + (f", plot {paths['plot']}" if paths["plot"] else ""))
    return {"stages": results, "baseline": baseline, "paths": paths, "table": paths["table"], "info": info}
