"""The docking experiment's growth check: per seed, :func:`substrate_lm.docking.run_growth` grows a
model block by block to ``docking.grow_layers`` blocks on the union data (stage 1 trains a
``grow_first_layers``-block model from scratch, every later stage one new block plus the head, the
lower blocks frozen, optionally adapted by LoRA), and trains a monolithic model of the same depth
on the same batches (equal tokens); both are scored on the same validation tokens."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ...docking import load_grow_config, run_growth
from ...fsutil import atomic_write_json
from ..findings import GROWTH_TOLERANCE
from .records import read_done
from .settings import DockingSettings, expert_sections


def growth_config(out: Path, s: DockingSettings, prep: dict, seed: int):
    """The growth run of one seed (:func:`substrate_lm.docking.load_grow_config`): the experts'
    width, heads, context and optimiser, ``docking.grow_*`` for depth, steps and learning rate."""
    model, train = expert_sections(s)
    d = s.docking
    return load_grow_config({
        "run": {"name": f"docking-grow-seed{seed}", "dir": str(out / f"seed{seed}" / "grow"), "device": "cpu"},
        "model": {"preset": model.preset, "substrate": "bits", "substrate_seed": seed, "tokenizer": str(prep["tokenizer"]),
                  "overrides": {k: v for k, v in model.overrides.items() if k != "n_layer"}},
        "data": {"path": str(prep["data"]["all"]), "mode": "random"},
        "grow": {"n_layer": d.grow_layers, "first_layers": d.grow_first_layers, "layers_per_stage": 1,
                 "train_head": True},
        **({"lora": {"enabled": True, "r": d.grow_lora_rank, "alpha": 2.0 * d.grow_lora_rank}} if d.grow_lora_rank else {}),
        "train": {"steps": d.grow_steps, "first_steps": d.grow_first_steps, "batch_size": train.batch_size,
                  "seq_len": train.seq_len, "lr": d.grow_lr,
                  "min_lr": min(train.min_lr, d.grow_lr), "warmup": min(train.warmup, max(0, d.grow_steps - 1)),
                  "weight_decay": train.weight_decay, "seed": seed, "precision": train.precision},
        "eval": {"steps": d.eval_batches},
        "baseline": {"enabled": True},
        "checkpoint": {"interval": max(1, d.grow_steps // 2)},
        "log": {"interval": max(1, d.grow_steps // 2), "progress": False},
    })


def run_growth_seed(out: Path, s: DockingSettings, prep: dict, seed: int, log: Callable[[str], None]) -> dict:
    """Grow block by block and train the monolithic model on the same tokens; one row."""
    path = out / f"seed{seed}" / "growth.json"
    done = read_done(path)
    if done is not None:
        return done
    w0, c0 = time.perf_counter(), time.process_time()
    cfg = growth_config(out, s, prep, seed)
    d = s.docking
    first = d.grow_first_steps or d.grow_steps
    total = first + (d.grow_layers - d.grow_first_layers) * d.grow_steps
    log(f"docking: seed {seed}: growing to {d.grow_layers} blocks (first stage {d.grow_first_layers} block(s), "
        f"{first} steps; then {d.grow_steps} steps per block) and the monolithic baseline ({total} steps)")
    res = run_growth(cfg, resume=True, log=lambda m: None)
    row = growth_row(seed, res["stages"], res["baseline"])
    row["same_substrate"] = bool(res["info"].get("same_substrate"))
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
