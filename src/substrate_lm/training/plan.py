"""Memory and throughput plan of a run, computed by running the real training step on fake tensors.

``substrate-lm plan --config paper-1024-bit --gpus 8 --gpu-memory 80GB`` builds the config's model,
wraps it exactly as :class:`~substrate_lm.training.trainer.Trainer` does (:func:`parallelize`:
activation checkpointing as configured, compile off, FSDP2 ``fully_shard`` per block then root, or
DDP), builds its optimizer (:func:`build_optimizer`) and runs the trainer's step (``grad_accum``
micro-batches under bf16 autocast when configured, the chunked loss, gradient clipping, AdamW) under
``FakeTensorMode`` with a fake process group of world size N (torch's ``FakeStore`` / ``fake``
backend). Per-rank memory is measured with torch's ``FSDPMemTracker`` (``MemTracker`` for a plain
model), the way torchtitan's memory estimator does. Nothing is allocated and nothing is computed,
so a 2B-parameter model at 64 ranks plans in seconds on a laptop CPU.

What is fake-measured and what is analytic (this torch build is CPU-only):

* fake-measured: parameters, gradients, optimizer state, activations, FSDP2 all-gather /
  reduce-scatter buffers and the peak of a rank, for strategies ``none`` and ``fsdp2``. The fake
  tensors live on the CPU device (fake CUDA tensors cannot even be initialised on a CPU-only torch),
  so the kernels whose outputs are counted are the CPU ones (e.g. SDPA's CPU flash kernel, which,
  like CUDA's, saves only the output and the log-sum-exp).
* analytic: DDP's gradient buckets. DDP's C++ reducer touches tensor data and cannot run on fake
  tensors, so a ``ddp`` plan runs the unwrapped model on fake tensors and adds the buckets: one
  fp32 copy of the trainable gradients (``gradient_as_bucket_view`` is off in the trainer).
  :mod:`bench.bench_plan` checks this against a real 2-rank gloo run.
* not modelled (hence ``headroom``): the CUDA context, cuBLAS/NCCL workspaces, allocator
  fragmentation, FSDP2's prefetch of the next block on a CUDA stream, and ``torch.compile`` (a
  compiled run usually needs less activation memory than the eager run planned here).

Accumulation: FSDP2 keeps unsharded gradients between micro-batches that skip the gradient sync,
so the step is run with two micro-batches when ``grad_accum > 1`` (one without sync, the last with
it); later micro-batches repeat the state of the second, so the peak is the same as with all of them.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from ..components.loss import causal_lm_loss
from ..errors import SubstrateError
from ..modeling import SubstrateForCausalLM
from ..presets import get_preset
from .config import RunConfig
from .distributed import DistContext, parallelize
from .metrics import _GPU_PEAKS, flops_per_token, format_count
from .optim import build_optimizer

__all__ = ["StepMemory", "Plan", "parse_memory", "resolve_strategy", "fake_step_memory",
           "measure_step", "max_micro_batch", "make_plan", "format_plan", "gpu_peak_flops"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
GIB = 2**30


def parse_memory(text: str) -> int:
    """Bytes of ``"80GB"`` (decimal units: B, KB, MB, GB, TB) or ``"80GiB"`` (binary: KiB .. TiB).

    Raises:
        SubstrateError: anything else, in one line.
    """
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise SubstrateError(f"cannot read the memory size {text!r}; write e.g. 80GB, 80GiB or 24000MB")
    value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 2**20:
        raise SubstrateError(f"memory size {text!r} is below 1 MiB; write e.g. 80GB")
    return int(value)


def gpu_peak_flops(gpu: str, precision: str) -> float:
    """Data-sheet dense peak FLOP/s of one GPU named like ``H100`` (bf16 or fp32)."""
    for key, (p_bf16, p_fp32) in _GPU_PEAKS.items():
        if key.lower() == gpu.lower():
            peak = p_bf16 if precision == "bf16" else p_fp32
            if peak:
                return peak
    known = ", ".join(k for k, v in _GPU_PEAKS.items() if v[0 if precision == "bf16" else 1])
    raise SubstrateError(f"no {precision} peak for GPU {gpu!r}; choose one of {known} "
                         "or pass --peak-tflops")


def resolve_strategy(strategy: str, world_size: int) -> str:
    """The data-parallel strategy the trainer uses for ``dist.strategy`` at ``world_size`` ranks
    (:func:`~substrate_lm.training.distributed.setup_distributed`)."""
    if world_size == 1:
        return "none"
    if strategy == "auto":
        return "ddp"
    if strategy == "none":
        raise SubstrateError(f"{world_size} GPUs need dist.strategy ddp or fsdp2, not none")
    return strategy


@dataclass
class StepMemory:
    """Memory of one rank over a training step (bytes)."""

    batch_size: int
    params: int
    """This rank's parameters (its FSDP2 shards), as stored between steps."""
    grads: int
    """This rank's gradients after the step's backward (sharded under FSDP2)."""
    optimizer: int
    """This rank's optimizer state (AdamW: two fp32 moments per trainable element, plus steps)."""
    activations: int
    """Activations, temporaries and inputs at the moment of the peak."""
    peak: int
    """Peak of everything the rank holds."""
    at_peak: dict[str, int] = field(default_factory=dict)
    """The tracker's categories at the moment of the peak."""
    analytic: dict[str, int] = field(default_factory=dict)
    """Parts added by formula, not measured (DDP buckets), already included in ``peak``."""
    seconds: float = 0.0


@dataclass
class Plan:
    """A run's per-rank memory, largest micro-batch and throughput at a stated MFU."""

    name: str
    model_class: str
    n_params: int
    n_trainable: int
    vocab_size: int
    world_size: int
    strategy: str
    precision: str
    activation_checkpointing: bool
    seq_len: int
    grad_accum: int
    memory: StepMemory
    gpu_memory: int
    headroom: float
    max_batch: int
    max_batch_memory: StepMemory | None
    tokens_per_step: int
    flops_per_token: float
    gpu: str
    peak_flops: float
    mfu: float
    step_time: float
    seconds: float
    compile_in_config: bool = False
    searched: bool = True
    """Whether the largest micro-batch was searched (``max_batch`` is 0 when it was not)."""

    @property
    def usable(self) -> int:
        return int(self.gpu_memory * (1.0 - self.headroom))


# ----------------------------------------------------------------------------------------------
# The step


def _model_config(cfg: RunConfig):
    if cfg.model.init_from:
        raise SubstrateError("plan builds the model from model.preset; a config with model.init_from "
                             "cannot be planned (set model.preset and model.overrides to its shape)")
    try:
        return get_preset(cfg.model.preset, substrate=cfg.model.substrate or None,
                          **cfg.model.overrides)
    except (ValueError, TypeError) as exc:
        raise SubstrateError(str(exc)) from None


def _group(snapshot: dict[Any, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in snapshot.items():
        name = str(getattr(key, "value", key))  # the trackers' keys are str enums and "Total"
        out[name] = out.get(name, 0) + int(value)
    return out


def _local_bytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _run_step(model: nn.Module, cfg: RunConfig, ctx: DistContext, batch_size: int, *,
              mesh: Any = None, make_batch: Callable[[int, int], torch.Tensor],
              on_step: Callable[[], None] = lambda: None) -> StepMemory:
    """Wrap ``model`` as the trainer does, build its optimizer and run one steady-state step of the
    trainer (micro-batches, clipping, AdamW), tracking this rank's memory. ``model`` must be on
    ``ctx.device``."""
    from torch.distributed._tools.mem_tracker import MemTracker

    t = cfg.train
    t0 = time.perf_counter()
    if t.loss_chunk_size and hasattr(model.config, "loss_chunk_size"):
        model.config.loss_chunk_size = t.loss_chunk_size
    wrap = ctx if ctx.strategy != "ddp" or not _is_fake(model) else replace(ctx, strategy="none")
    fwd = parallelize(model, wrap, compile=False,
                      activation_checkpointing=t.activation_checkpointing, mesh=mesh)
    opt = build_optimizer(model, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, eps=t.eps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    micro = min(t.grad_accum, 2)
    batches = [(make_batch(batch_size, t.seq_len), make_batch(batch_size, t.seq_len))
               for _ in range(micro)]
    # AdamW creates its state in the first step: make it now (zero gradients, no tracking), so the
    # one tracked step is a steady-state step (torchtitan runs two steps for the same reason)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if wrap.strategy == "fsdp2":
        from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

        tracker = FSDPMemTracker(model, opt)
    else:
        tracker = MemTracker()
        tracker.track_external(model, opt)  # after the state exists: it is tracked at this call
        # MemTracker hooks every parameter's gradient and fails on a frozen one (the substrate):
        # mark those as already hooked with handles that remove nothing
        for p in model.parameters():
            if not p.requires_grad:
                tracker._param_to_grad_hook_handles[p] = (_NoHook(), _NoHook())
    for xy in batches:
        if hasattr(tracker, "track_inputs"):
            tracker.track_inputs(xy)
    with tracker:
        for i, (x, y) in enumerate(batches):
            if i:  # per-module stats allow one forward per module; the peak is kept
                tracker.reset_mod_stats()
            if wrap.strategy == "fsdp2":
                model.set_requires_gradient_sync(i == micro - 1)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16,
                                enabled=t.precision == "bf16"):
                loss = causal_lm_loss(fwd, x, y, chunked=t.chunked_loss, signature_of=model)
            (loss / t.grad_accum).backward()
            del loss
        grads = sum(_local_bytes(p.grad) for p in trainable if p.grad is not None)
        if t.clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, t.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        on_step()
    snaps = tracker.get_tracker_snapshot("peak")
    snap = _group(snaps.get(ctx.device, next(iter(snaps.values()), {})))
    total = snap.pop("Total", sum(snap.values()))
    params = sum(_local_bytes(p) for p in model.parameters()) + \
        sum(_local_bytes(b) for b in model.buffers())
    optim = sum(_local_bytes(v) for st in opt.state.values() for v in st.values()
                if isinstance(v, torch.Tensor))
    acts = sum(v for k, v in snap.items() if k in ("Activation", "Temp", "Inputs", "Other"))
    analytic: dict[str, int] = {}
    if ctx.strategy == "ddp" and wrap.strategy == "none":
        # DDP's reducer: one flat fp32 bucket per ~25 MB of trainable gradients, all of them
        analytic["DDP buckets"] = sum(p.numel() * p.element_size() for p in trainable)
    return StepMemory(batch_size=batch_size, params=params, grads=grads, optimizer=optim,
                      activations=acts, peak=total + sum(analytic.values()), at_peak=snap,
                      analytic=analytic, seconds=time.perf_counter() - t0)


class _NoHook:
    def remove(self) -> None:
        pass


def _is_fake(model: nn.Module) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    p = next(model.parameters())
    return isinstance(p, FakeTensor) or isinstance(getattr(p, "data", None), FakeTensor)


class _FakeWorld:
    """A ``fake`` process group of ``world_size`` ranks (this process is rank 0) and its mesh."""

    def __init__(self, world_size: int, strategy: str):
        self.world_size, self.strategy = world_size, strategy
        self.mesh = None
        self.owned = False

    def __enter__(self) -> "_FakeWorld":
        if self.strategy == "none":
            return self
        if dist.is_initialized():
            raise SubstrateError("plan needs its own (fake) process group; run it outside "
                                 "torchrun and outside a training process")
        from torch.testing._internal.distributed.fake_pg import FakeStore

        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=self.world_size)
        self.owned = True
        if self.strategy == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh

            # outside FakeTensorMode: making a mesh reads real rank tensors
            self.mesh = init_device_mesh("cpu", (self.world_size,))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def _fake_step(cfg: RunConfig, world: _FakeWorld, batch_size: int) -> StepMemory:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mcfg = _model_config(cfg)
    ctx = DistContext(rank=0, world_size=world.world_size, device=torch.device("cpu"),
                      strategy=world.strategy)
    vocab = int(mcfg.vocab_size)
    with FakeTensorMode():
        model = SubstrateForCausalLM(mcfg)  # the preset's init runs on fake tensors: no memory
        model.train()
        return _run_step(model, cfg, ctx, batch_size, mesh=world.mesh,
                         make_batch=lambda b, s: torch.randint(0, vocab, (b, s)))


def fake_step_memory(cfg: RunConfig, world_size: int, batch_size: int | None = None,
                     strategy: str | None = None) -> StepMemory:
    """Per-rank memory of ``cfg``'s training step at ``world_size`` ranks, on fake tensors."""
    strat = resolve_strategy(strategy or cfg.dist.strategy, world_size)
    with _FakeWorld(world_size, strat) as world:
        return _fake_step(cfg, world, batch_size or cfg.train.batch_size)


def measure_step(cfg: RunConfig, model: nn.Module, ctx: DistContext,
                 batch_size: int | None = None) -> StepMemory:
    """The same step on real tensors in the current (real) process group: the plan's yardstick."""
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(ctx.rank)
    model.to(ctx.device).train()
    return _run_step(model, cfg, ctx, batch_size or cfg.train.batch_size,
                     make_batch=lambda b, s: torch.randint(0, vocab, (b, s), generator=gen))


def max_micro_batch(peak_of: Callable[[int], int], usable: int, *, start: int = 1,
                    limit: int = 1 << 16) -> int:
    """Largest micro-batch ``b <= limit`` with ``peak_of(b) <= usable`` (0 when even 1 does not fit).

    Fits the line through ``start`` and ``2 * start`` (activations grow linearly with the batch),
    tries its prediction, gallops from there and bisects between the largest batch seen to fit and
    the smallest seen not to (peaks are assumed to grow with the batch), so a linear peak takes
    four evaluations.
    """
    seen: dict[int, int] = {}

    def fits(b: int) -> bool:
        if b not in seen:
            seen[b] = peak_of(b)
        return seen[b] <= usable

    start = max(1, min(start, limit))
    if not fits(start):
        good, bad = 0, start
    elif 2 * start > limit:
        good, bad = start, limit + 1
    elif not fits(2 * start):
        good, bad = start, 2 * start
    else:
        lo, hi = start, 2 * start
        slope = max(1.0, (seen[hi] - seen[lo]) / (hi - lo))
        guess = max(hi, min(limit, hi + int((usable - seen[hi]) // slope)))
        good, bad = hi, limit + 1
        if guess > hi:
            step = 1
            if fits(guess):
                good = guess
                while good + step <= limit:
                    if not fits(good + step):
                        bad = good + step
                        break
                    good, step = good + step, 2 * step
            else:
                bad = guess
                while bad - step > good:
                    if fits(bad - step):
                        good = bad - step
                        break
                    bad, step = bad - step, 2 * step
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def make_plan(cfg: RunConfig, gpus: int, gpu_memory: int, *, strategy: str | None = None,
              gpu: str = "H100", peak_tflops: float | None = None, mfu: float = 0.4,
              headroom: float = 0.10, search: bool = True, name: str | None = None) -> Plan:
    """Plan ``cfg`` on ``gpus`` GPUs of ``gpu_memory`` bytes each (see the module docstring).

    Raises:
        SubstrateError: bad numbers, an unknown GPU, a config that cannot be planned.
    """
    if gpus < 1:
        raise SubstrateError(f"--gpus must be at least 1, not {gpus}")
    if not 0 < mfu <= 1:
        raise SubstrateError(f"--mfu must be in (0, 1], not {mfu}")
    if not 0 <= headroom < 1:
        raise SubstrateError(f"--headroom must be in [0, 1), not {headroom}")
    t = cfg.train
    peak = peak_tflops * 1e12 if peak_tflops else gpu_peak_flops(gpu, t.precision)
    strat = resolve_strategy(strategy or cfg.dist.strategy, gpus)
    t0 = time.perf_counter()
    mcfg = _model_config(cfg)
    if t.seq_len > int(mcfg.block_size):
        raise SubstrateError(f"train.seq_len {t.seq_len} exceeds the model's context length "
                             f"{mcfg.block_size}; lower --train.seq_len")
    with torch.device("meta"):
        meta = SubstrateForCausalLM(mcfg)
    n_params = sum(p.numel() for p in meta.parameters())
    n_train = sum(p.numel() for p in meta.parameters() if p.requires_grad)
    fpt = flops_per_token(meta, t.seq_len)
    usable = int(gpu_memory * (1.0 - headroom))
    with _FakeWorld(gpus, strat) as world:
        memory = _fake_step(cfg, world, t.batch_size)
        runs = {t.batch_size: memory}

        def peak_of(b: int) -> int:
            if b not in runs:
                runs[b] = _fake_step(cfg, world, b)
            return runs[b].peak

        best = max_micro_batch(peak_of, usable, start=t.batch_size) if search else 0
    tokens = t.batch_size * t.seq_len * t.grad_accum * gpus
    step_time = tokens * fpt / (gpus * peak * mfu)
    return Plan(name=name or cfg.run.name, model_class=type(meta).__name__, n_params=n_params,
                n_trainable=n_train, vocab_size=int(mcfg.vocab_size), world_size=gpus,
                strategy=strat, precision=t.precision,
                activation_checkpointing=t.activation_checkpointing, seq_len=t.seq_len,
                grad_accum=t.grad_accum, memory=memory, gpu_memory=gpu_memory, headroom=headroom,
                max_batch=best, max_batch_memory=runs.get(best), tokens_per_step=tokens,
                flops_per_token=fpt, gpu=gpu if not peak_tflops else f"{peak_tflops:g} TFLOP/s",
                peak_flops=peak, mfu=mfu, step_time=step_time,
                seconds=time.perf_counter() - t0, compile_in_config=t.compile, searched=search)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def format_plan(plan: Plan) -> str:
    """The plan as the lines ``substrate-lm plan`` prints."""
    m = plan.memory
    ac = "on" if plan.activation_checkpointing else "off"
    prec = "bf16 autocast, fp32 master weights" if plan.precision == "bf16" else "fp32"
    tracker = "FSDPMemTracker" if plan.strategy == "fsdp2" else "MemTracker"
    lines = [
        f"plan: {plan.name}: {plan.model_class}, {plan.n_params / 1e6:.1f}M parameters "
        f"({plan.n_trainable / 1e6:.1f}M trainable), vocab {plan.vocab_size:,}",
        f"  {plan.world_size} x {plan.gpu} with {plan.gpu_memory / 1e9:g} GB "
        f"({_gib(plan.gpu_memory)}); {plan.strategy}; {prec}; activation checkpointing {ac}; "
        f"compile off" + (" (the config compiles; planned eager)" if plan.compile_in_config else ""),
        f"per rank, micro-batch {m.batch_size} x {plan.seq_len} tokens, grad_accum "
        f"{plan.grad_accum} (fake tensors, {tracker}):",
        f"  params       {_gib(m.params):>12}",
        f"  grads        {_gib(m.grads):>12}",
        f"  optimizer    {_gib(m.optimizer):>12}",
        f"  activations  {_gib(m.activations):>12}  (at the peak)",
    ]
    for k, v in m.analytic.items():
        lines.append(f"  {k:<12} {_gib(v):>12}  (analytic: not runnable on fake tensors)")
    lines.append(f"  peak         {_gib(m.peak):>12}  of {_gib(plan.usable)} usable "
                 f"({100 * (1 - plan.headroom):.0f}% of the GPU; the rest for CUDA context, "
                 "workspaces, fragmentation)")
    at = ", ".join(f"{k} {v / GIB:.2f}" for k, v in m.at_peak.items() if v)
    lines.append(f"  at the peak (GiB): {at}")
    if not plan.searched:
        lines.append("largest micro-batch that fits: not searched (--no-search)")
    elif plan.max_batch_memory is not None or plan.max_batch == 0:
        if plan.max_batch == 0:
            lines.append("largest micro-batch that fits: none (micro-batch 1 exceeds the usable "
                         "memory; use more GPUs, fsdp2 or activation checkpointing)")
        else:
            lines.append(f"largest micro-batch that fits: {plan.max_batch} "
                         f"(peak {_gib(plan.max_batch_memory.peak)})")
    verdict = "fits" if m.peak <= plan.usable else "DOES NOT FIT"
    lines += [
        f"configured micro-batch {m.batch_size}: {verdict}",
        f"tokens per step: {m.batch_size} x {plan.seq_len} x {plan.grad_accum} x {plan.world_size} "
        f"= {plan.tokens_per_step:,}",
        f"FLOPs per token: {plan.flops_per_token / 1e9:.3f} GFLOP (6 N_matmul + 12 L H Q T)",
        f"step time at {100 * plan.mfu:.0f}% MFU of {plan.peak_flops / 1e12:g} TFLOP/s per GPU: "
        f"{plan.step_time:.3f} s ({format_count(plan.tokens_per_step / plan.step_time)} tokens/s)",
        f"planned in {plan.seconds:.1f} s",
    ]
    return "\n".join(lines)
