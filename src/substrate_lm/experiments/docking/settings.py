"""The docking experiment's settings: its own ``[docking]`` section, and the trainer's ``[model]`` and
``[train]`` sections for the experts.

The experts are trained by the project trainer from the trainer's own sections
(:class:`~substrate_lm.training.config.ModelSection`, :class:`~substrate_lm.training.config.TrainSection`),
held as they are, never copied field by field: the ``[docking]`` section only says what is the
experiment's own (its world and halves, the experts' depth and schedule, growth). Inside the demo
the ``[model]`` and ``[train]`` sections are the demo's (so ``--train.steps`` reaches the experts
unless ``--docking.steps`` sets them apart); run alone, :class:`DockingSettings` is the root, with
the experiment's own defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from ...errors import SubstrateError
from ...settings import SettingsEngine
from ...training.config import ModelSection, RunConfig, TrainSection, validate as validate_run

MODES = ("quick", "full", "long")


@dataclass
class DockingSection:
    """The docking-port experiment (claim 3): its world and halves, the experts' depth and schedule
    (their width, heads, context, batch and optimiser are the [model] and [train] sections), the
    trainable-table experts of the refusal check, and growth."""

    world_size: str = "300KB"
    """Text of the experiment's own world over both languages (more text = more varied sentences
    about the same facts: less overfitting of the experts)."""
    entities_per_cat: int = 6
    """Entities per category of that world (6 categories; 6 is the world's minimum)."""
    qa_fraction: float = 0.5
    """Share of training documents that are question-answer documents (training phrasings only)."""
    n_questions: int = 150
    """Held-out multiple-choice questions per language (the union has twice as many)."""
    data_seed: int = 0
    """Seed of the world (shared by every seed of the experiment)."""
    split: Literal["entity", "category", "lang"] = "entity"
    """How the world is halved: entity (alternate entities of every category, both languages in
    each half), category (disjoint categories: animal, plant, city vs the rest) or lang (English
    facts vs Russian facts)."""
    balanced_halves: bool = True
    """With the entity split: both halves of every category carry the same attribute values (each
    half its own permutation), so an expert's ignorance of the other half's entities is not a bias
    against their values."""
    tokenizer: Literal["compact", "bvv241"] = "compact"
    """compact (a bvv241-style layout of 2,048 ids: U+0000-U+04FF, specials, n-grams) or bvv241
    (the published 65,536 ids)."""
    n_layer: int = 2
    """Blocks of each expert (and of the trainable-table experts); 0: the [model] section's depth.
    Their width, heads and context are [model]'s."""
    steps: int = 0
    """Optimizer steps of each expert; 0: train.steps (so --train.steps sets the demo's models and
    the experts together)."""
    warmup: int = -1
    """Warmup steps of the experts and of every growth stage, capped at each one's steps - 1; -1:
    train.warmup."""
    trainable_steps: int = 60
    """Steps of each trainable-table expert (they only have to exist to be refused by compose)."""
    grow_baseline: Literal["own", "demo"] = "own"
    """What the grown model is compared with. own: growth runs on the experiment's world against a
    monolithic model it trains itself (grow_layers, grow_first_layers, grow_first_steps, grow_steps
    set the plan). demo (the demo's): growth runs on the demo's world and is compared with the
    demo's own random-bits models of the same seeds, already trained on the same tokens; the plan is
    derived from them: a first stage one block shallower for train.steps - grow_steps steps, then the
    last block for grow_steps (grow_layers, grow_first_layers and grow_first_steps stay unset)."""
    grow_layers: int = 2
    """Depth of the grown model (one block per stage after the first) and of its monolithic
    baseline (grow_baseline own)."""
    grow_first_layers: int = 1
    """Blocks of the first growth stage's model (trained from scratch); one block per later stage."""
    grow_first_steps: int = 0
    """Steps of the first growth stage (0: grow_steps); the monolithic model trains as many steps as
    all stages together."""
    grow_steps: int = 200
    """Steps of each later growth stage (and of the first when grow_first_steps is 0)."""
    grow_lr: float = 1e-2
    """Peak learning rate of growth (its final one: the smaller of train.min_lr and this)."""
    grow_lora_rank: int = 0
    """LoRA rank on the frozen lower blocks in later growth stages, merged at each stage's end
    (0: off)."""
    eval_batches: int = 8
    """Validation batches (train.batch_size x train.seq_len tokens each) for every validation loss
    of the experiment."""

    @classmethod
    def quick(cls) -> "DockingSection":
        """A smoke run (too short for the effects)."""
        return cls(world_size="60KB", trainable_steps=10, grow_baseline="demo", grow_steps=20, warmup=5,
                   n_questions=40, eval_batches=2)

    @classmethod
    def full(cls) -> "DockingSection":
        """The demo's: experts as deep as the demo's models (4 blocks), trained on the demo's schedule
        (--train.steps); growth against the demo's random-bits models, the last block trained 200
        steps with LoRA rank 8 on the frozen blocks, the papers' recipe for deeper models
        (benchmarks/2026-12-07-demo-schedule.md)."""
        return cls(n_layer=4, grow_baseline="demo", grow_steps=200, grow_lora_rank=8, eval_batches=16)

    @classmethod
    def long(cls) -> "DockingSection":
        """``demo --long``: as :meth:`full`, the last block of growth trained 400 steps (the experts
        and the first stage follow the demo's longer --train.steps)."""
        return cls(n_layer=4, grow_baseline="demo", grow_steps=400, grow_lora_rank=8, eval_batches=16)

    @classmethod
    def for_mode(cls, mode: str) -> "DockingSection":
        if mode not in MODES:
            raise SubstrateError(f"unknown docking mode {mode!r}; choose from {', '.join(MODES)}")
        return getattr(cls, mode)()


def expert_model() -> ModelSection:
    """The experts' model when the experiment runs alone: the tiny preset at d_model 64, 4 heads,
    context 128 (depth: ``docking.n_layer``)."""
    return ModelSection(preset="tiny", overrides={"d_model": 64, "n_head": 4, "block_size": 128})


def expert_train(steps: int = 1200) -> TrainSection:
    """The experts' optimisation when the experiment runs alone (as the demo's)."""
    return TrainSection(steps=steps, batch_size=8, seq_len=128, lr=1e-2, min_lr=1e-3, warmup=60,
                        weight_decay=0.1, precision="fp32")


#: the growth plans of the experiment run alone (``docking.grow_baseline`` own): a 2-block first
#: stage and a third block, against a 3-block monolithic model trained on the same batches
OWN_GROWTH = {
    "quick": {},
    "full": {"grow_layers": 3, "grow_first_layers": 2, "grow_first_steps": 1200, "grow_steps": 200},
    "long": {"grow_layers": 3, "grow_first_layers": 2, "grow_first_steps": 3000, "grow_steps": 600},
}


def alone(mode: str) -> DockingSection:
    """The [docking] section of ``mode`` for the experiment run alone: the demo's, with growth against
    its own monolithic model (:data:`OWN_GROWTH`)."""
    return dataclasses.replace(DockingSection.for_mode(mode), grow_baseline="own", **OWN_GROWTH[mode])


@dataclass
class DockingSettings:
    """The docking experiment run alone (the demo holds the same [docking] section next to its own
    [model] and [train])."""

    docking: DockingSection = field(default_factory=lambda: alone("full"))
    model: ModelSection = field(default_factory=expert_model)
    train: TrainSection = field(default_factory=expert_train)

    @classmethod
    def for_mode(cls, mode: str) -> "DockingSettings":
        """The built-in settings of ``quick``, ``full`` or ``long`` run alone: the demo's [docking]
        section, with growth against a monolithic model the experiment trains itself
        (:data:`OWN_GROWTH`: there are no demo models to compare with)."""
        return cls(docking=alone(mode), train=expert_train(120 if mode == "quick" else 1200))


def check(s: DockingSettings) -> None:
    """Cross-field checks of the experiment's settings (the trainer's own checks of [model] and
    [train] included); one line naming the key."""
    d = s.docking
    positive = ("entities_per_cat", "n_questions", "trainable_steps", "grow_layers", "grow_steps", "eval_batches")
    for name in positive:
        if getattr(d, name) < 1:
            raise SubstrateError(f"docking.{name} must be >= 1, got {getattr(d, name)}")
    if d.warmup < -1:
        raise SubstrateError(f"docking.warmup must be >= 0 (or -1: train.warmup), got {d.warmup}")
    for name in ("n_layer", "steps", "grow_first_steps", "grow_lora_rank"):
        if getattr(d, name) < 0:
            raise SubstrateError(f"docking.{name} must be >= 0, got {getattr(d, name)}")
    if d.grow_baseline == "demo":
        plan = {"grow_layers": 2, "grow_first_layers": 1, "grow_first_steps": 0}
        for name, default in plan.items():
            if getattr(d, name) != default:
                raise SubstrateError(f"docking.{name} is derived from the demo's models when docking.grow_baseline "
                                     f"is demo; leave it unset, or set --docking.grow_baseline own")
        depth = s.model.overrides.get("n_layer")
        if depth is not None and depth < 2:
            raise SubstrateError(f"growth against the demo's models needs them at least 2 blocks deep, got "
                                 f"model.overrides.n_layer {depth}")
        if d.grow_steps >= s.train.steps:
            raise SubstrateError(f"docking.grow_steps ({d.grow_steps}) must be below train.steps ({s.train.steps}): "
                                 f"the first stage trains the rest of the demo models' steps")
    if d.grow_layers < 2:
        raise SubstrateError("docking.grow_layers must be >= 2 (growth needs at least two stages)")
    if not 1 <= d.grow_first_layers < d.grow_layers:
        raise SubstrateError(f"docking.grow_first_layers must be in 1..grow_layers-1 ({d.grow_layers - 1}), "
                             f"got {d.grow_first_layers}")
    if not d.grow_lr > 0:
        raise SubstrateError(f"docking.grow_lr must be > 0, got {d.grow_lr}")
    if not 0.0 <= d.qa_fraction <= 0.5:
        raise SubstrateError(f"docking.qa_fraction must be in [0, 0.5], got {d.qa_fraction}")
    refuse_per_run_keys(s.model, s.train)
    model, train = expert_sections(s)
    block = model.overrides.get("block_size")
    if block is not None and train.seq_len > block:
        raise SubstrateError(f"train.seq_len {train.seq_len} exceeds the experts' block_size {block}")
    validate_run(RunConfig(model=model, train=train))


#: keys of [model] and [train] that the demo and the docking experiment set for each model they train
PER_RUN_KEYS = {"model.substrate": "the substrate of each model (demo: --substrates)",
                "model.tokenizer": "the tokenizer built for the world",
                "model.init_from": "a fresh init (the experiments compare trained-from-scratch models)",
                "train.seed": "the seed of each model (demo: --seed and --demo.seeds)"}


def refuse_per_run_keys(model: ModelSection, train: TrainSection) -> None:
    """One-line error when a key the experiments set per model (:data:`PER_RUN_KEYS`) is given: it
    would be ignored."""
    defaults = {"model": ModelSection(), "train": TrainSection()}
    for key, what in PER_RUN_KEYS.items():
        sec, name = key.split(".")
        if getattr(model if sec == "model" else train, name) != getattr(defaults[sec], name):
            raise SubstrateError(f"{key} is set for each model by the experiment ({what}); leave it unset")


def expert_sections(s: DockingSettings) -> tuple[ModelSection, TrainSection]:
    """The experts' [model] and [train]: the given sections with the depth (``docking.n_layer``),
    steps (``docking.steps``) and warmup (``docking.warmup``) of the experiment's own where it sets
    them."""
    d = s.docking
    model = s.model if not d.n_layer else dataclasses.replace(s.model, overrides={**s.model.overrides,
                                                                                   "n_layer": d.n_layer})
    train = dataclasses.replace(s.train, steps=d.steps or s.train.steps,
                                warmup=s.train.warmup if d.warmup < 0 else d.warmup)
    return model, train


def record(s: DockingSettings) -> dict:
    """The settings as one flat ``{section.key: value}`` dict (``settings.json``: a rerun in the same
    folder must have the same)."""
    return {f"{sec}.{k}": v for sec, values in dataclasses.asdict(s).items() for k, v in values.items()}


#: the settings engine of the docking experiment run alone (``docking``, ``model``, ``train``)
ENGINE: SettingsEngine[DockingSettings] = SettingsEngine(DockingSettings, check=check)
