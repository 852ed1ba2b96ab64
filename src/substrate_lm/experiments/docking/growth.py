"""The docking experiment's growth check: per seed, :func:`substrate_lm.docking.run_growth` grows a
model block by block (stage 1 trains a model from scratch, every later stage one new block plus the
head, the lower blocks frozen, optionally adapted by LoRA) and compares its validation loss with a
monolithic model of the same depth trained on the same number of tokens.

Two baselines (``docking.grow_baseline``):

* ``own``: growth runs on the union data of the experiment's world to ``docking.grow_layers``
  blocks, and the growth run trains the monolithic model itself on the same batches;
* ``demo``: growth runs on the demo's world and is compared with the demo's own random-bits model of
  the same seed (:class:`GrowthBase`), which is already trained: the grown model has its depth, a
  first stage one block shallower trains ``train.steps - docking.grow_steps`` steps and the last
  block ``docking.grow_steps``, so both saw ``train.steps`` batches of the same size drawn with the
  same seed from the same shards. Both models are scored by one function on the same validation
  batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ...data import TokenShards
from ...docking import evaluate, load_grow_config, run_growth
from ...errors import SubstrateError
from ...fsutil import atomic_write_json, read_json
from ...loading import load_model_and_tokenizer
from ..findings import GROWTH_TOLERANCE
from .composition import table_fingerprint
from .records import read_done
from .settings import DockingSettings, expert_sections


@dataclass(frozen=True)
class GrowthBase:
    """Monolithic models trained elsewhere that growth is compared with (``docking.grow_baseline``
    demo): the demo's random-bits models, one per seed, with the shards and tokenizer they trained
    on. They trained with the demo's [model] and [train] sections (the docking settings' own)."""

    data: str
    """Prepared shards the models trained on (growth trains on them; both are scored on their
    validation split)."""
    tokenizer: str
    """Their tokenizer folder."""
    models: dict[int, str]
    """Exported model folder of each seed."""
    steps: dict[int, int]
    """Optimizer steps each of them trained (of the [train] section's batch size and length)."""
    label: str = "the demo's random-bits model"
    """How the report names the monolithic model."""


def _depth(model_dir: str) -> int:
    return int(read_json(Path(model_dir) / "config.json", kind=dict, what="model config")["n_layer"])


def growth_plan(s: DockingSettings, base: GrowthBase | None, seed: int) -> dict:
    """``{n_layer, first_layers, first_steps, steps}`` of the growth run of one seed: the
    ``docking.grow_*`` keys (own baseline), or derived from the demo's model (see the module)."""
    d = s.docking
    if base is None:
        return {"n_layer": d.grow_layers, "first_layers": d.grow_first_layers, "first_steps": d.grow_first_steps,
                "steps": d.grow_steps}
    depth = _depth(base.models[seed])
    return {"n_layer": depth, "first_layers": depth - 1, "first_steps": s.train.steps - d.grow_steps,
            "steps": d.grow_steps}


def growth_config(out: Path, s: DockingSettings, prep: dict, seed: int, base: GrowthBase | None = None):
    """The growth run of one seed (:func:`substrate_lm.docking.load_grow_config`): the experts'
    width, heads, context and optimiser, the plan of :func:`growth_plan`, ``docking.grow_lr``; on the
    experiment's union data with its own monolithic model, or on ``base``'s data without one."""
    model, train = expert_sections(s)
    d = s.docking
    plan = growth_plan(s, base, seed)
    if base is None:
        data, tokenizer = str(prep["data"]["all"]), str(prep["tokenizer"])
    else:
        data, tokenizer = base.data, base.tokenizer
        train = s.train  # the demo models' own schedule (equal tokens); the experts' steps do not apply
    first = plan["first_steps"] or plan["steps"]
    return load_grow_config({
        "run": {"name": f"docking-grow-seed{seed}", "dir": str(out / f"seed{seed}" / "grow"), "device": "cpu"},
        "model": {"preset": model.preset, "substrate": "bits", "substrate_seed": seed, "tokenizer": tokenizer,
                  "overrides": {k: v for k, v in model.overrides.items() if k != "n_layer"}},
        "data": {"path": data, "mode": "random"},
        "grow": {"n_layer": plan["n_layer"], "first_layers": plan["first_layers"], "layers_per_stage": 1,
                 "train_head": True},
        **({"lora": {"enabled": True, "r": d.grow_lora_rank, "alpha": 2.0 * d.grow_lora_rank}} if d.grow_lora_rank else {}),
        "train": {"steps": plan["steps"], "first_steps": plan["first_steps"], "batch_size": train.batch_size,
                  "seq_len": train.seq_len, "lr": d.grow_lr,
                  "min_lr": min(train.min_lr, d.grow_lr), "warmup": min(train.warmup, max(0, min(first, plan["steps"]) - 1)),
                  "weight_decay": train.weight_decay, "seed": seed, "precision": train.precision},
        "eval": {"steps": d.eval_batches},
        "baseline": {"enabled": base is None},
        "checkpoint": {"interval": max(1, plan["steps"] // 2)},
        "log": {"interval": max(1, plan["steps"] // 2), "progress": False},
    })


def run_growth_seed(out: Path, s: DockingSettings, prep: dict, seed: int, log: Callable[[str], None],
                    base: GrowthBase | None = None) -> dict:
    """Grow block by block and compare with a monolithic model at equal tokens (trained here, or
    ``base``'s model of this seed); one row."""
    path = out / f"seed{seed}" / "growth.json"
    done = read_done(path)
    if done is not None:
        return done
    if base is not None and seed not in base.models:
        raise SubstrateError(f"growth seed {seed} has no demo model to compare with (seeds {sorted(base.models)})")
    w0, c0 = time.perf_counter(), time.process_time()
    cfg = growth_config(out, s, prep, seed, base)
    plan = growth_plan(s, base, seed)
    first = plan["first_steps"] or plan["steps"]
    total = first + (plan["n_layer"] - plan["first_layers"]) * plan["steps"]
    against = (f"against {base.label} of seed {seed} ({total} steps, already trained)" if base is not None
               else f"and the monolithic baseline ({total} steps)")
    log(f"docking: seed {seed}: growing to {plan['n_layer']} blocks (first stage {plan['first_layers']} block(s), "
        f"{first} steps; then {plan['steps']} steps per block) {against}")
    res = run_growth(cfg, resume=True, log=lambda m: None)
    if base is None:
        row = growth_row(seed, res["stages"], res["baseline"])
        row["same_substrate"] = bool(res["info"].get("same_substrate"))
    else:
        row = _row_against_base(seed, res, base, s)
    row["timing"] = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)}
    atomic_write_json(path, row)
    return row


def growth_row(seed: int, stages: list[dict], baseline: dict) -> dict:
    grown, mono = stages[-1], baseline
    ratio = grown["val_loss"] / mono["val_loss"]
    pinned = [st["lower_blocks_unchanged"] for st in stages if st.get("lower_blocks_unchanged") is not None]
    return {
        "seed": seed,
        "grown_val_loss": grown["val_loss"],
        "monolithic_val_loss": mono["val_loss"],
        "ratio": ratio,
        "within_10pct": ratio <= 1.0 + GROWTH_TOLERANCE,
        "tokens_grown": grown["tokens_total"],
        "tokens_monolithic": mono["tokens_total"],
        "stages": [{"depth": st["depth"], "val_loss": st["val_loss"], "trained": st["trained"],
                    "lower_blocks_unchanged": st.get("lower_blocks_unchanged")} for st in stages],
        "lower_blocks_unchanged": all(pinned) if pinned else None,
    }


def _row_against_base(seed: int, res: dict, base: GrowthBase, s: DockingSettings) -> dict:
    """The row of a growth run compared with ``base``'s model of ``seed``: both final models scored by
    one function on the same validation batches of ``base.data``; refused when the two did not see
    the same number of tokens."""
    grown, _ = load_model_and_tokenizer(res["info"]["final_model"])  # of mono's depth (growth_plan)
    mono, _ = load_model_and_tokenizer(base.models[seed])
    val = TokenShards(base.data, split="val")
    t = s.train
    scores = {}
    with torch.no_grad():
        for name, m in (("grown", grown), ("mono", mono)):
            scores[name] = evaluate(m.eval(), val, t.batch_size, t.seq_len, s.docking.eval_batches, t.precision)["loss"]
    tokens_mono = base.steps[seed] * t.batch_size * t.seq_len * t.grad_accum
    stages = [dict(st) for st in res["stages"]]
    stages[-1]["val_loss"] = scores["grown"]  # the same scoring as the monolithic model's
    row = growth_row(seed, stages, {"val_loss": scores["mono"], "tokens_total": tokens_mono})
    if row["tokens_grown"] != tokens_mono:
        raise SubstrateError(f"growth of seed {seed} trained {row['tokens_grown']:,} tokens but {base.label} "
                             f"{tokens_mono:,}; the comparison needs equal tokens")
    row["monolithic"] = {"model_dir": base.models[seed], "label": base.label}
    row["same_substrate"] = table_fingerprint(grown) == table_fingerprint(mono)
    return row
