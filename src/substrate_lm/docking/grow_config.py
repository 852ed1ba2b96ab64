"""The configuration of a growth run: a TOML file (``recipes/grow-*.toml``) plus ``--section.key VALUE``
overrides, loaded, validated and described by the project's one settings engine
(:mod:`substrate_lm.settings`).

The [run], [data], [train], [eval], [checkpoint], [log] and [dist] sections ARE the trainer's (the
same keys and meanings; growth changes a few defaults and adds ``train.first_steps``); [model] adds
``substrate_seed``; growth adds ``[grow]``, ``[lora]`` and ``[baseline]``. Every stage runs as one :class:`~substrate_lm.training.Trainer` run whose
:class:`~substrate_lm.training.RunConfig` :func:`phase_run_config`
derives from this config.
Unknown sections or keys, wrong types and bad choices raise a one-line :class:`SubstrateError`;
``substrate-lm grow --help-config`` lists every key with its meaning.

```toml
[grow]
n_layer = 9            # final depth
first_layers = 3       # stage 1 trains a 3-block model from scratch
layers_per_stage = 3   # then 3 new blocks per stage: depths 3, 6, 9
```
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..components.lora import LoraAdapter, check_lora
from ..errors import SubstrateError
from ..settings import SettingsEngine
from ..training.config import (CheckpointSection, DataSection, DistSection, EvalSection, LogSection, RunConfig,
                               RunSection, TrainSection)
from ..training.config import config_from_dict as run_config_from_dict
from .grow import plan_stages


@dataclass
class GrowRunSection(RunSection):
    """Where the growth run lives and what it runs on (the trainer's [run] keys)."""

    name: str = "grow"
    """Run name; the default folder is ``runs/<name>``, and each phase runs as ``<name>-<phase>``."""


@dataclass
class ModelSection:
    """The backbone every stage is built from."""

    preset: str = "tiny"
    """Preset of the backbone (``tiny``, ``small``, ``1024-bit``, ...); its n_layer is replaced by the plan."""
    substrate: str = ""
    """Substrate spec (``1024-bit``, ``16-bit``, ``uni-glyph``, ``unfrozen`` ...); empty: the preset's."""
    substrate_seed: int = 0
    """Seed of the substrate table and of the first stage's init (the baseline uses the same)."""
    tokenizer: str = ""
    """Tokenizer folder or hub id; empty: the one recorded in the data folder's meta.json."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Model config fields on top of the preset, e.g. ``{block_size = 128}``."""


@dataclass
class GrowSection:
    """The plan: final depth and blocks per stage."""

    n_layer: int = 3
    """Final depth."""
    first_layers: int = 1
    """Blocks of the first stage's model (trained from scratch)."""
    layers_per_stage: int = 1
    """New blocks stacked per later stage."""
    train_head: bool = True
    """Train ln_f and lm_head in every stage (True), or the new blocks alone (False)."""


@dataclass
class LoraSection(LoraAdapter):
    """LoRA on the frozen lower blocks during later stages (Growing Transformers v1)."""

    enabled: bool = False
    """LoRA on the frozen lower blocks in later stages, merged into the weights at the end of each stage."""
    from_stage: int = 2
    """First stage (1-based, >= 2) that adapts its lower blocks with LoRA."""


@dataclass
class GrowTrainSection(TrainSection):
    """Optimisation of every stage: the trainer's [train] keys (schedule per phase), growth defaults,
    plus ``first_steps``."""

    steps: int = 100
    """Optimizer steps per stage."""
    seq_len: int = 128
    """Tokens per sequence (at most the model's block size)."""
    lr: float = 1e-3
    """Peak learning rate of every stage (the baseline's is ``baseline.lr``)."""
    min_lr: float = 1e-4
    """Final learning rate of every stage's cosine decay (capped at the stage's lr)."""
    warmup: int = 10
    """Linear warmup steps of every stage (capped below the stage's steps)."""
    first_steps: int = 0
    """Steps of stage 1; 0: ``steps``."""


@dataclass
class GrowEvalSection(EvalSection):
    """Validation: the trainer's [eval] keys; every phase is also scored at its end on the first
    ``steps`` sequential batches (the same tokens for every stage and the baseline)."""

    interval: int = 0
    """Validate every this many steps within a phase as well; 0: only at the end of each phase."""


@dataclass
class BaselineSection:
    """The monolithic model grown models are compared with."""

    enabled: bool = True
    """Also train a monolithic model of the final depth on the same token budget, for comparison."""
    steps: int = 0
    """0: the total steps of all stages (same tokens, same batches)."""
    lr: float = 0.0
    """0: ``train.lr``."""


@dataclass
class GrowCheckpointSection(CheckpointSection):
    """Checkpoints of the running phase (a finished phase keeps only its exported model)."""

    interval: int = 50
    """Checkpoint the running phase every this many steps (and at its end)."""
    keep_best: bool = False
    """Also keep the running phase's checkpoint with the lowest validation loss."""


@dataclass
class GrowLogSection(LogSection):
    """What the phases report: the trainer's [log] keys, quieter defaults."""

    tensorboard: bool = False
    """Write TensorBoard scalars to ``<phase>/tb`` (when tensorboard is installed)."""
    sample_prompts: list[str] = field(default_factory=list)
    """Prompts for text samples at the end of each phase (none by default)."""


@dataclass
class GrowConfig:
    """A growth run: stages of a block-by-block grown model and its monolithic baseline."""

    run: GrowRunSection = field(default_factory=GrowRunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    grow: GrowSection = field(default_factory=GrowSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: GrowTrainSection = field(default_factory=GrowTrainSection)
    eval: GrowEvalSection = field(default_factory=GrowEvalSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)
    checkpoint: GrowCheckpointSection = field(default_factory=GrowCheckpointSection)
    log: GrowLogSection = field(default_factory=GrowLogSection)
    dist: DistSection = field(default_factory=DistSection)

    def run_dir(self) -> Path:
        return Path(os.path.expanduser(self.run.dir)) if self.run.dir else Path("runs") / self.run.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# keys that may change when a run is resumed: where it runs and how often it reports or saves
RESUMABLE_CHANGES = {"run.device", "run.threads", "checkpoint.interval", "checkpoint.keep_last",
                     "checkpoint.keep_best", "log.interval", "log.progress", "log.jsonl", "log.tensorboard",
                     "log.sample_interval", "log.sample_prompts", "log.sample_tokens", "log.peak_flops",
                     "eval.interval", "dist.strategy", "dist.backend", "train.compile",
                     "train.activation_checkpointing", "train.loss_chunk_size"}


def config_from_dict(raw: dict) -> GrowConfig:
    """Build and validate a :class:`GrowConfig` from nested dicts (as TOML gives them)."""
    return ENGINE.from_dict(raw)


def apply_overrides(cfg: GrowConfig, overrides: list[str] | dict[str, Any]) -> GrowConfig:
    """A new config with ``["--train.steps", "10", "--model.overrides.block_size=64"]`` (or a dict of
    dotted keys) applied and validated; ``cfg`` itself is not changed."""
    return ENGINE.apply(cfg, overrides)


def validate(cfg: GrowConfig) -> None:
    plan_stages(cfg.grow.n_layer, cfg.grow.first_layers, cfg.grow.layers_per_stage)
    t = cfg.train
    if t.steps < 1 or t.first_steps < 0:
        raise SubstrateError(f"train.steps must be >= 1 and train.first_steps >= 0 (got {t.steps}, {t.first_steps})")
    b = cfg.baseline
    if b.steps < 0 or not (b.lr >= 0 and math.isfinite(b.lr)):
        raise SubstrateError(f"baseline.steps and baseline.lr must be >= 0 (0: as the stages), got "
                             f"{b.steps} and {b.lr}")
    if "n_layer" in cfg.model.overrides:
        raise SubstrateError("model.overrides.n_layer is set by the growth plan; give the final depth as "
                             "--grow.n_layer")
    check_lora(cfg.lora)
    if cfg.lora.from_stage < 2:
        raise SubstrateError(f"lora.from_stage must be >= 2 (stage 1 has no lower blocks), got {cfg.lora.from_stage}")
    if cfg.eval.steps < 1:
        raise SubstrateError(f"eval.steps must be >= 1, got {cfg.eval.steps}")
    # the shared sections are the trainer's: its checks apply to every phase as they would to a train run
    phase_run_config(cfg, "check", Path(cfg.run.dir or "."), depth=cfg.grow.n_layer,
                     steps=max(t.steps, t.first_steps), lr=t.lr)


def run_device(name: str) -> str:
    """``run.device`` of the growth config as a trainer device (``cuda:N`` -> ``cuda``)."""
    return "cuda" if name.startswith("cuda") else name


def phase_run_config(cfg: GrowConfig, label: str, run_dir: Path, *, depth: int, steps: int, lr: float) -> RunConfig:
    """The trainer's :class:`RunConfig` of one phase: the one place growth settings become training settings.

    The shared sections ([run], [data], [train], [eval], [checkpoint], [log], [dist]) carry over key
    for key; the phase sets its folder, step count and peak learning rate (warmup capped below the
    phase's steps, min_lr at most lr) and scores its validation batches sequentially. ``[model]`` only
    documents the phase (the model itself is built by the growth run and passed in).
    """
    def shared(section, cls) -> dict:
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(cls)}

    t = shared(cfg.train, TrainSection)
    t.update(steps=steps, lr=lr, min_lr=min(cfg.train.min_lr, lr), warmup=min(cfg.train.warmup, max(0, steps - 1)))
    raw = {
        "run": {**shared(cfg.run, RunSection), "name": f"{cfg.run.name}-{label}", "dir": str(run_dir),
                "device": run_device(cfg.run.device)},
        "model": {"preset": cfg.model.preset, "substrate": cfg.model.substrate, "tokenizer": cfg.model.tokenizer,
                  "overrides": {**cfg.model.overrides, "n_layer": depth}},
        "data": shared(cfg.data, DataSection),
        "train": t,
        "eval": {**shared(cfg.eval, EvalSection), "mode": "sequential"},
        "log": shared(cfg.log, LogSection),
        "checkpoint": shared(cfg.checkpoint, CheckpointSection),
        "dist": shared(cfg.dist, DistSection),
    }
    return run_config_from_dict(raw)


#: the settings engine of ``substrate-lm grow``
ENGINE: SettingsEngine[GrowConfig] = SettingsEngine(GrowConfig, check=validate)


def load_grow_config(source: str | os.PathLike | dict | None = None,
                     overrides: list[str] | dict[str, Any] | None = None) -> GrowConfig:
    """A growth config from a TOML path, a recipe name (``grow-tiny``) or a dict, plus overrides
    (``["--train.steps", "10"]`` or ``{"train.steps": 10}``)."""
    return ENGINE.load(source, overrides, resolve=resolve_recipe)


def resolve_recipe(source: str | os.PathLike) -> Path:
    """A TOML path as given, or the checked-in recipe of that name (``grow-tiny``)."""
    p = Path(os.path.expanduser(str(source)))
    if p.is_file():
        return p
    if p.suffix == "" and p.parent == Path("."):
        recipe = Path(str(resources.files("substrate_lm") / "recipes" / f"{p.name}.toml"))
        if recipe.is_file():
            return recipe
    raise SubstrateError(f"growth config {source} not found; give a TOML file or a recipe name such as grow-tiny")


def diff_keys(a: dict, b: dict) -> list[str]:
    """``section.key`` names whose values differ between two config dicts."""
    out = []
    for sec in sorted(set(a) | set(b)):
        va, vb = a.get(sec, {}), b.get(sec, {})
        for key in sorted(set(va) | set(vb)):
            if va.get(key) != vb.get(key):
                out.append(f"{sec}.{key}")
    return out
