"""Layer-wise growth: stack new blocks on a trained model and choose what trains in a stage.

"Growing Transformers" (Bochkov, arXiv 2507.07129): train a 1-block model; freeze it; stack a new,
randomly initialised block on top; train only the new block; repeat. The later controlled study
grows 9 layers in stages of 3 (1-3, then 4-6, then 7-9). On a frozen substrate the input of
every block keeps its meaning from stage to stage, which is what makes this work.

Choices made here (configurable):

- The new blocks are initialised exactly as a fresh model of the new depth initialises them (the
  model's ``_init_weights``: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)).
- The final norm ``ln_f`` and the head ``lm_head`` are copied and keep training in every stage
  (``train_head=True``): the papers train "only the new layer", but the head must learn to read
  the new top of the stack. ``train_head=False`` trains the new blocks alone.
- The lower blocks are frozen and stay bit-identical, unless LoRA is on for that stage (see
  :mod:`substrate_lm.components.lora`), in which case their low-rank updates are merged at the end.
- A trainable ("unfrozen") substrate trains in the first stage only, then is frozen, as in the
  controlled study.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..errors import SubstrateError
from ..modeling import SubstrateForCausalLM
from ..modeling.configuration_composed import expert_config_dict


@dataclass(frozen=True)
class Stage:
    """One stage of a growth plan (1-based index)."""

    index: int
    depth: int
    """Blocks after the stage."""
    n_lower: int
    """Blocks inherited from the previous stage (0 in the first stage)."""

    @property
    def n_new(self) -> int:
        return self.depth - self.n_lower

    @property
    def name(self) -> str:
        return f"{self.index:02d}-depth{self.depth}"


def plan_stages(n_layer: int, first_layers: int = 1, layers_per_stage: int = 1) -> list[Stage]:
    """The stages that grow a model to ``n_layer`` blocks.

    Stage 1 trains a ``first_layers``-block model from scratch; every later stage stacks
    ``layers_per_stage`` blocks (the last one fewer when the depth does not divide evenly).

    >>> [s.depth for s in plan_stages(9, 3, 3)]
    [3, 6, 9]
    """
    if first_layers < 1 or layers_per_stage < 1 or n_layer < first_layers:
        raise SubstrateError(
            f"grow.n_layer={n_layer}, grow.first_layers={first_layers}, grow.layers_per_stage="
            f"{layers_per_stage}: need 1 <= first_layers <= n_layer and layers_per_stage >= 1"
        )
    stages = [Stage(1, first_layers, 0)]
    while stages[-1].depth < n_layer:
        prev = stages[-1].depth
        stages.append(Stage(len(stages) + 1, min(n_layer, prev + layers_per_stage), prev))
    return stages


def grow_model(model, n_new: int, seed: int | None = None):
    """A deeper copy of ``model``: its blocks, substrate, ``ln_f`` and ``lm_head`` copied, and
    ``n_new`` freshly initialised blocks stacked on top.

    Args:
        model: a :class:`SubstrateForCausalLM`.
        n_new: blocks to add (>= 1).
        seed: seed of the new blocks' initialisation (None: the current RNG state).

    Returns:
        A new :class:`SubstrateForCausalLM` with ``n_layer + n_new`` blocks (``model`` is untouched).
    """
    if n_new < 1:
        raise SubstrateError(f"grow needs at least one new block, got {n_new}")
    fields = expert_config_dict(model.config)
    old = int(fields["n_layer"])
    fields["n_layer"] = old + int(n_new)
    cfg = type(model.config)(**fields)
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    grown = SubstrateForCausalLM(cfg).to(device)
    result = grown.load_state_dict(model.state_dict(), strict=False)
    expected = {k for k in grown.state_dict() if k.startswith("blocks.") and int(k.split(".")[1]) >= old}
    if result.unexpected_keys or set(result.missing_keys) != expected:
        raise SubstrateError(  # pragma: no cover - guards a change in the model's layout
            f"growing the model did not map its weights (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    grown.token_embeddings.weight.requires_grad_(not cfg.substrate_frozen)
    grown.verify_substrate()
    if model.generation_config is not None:
        grown.generation_config = model.generation_config
    return grown


def set_stage_trainable(model, n_lower: int, train_head: bool = True, train_substrate: bool = False) -> None:
    """Freeze blocks ``0 .. n_lower-1`` (and the substrate); train the blocks above them, plus
    ``ln_f`` and ``lm_head`` when ``train_head``.

    With ``n_lower == 0`` (first stage, or a monolithic model) every block and the head train;
    ``train_substrate`` also trains a trainable ("unfrozen") table.

    Works on the bare model or through a peft wrapper (the same module objects), and leaves LoRA
    parameters as they are.
    """
    base = _base(model)
    for name, p in base.named_parameters():
        if "lora_" in name:
            continue
        p.requires_grad_(False)
    for block in base.blocks[n_lower:]:
        for name, p in block.named_parameters():
            if "lora_" not in name:
                p.requires_grad_(True)
    head = train_head or n_lower == 0
    for module in (base.ln_f, base.lm_head):
        for p in module.parameters():
            p.requires_grad_(head)
    trainable_table = train_substrate and not base.config.substrate_frozen
    base.token_embeddings.weight.requires_grad_(trainable_table)
    if not any(p.requires_grad for p in model.parameters()):
        raise SubstrateError("this stage would train nothing; check grow.train_head and the stage plan")


def _base(model):
    """The :class:`SubstrateForCausalLM` inside a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def block_fingerprints(model) -> list[str]:
    """sha256 of each block's parameters: a cheap check that frozen blocks did not move."""
    out = []
    for block in _base(model).blocks:
        h = hashlib.sha256()
        for name, p in sorted(block.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        out.append("sha256:" + h.hexdigest())
    return out
