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
# Small collectives (no-ops in one process)


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (the tensor itself in one process)."""
    if not ctx.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


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
