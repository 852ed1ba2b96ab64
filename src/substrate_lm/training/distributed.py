"""Process groups, DDP and FSDP2 wrapping, and full state dicts that work under both.

Parallelism is applied from outside the model (torchtitan's ``parallelize_llama`` pattern), in a
fixed order: activation checkpointing -> compile -> data parallel (DDP, or FSDP2 ``fully_shard`` on
every transformer block and then the root). The model itself never knows how it is trained.

Launch with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous)::

    torchrun --standalone --nproc_per_node 2 -m substrate_lm.cli.main train --config tiny
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..errors import SubstrateError


@dataclass
class DistContext:
    """Where this process sits: rank, world size, device, and the data-parallel strategy in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "none"
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) outside it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def setup_distributed(strategy: str = "auto", device: str = "auto",
                      backend: str = "auto") -> DistContext:
    """Detect torchrun, pick the device, start the process group when there is more than one rank.

    Args:
        strategy: ``auto`` (DDP with several processes, else none), ``none``, ``ddp`` or ``fsdp2``.
        device: ``auto``, ``cpu`` or ``cuda``.
        backend: ``auto`` (nccl on CUDA, gloo on CPU), ``gloo`` or ``nccl``.

    Raises:
        SubstrateError: CUDA requested but absent, or several processes with strategy ``none``.
    """
    rank, world, local_rank = env_world()
    if device == "cuda" and not torch.cuda.is_available():
        raise SubstrateError("run.device is cuda but no CUDA device is available; use --run.device cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "none"
    if world > 1 and strategy == "none":
        raise SubstrateError(f"launched with {world} processes but dist.strategy is none; "
                             "use --dist.strategy ddp or fsdp2")
    if world == 1:
        strategy = "none"  # one process: wrapping would only add overhead
    owns = False
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                                device_id=dev if use_cuda else None)
        owns = True
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev,
                       strategy=strategy, owns_group=owns)


def teardown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        ctx.owns_group = False


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a causal LM (units of FSDP sharding and checkpointing).

    Tries ``model.blocks`` (ours), then the module classes HF lists in ``_no_split_modules``
    (GPTNeoXLayer, LlamaDecoderLayer, ...).
    """
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        return list(blocks)
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = [m for m in model.modules() if type(m).__name__ in names]
    if found:
        return found
    raise SubstrateError(f"cannot find the transformer blocks of {type(model).__name__}; "
                         "expose them as model.blocks")


def apply_activation_checkpointing(blocks: Iterable[nn.Module]) -> None:
    """Recompute each block's forward in backward (non-reentrant), keeping parameter names intact.

    The block's ``forward`` is replaced on the instance rather than wrapping the module, so state-dict
    keys, FSDP hooks and HF code that walks the model all see the same tree.
    """
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        inner = block.forward

        def forward(*args: Any, _inner=inner, **kwargs: Any) -> Any:
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward  # type: ignore[method-assign]


def apply_compile(blocks: Iterable[nn.Module]) -> None:
    """``torch.compile`` each block in place (per-block compile keeps compile time flat in depth)."""
    for block in blocks:
        block.compile()


def parallelize(model: nn.Module, ctx: DistContext, *, compile: bool = False,
                activation_checkpointing: bool = False, mesh: Any = None) -> nn.Module:
    """Apply AC -> compile -> DDP/FSDP2 to ``model`` (already on ``ctx.device``).

    ``mesh``: the FSDP2 device mesh (default: one over the whole world, made by ``fully_shard``);
    the memory plan passes one built outside ``FakeTensorMode``.

    Returns:
        The module to call for training: a DDP wrapper, or ``model`` itself (plain, or sharded in
        place by ``fully_shard``). Keep ``model`` for state dicts and generation.
    """
    blocks = find_blocks(model) if (compile or activation_checkpointing
                                    or ctx.strategy == "fsdp2") else []
    if activation_checkpointing:
        apply_activation_checkpointing(blocks)
    if compile:
        apply_compile(blocks)
    if ctx.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if ctx.strategy == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        # each block is one all-gather unit; the root group holds the table, final norm and head
        for block in blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


# ----------------------------------------------------------------------------------------------
# State dicts (full, unsharded, on CPU) that work for plain, DDP and FSDP2 models alike


def _full_options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full model state dict on CPU; under torchrun only rank 0 gets it (others get {}).

    Collective under FSDP2: every rank must call it.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimizer state keyed by parameter names (portable across DDP/FSDP2/single process)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict into a plain or FSDP2-sharded model (each rank keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    try:
        set_model_state_dict(model, state, options=_full_options(strict=True))
    except RuntimeError as exc:
        raise SubstrateError("checkpoint does not fit this model (different architecture?): "
                             + str(exc).splitlines()[0]) from None


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any]) -> None:
    """Inverse of :func:`full_optimizer_state`."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_full_options())


# ----------------------------------------------------------------------------------------------
# Sharded checkpoints (FSDP2): every rank writes its own shards with torch.distributed.checkpoint
#
# The shards are safetensors files written by DCP's HuggingFaceStorageWriter (one file per rank,
# ``shard-0000R-model-00001-of-00001.safetensors``); DCP's own sharding record (each piece's offsets)
# sits in the safetensors header as JSON, so there is no pickled ``.metadata`` file and reading the
# shards back never unpickles anything. Keys are flat: ``model/<fqn>`` for weights and
# ``optim/<fqn>/<name>`` for optimizer tensors (``exp_avg``, ``exp_avg_sq``, ``step``); the
# optimizer's ``param_groups`` (plain numbers) travel in the checkpoint's ``state.json``.

MODEL_PREFIX = "model/"
OPTIM_PREFIX = "optim/"


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer | None
                  ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict[str, Any]]:
    """This rank's state as ``(flat tensors, optimizer param_groups, non-tensor optimizer values)``.

    Under FSDP2 the tensors are DTensors (each rank holds its shard); on a plain model they are the
    full tensors. Collective under FSDP2 (every rank must call it). An optimizer without state yet is
    given its (zero) state first, so a resume can load into it.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    flat: dict[str, torch.Tensor] = {MODEL_PREFIX + k: v for k, v in get_model_state_dict(model).items()}
    groups: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if optimizer is not None:
        osd = get_optimizer_state_dict(model, optimizer)
        for fqn, entry in osd["state"].items():
            for name, value in entry.items():
                if isinstance(value, torch.Tensor):
                    flat[f"{OPTIM_PREFIX}{fqn}/{name}"] = value
                else:
                    extra.setdefault(fqn, {})[name] = value
        groups = osd["param_groups"]
    return flat, groups, extra


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: str | os.PathLike
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write this rank's shards of model and optimizer into ``folder`` (collective; files fsynced).

    Returns:
        ``(param_groups, non-tensor optimizer values)`` for the caller to store as plain data.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    flat, groups, extra = sharded_state(model, optimizer)
    writer = HuggingFaceStorageWriter(os.fspath(folder), save_distributed=True)
    dcp.save(flat, storage_writer=writer)
    return groups, extra


def sharded_metadata(folder: str | os.PathLike) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """``{key: (full shape, dtype)}`` of every tensor in a folder of shards (headers only)."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    reader = HuggingFaceStorageReader(os.fspath(folder))
    reader.reset(os.fspath(folder))
    meta = reader.read_metadata()
    return {k: (m.size, m.properties.dtype) for k, m in meta.state_dict_metadata.items()}


def read_sharded(folder: str | os.PathLike, prefix: str) -> dict[str, torch.Tensor]:
    """Full CPU tensors of every key under ``prefix`` (prefix removed), assembled from all shards,
    in this process alone (no process group needed, none used)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    target = {k: torch.empty(size, dtype=dtype) for k, (size, dtype) in sharded_metadata(folder).items()
              if k.startswith(prefix)}
    if target:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(target, storage_reader=HuggingFaceStorageReader(os.fspath(folder)), no_dist=True)
    return {k[len(prefix):]: v for k, v in target.items()}


def full_optimizer_from_shards(folder: str | os.PathLike, param_groups: list[dict[str, Any]],
                               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The name-keyed full optimizer state (as :func:`full_optimizer_state` gives) of a sharded save."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in read_sharded(folder, OPTIM_PREFIX).items():
        fqn, _, name = key.rpartition("/")
        state.setdefault(fqn, {})[name] = value
    for fqn, values in (extra or {}).items():
        state.setdefault(fqn, {}).update(values)
    return {"state": state, "param_groups": param_groups}


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: str | os.PathLike,
                 param_groups: list[dict[str, Any]] | None, extra: dict[str, Any] | None = None) -> None:
    """Load a sharded save into ``model`` (and ``optimizer``) as they are sharded now (collective).

    DCP reshards: a save of N ranks loads on M ranks, each rank reading only the pieces it holds.

    Raises:
        SubstrateError: the save does not fit this model (other architecture or parameter names).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    flat, _, _ = sharded_state(model, optimizer)
    saved = sharded_metadata(folder)
    want = {k for k in flat if k.startswith(MODEL_PREFIX) or optimizer is not None}
    missing = sorted(want - set(saved))
    unexpected = sorted(k for k in saved if k.startswith(MODEL_PREFIX) and k not in flat)
    if missing or unexpected:
        raise SubstrateError("checkpoint does not fit this model (different architecture?): missing "
                             f"{[k.split('/', 1)[1] for k in missing[:3]]}, unexpected "
                             f"{[k.split('/', 1)[1] for k in unexpected[:3]]}")
    for k in flat:
        if tuple(flat[k].shape) != tuple(saved[k][0]):
            raise SubstrateError(f"checkpoint does not fit this model: {k.split('/', 1)[1]} has shape "
                                 f"{tuple(saved[k][0])} there, {tuple(flat[k].shape)} here")
    dcp.load(flat, storage_reader=HuggingFaceStorageReader(os.fspath(folder)))
    model_sd = {k[len(MODEL_PREFIX):]: v for k, v in flat.items() if k.startswith(MODEL_PREFIX)}
    set_model_state_dict(model, model_sd, options=StateDictOptions(strict=True))
    if optimizer is not None:
        state: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            if key.startswith(OPTIM_PREFIX):
                fqn, _, name = key[len(OPTIM_PREFIX):].rpartition("/")
                state.setdefault(fqn, {})[name] = value
        for fqn, values in (extra or {}).items():
            state.setdefault(fqn, {}).update(values)
        set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": param_groups or []})


# ----------------------------------------------------------------------------------------------
# Small collectives (no-ops in one process)


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (the tensor itself in one process)."""
    if not ctx.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of a tensor over ranks (the tensor itself in one process)."""
    if not ctx.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_object(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
