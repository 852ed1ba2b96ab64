"""Typed run configuration: TOML recipes plus ``--section.key value`` command-line overrides.

A run is described by one :class:`RunConfig` made of small dataclass sections. Every field has a
type and an attribute docstring (the docstrings double as ``substrate-lm train --help-config``).
Loading, overrides, validation and help are the project's one settings engine
(:mod:`substrate_lm.settings`, pydantic underneath); this module holds the sections, the recipes
and the cross-field checks.
Recipes are TOML files; a name without a path (``tiny``) resolves to the checked-in recipe
``substrate_lm/recipes/<name>.toml``. Unknown sections or keys, wrong types and bad choices are
:class:`~substrate_lm.errors.SubstrateError` with one line naming the key and the valid ones.

Example::

    cfg = load_config("tiny", ["--train.lr", "3e-4", "--model.overrides.n_layer", "2"])
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..errors import SubstrateError
from ..fsutil import check_not_dangling
from ..presets import check_override_keys, get_preset
from ..settings import SettingsEngine, dump_toml, field_docs, parse_literal  # noqa: F401 (re-exported)


@dataclass
class RunSection:
    """Where the run lives and what it runs on."""

    name: str = "run"
    """Run name; used for the default run folder and in logs."""
    dir: str = ""
    """Run folder (config, logs, checkpoints). Empty: ``runs/<name>`` under the current directory."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device: ``auto`` picks CUDA when available, else CPU. Under torchrun each rank takes its local GPU."""
    threads: int = 0
    """CPU threads for torch (``torch.set_num_threads``); 0 keeps torch's default. The CPU peak used for
    MFU counts these threads."""


@dataclass
class ModelSection:
    """Which model to build. The trainer never looks at the substrate; it only sees requires_grad."""

    preset: str = "tiny"
    """Named preset from ``substrate_lm.presets`` (``tiny``, ``small``, ``1024-bit``, ``uni-glyph``, ...)."""
    substrate: str = ""
    """Substrate spec handed to ``get_preset`` (``1024-bit``, ``16-bit``, ``bits``, ``glyph``, ``float``,
    ``trainable``, ...). Empty: the preset's own substrate."""
    tokenizer: str = ""
    """Tokenizer folder or hub id. Empty: the tokenizer recorded in the data folder's ``meta.json``."""
    init_from: str = ""
    """Start from the weights of this Hugging Face model folder instead of a fresh init (fine-tuning)."""
    allow_foreign_tokenizer: bool = False
    """With ``init_from``: train even though the run's tokenizer (the data's) is not the one the model
    was made with. Every row of the table then stands for another token; off, that is refused."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Model config fields to override on top of the preset, e.g. ``{n_layer = 2, block_size = 256}``."""


@dataclass
class DataSection:
    """Training data: a folder of token shards written by ``substrate-lm data prepare``."""

    path: str = ""
    """Prepared data folder (``meta.json``, ``stats.json``, shards). Relative paths are taken from the
    current directory."""
    mode: Literal["random", "sequential"] = "random"
    """Batch sampling: ``random`` windows or ``sequential`` packing of the token stream."""
    sources: list[str] = field(default_factory=list)
    """When ``path`` holds no prepared data yet, prepare it first from these sources (files, globs,
    JSONL/Parquet, ``hf:`` datasets, ``world``) with the run's tokenizer. Empty: the data must exist."""
    world: str = ""
    """Bootstrap on the built-in semantic world: when ``path`` holds no prepared data, generate a world
    corpus of this size (e.g. ``"2MB"``) into ``<path>/corpus``, build a bvv241 tokenizer for it into
    ``<path>/tokenizer`` (unless ``model.tokenizer`` is set) and prepare it. Empty: no bootstrap."""
    val_fraction: float = 0.01
    """Share of documents held out for validation when the data is prepared by the run (a world
    corpus keeps its own split)."""


@dataclass
class TrainSection:
    """Optimisation: batch geometry, AdamW, schedule, precision."""

    steps: int = 1000
    """Number of optimizer steps."""
    batch_size: int = 8
    """Sequences per micro-batch on each rank."""
    seq_len: int = 256
    """Tokens per sequence (at most the model's block size)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step. Tokens per step = batch_size * seq_len * grad_accum * ranks.
    The global batch (batch_size * grad_accum * ranks sequences) decides the run; how it is split does not
    (4 ranks x accum 1 and 2 ranks x accum 2 train on the same sequences)."""
    lr: float = 3e-4
    """Peak learning rate (reached after warmup)."""
    min_lr: float = 3e-5
    """Final learning rate at the end of the cosine decay."""
    warmup: int = 100
    """Linear warmup steps from 0 to ``lr``."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices; norms and biases are never decayed."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    seed: int = 0
    """Seed of the weight init, the substrate's random codes, dropout and the data sampler."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """``bf16`` runs matmuls under bf16 autocast (CPU and GPU) with fp32 master weights."""
    compile: bool = False
    """``torch.compile`` each transformer block (needs a C++ compiler on CPU)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward: less memory, about a third more compute."""
    chunked_loss: bool = True
    """Use the model's chunked cross-entropy (``return_logits=False``) so B x T x vocab fp32 logits are
    never materialised; models without it fall back to full logits."""
    loss_chunk_size: int = 0
    """Rows of logits per chunk of the chunked loss (sets ``model.config.loss_chunk_size``): peak loss
    memory is about chunk x vocab x 4 bytes (1024 x 65,536: 256 MiB). 0: the model's own default
    (1024 rows for substrate-lm models)."""


@dataclass
class EvalSection:
    """Periodic validation on the held-out split."""

    interval: int = 200
    """Validate every this many steps (and always at the end); 0: only at the end."""
    steps: int = 20
    """Validation global batches per evaluation; each is ``eval.batch_size x train.grad_accum x ranks``
    sequences (read like a training step), so any split of the same global batch validates the same windows."""
    batch_size: int = 0
    """Validation rows per micro-batch and rank; 0: ``train.batch_size``."""
    mode: Literal["random", "sequential"] = "sequential"
    """Validation batches: ``sequential`` walks the split from its start (same windows every time)."""


@dataclass
class LogSection:
    """What the run reports and where."""

    interval: int = 10
    """Print the progress line and write a JSONL record every this many steps."""
    jsonl: bool = True
    """Write ``log.jsonl`` in the run folder (train, val, sample and event records)."""
    tensorboard: bool = True
    """Write TensorBoard scalars to ``<run>/tb`` when tensorboard is installed (skipped with a note otherwise)."""
    progress: bool = True
    """Print the live progress line (loss, lr, tokens/s, MFU, ETA)."""
    sample_interval: int = 0
    """Generate text samples every this many steps; 0: only at the end (if prompts are given)."""
    sample_prompts: list[str] = field(default_factory=lambda: ["The"])
    """Prompts for the periodic samples."""
    sample_tokens: int = 32
    """New tokens per sample."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0: estimated from the GPU name or the CPU's vector units."""


@dataclass
class CheckpointSection:
    """Checkpoints: atomic, verified, pruned."""

    interval: int = 200
    """Save every this many steps (and always at the end); 0: only at the end."""
    keep_last: int = 2
    """Keep the newest K checkpoints."""
    keep_best: bool = True
    """Also keep the checkpoint with the lowest validation loss."""


@dataclass
class DistSection:
    """Multi-process training (launched with torchrun)."""

    strategy: Literal["auto", "none", "ddp", "fsdp2"] = "auto"
    """``auto``: DDP when launched with more than one process, else none. ``fsdp2`` shards every block
    and the root with ``fully_shard`` for models that do not fit one device."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Process-group backend; ``auto``: nccl on GPUs, gloo on CPUs."""


@dataclass
class RunConfig:
    """A complete training run."""

    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    dist: DistSection = field(default_factory=DistSection)

    def run_dir(self) -> Path:
        """The run folder: ``run.dir`` or ``runs/<run.name>``."""
        return Path(self.run.dir) if self.run.dir else Path("runs") / self.run.name

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A plain nested dict (TOML/JSON-serialisable) of every field."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML text that :func:`load_config` reads back to an equal config."""
        return dump_toml(self.to_dict())


SECTIONS: dict[str, type] = {
    "run": RunSection,
    "model": ModelSection,
    "data": DataSection,
    "train": TrainSection,
    "eval": EvalSection,
    "log": LogSection,
    "checkpoint": CheckpointSection,
    "dist": DistSection,
}


# ----------------------------------------------------------------------------------------------
# Loading


def recipe_names(training_only: bool = False) -> list[str]:
    """Names of the checked-in recipes (``substrate_lm/recipes/*.toml``).

    Args:
        training_only: only the recipes of ``substrate-lm train`` (every section one of
            :data:`SECTIONS`); other commands (``grow``, ``ablate``) keep their recipes there too.
    """
    names = []
    for path in sorted(_recipe_dir().glob("*.toml")):
        if training_only:
            try:
                sections = set(tomllib.loads(path.read_text(encoding="utf-8")))
            except (OSError, tomllib.TOMLDecodeError):
                continue
            if not sections <= set(SECTIONS):
                continue
        names.append(path.stem)
    return names


def recipe_path(name: str) -> Path:
    """Path of the checked-in recipe ``name``; a clear error lists the available ones."""
    path = _recipe_dir() / f"{name}.toml"
    if not path.is_file():
        raise SubstrateError(
            f"no recipe named {name!r}; give a TOML file path or one of: {', '.join(recipe_names(True))}"
        )
    return path


def _recipe_dir() -> Path:
    return Path(str(resources.files("substrate_lm") / "recipes"))


def resolve_config_path(source: str | Path) -> Path:
    """A TOML path as given, or the checked-in recipe of that name (``tiny`` -> recipes/tiny.toml)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.suffix == "" and path.parent == Path("."):
        return recipe_path(str(source))
    raise SubstrateError(f"config file {str(source)!r} not found; give a TOML file or a recipe name "
                         f"({', '.join(recipe_names(True))})")


def load_config(source: str | Path | dict | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Load a run config from a TOML file, a recipe name or a dict, then apply overrides.

    Args:
        source: TOML path, recipe name (``tiny``), a nested dict, or None for the defaults.
        overrides: ``["--train.lr", "3e-4", "--log.tensorboard=false"]`` (command-line style) or
            ``{"train.lr": 3e-4}``. Dotted keys name ``section.field``; ``model.overrides.X`` sets one
            model config field.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        SubstrateError: unreadable TOML, unknown section/key, wrong type, bad choice.
    """
    return ENGINE.load(source, overrides, resolve=resolve_config_path)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a nested dict (as read from TOML)."""
    return ENGINE.from_dict(raw)


def parse_override_args(argv: list[str]) -> dict[str, str]:
    """Turn ``["--train.lr", "3e-4", "--log.jsonl=false"]`` into ``{"train.lr": "3e-4", ...}``.

    A flag without a value (``--train.compile``) means ``true``.
    """
    return ENGINE.parse_args(argv)


def apply_overrides(cfg: RunConfig, overrides: list[str] | dict[str, Any]) -> RunConfig:
    """A new config with dotted overrides applied (strings are read by the field's type), validated;
    ``cfg`` itself is not changed (like every ``apply`` of the settings engine)."""
    return ENGINE.apply(cfg, overrides)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks; each failure is one line naming the key."""
    check_not_dangling(cfg.run_dir(), "run.dir")  # writing through it would create its target anywhere
    t = cfg.train
    if t.loss_chunk_size < 0:
        raise SubstrateError(f"train.loss_chunk_size must be >= 0, got {t.loss_chunk_size}")
    for key in ("steps", "batch_size", "seq_len", "grad_accum"):
        if getattr(t, key) < 1:
            raise SubstrateError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.lr <= 0 or not math.isfinite(t.lr):
        raise SubstrateError(f"train.lr must be a positive number, got {t.lr}")
    if not 0 <= t.min_lr <= t.lr:
        raise SubstrateError(f"train.min_lr must be between 0 and train.lr ({t.lr}), got {t.min_lr}")
    if t.warmup < 0:
        raise SubstrateError(f"train.warmup must be >= 0, got {t.warmup}")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise SubstrateError(f"train.betas must be two numbers in [0, 1), got {t.betas}")
    for key in ("clip", "weight_decay"):
        if not getattr(t, key) >= 0:
            raise SubstrateError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    if not t.eps > 0:
        raise SubstrateError(f"train.eps must be > 0, got {t.eps}")
    if cfg.log.peak_flops < 0:
        raise SubstrateError(f"log.peak_flops must be >= 0 (0: estimated), got {cfg.log.peak_flops}")
    for sec, key in (("train", "steps"), ("train", "batch_size"), ("train", "seq_len"), ("train", "grad_accum"),
                     ("train", "warmup"), ("eval", "steps"), ("train", "loss_chunk_size")):
        if getattr(getattr(cfg, sec), key) > 2**40:
            raise SubstrateError(f"{sec}.{key} {getattr(getattr(cfg, sec), key)} is beyond any run; give a "
                                 f"realistic number")
    for sec, key in (("eval", "interval"), ("eval", "steps"), ("eval", "batch_size"),
                     ("log", "interval"), ("log", "sample_interval"), ("log", "sample_tokens"),
                     ("checkpoint", "interval")):
        if getattr(getattr(cfg, sec), key) < 0:
            raise SubstrateError(f"{sec}.{key} must be >= 0")
    if cfg.log.interval == 0:
        raise SubstrateError("log.interval must be >= 1")
    check_model_section(cfg.model)
    if cfg.run.threads < 0:
        raise SubstrateError(f"run.threads must be >= 0 (0: torch's default), got {cfg.run.threads}")
    if cfg.checkpoint.keep_last < 1:
        raise SubstrateError(f"checkpoint.keep_last must be >= 1, got {cfg.checkpoint.keep_last}")
    if not 0 < cfg.data.val_fraction < 1:
        raise SubstrateError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")


def check_model_section(model: ModelSection) -> None:
    """The preset, substrate spec and model overrides build a config (checked before any data is
    loaded); one line naming the three on failure."""
    if model.init_from:
        return
    check_override_keys(model.overrides, "model.overrides")

    try:
        get_preset(model.preset, substrate=model.substrate or None, **model.overrides)
    except (ValueError, TypeError, KeyError) as exc:
        what = " ".join(str(exc).split()) or type(exc).__name__
        raise SubstrateError(f"model.preset {model.preset!r} / model.substrate "
                             f"{model.substrate!r} / model.overrides: {what}") from None


def describe_config(cfg: RunConfig | None = None) -> str:
    """Every section and key with its current value and docstring (``--help-config``)."""
    return ENGINE.describe(cfg)


@dataclass
class ModelSettings:
    """The settings of ``substrate-lm init``: the [model] section of a run, nothing else."""

    model: ModelSection = field(default_factory=ModelSection)


def init_engine() -> SettingsEngine[ModelSettings]:
    """The settings engine of ``substrate-lm init`` (the same [model] keys as ``train``)."""
    return SettingsEngine(ModelSettings, check=lambda s: check_model_section(s.model))


#: the settings engine of ``substrate-lm train`` (and of every command built on a RunConfig)
ENGINE: SettingsEngine[RunConfig] = SettingsEngine(RunConfig, check=validate)


# ----------------------------------------------------------------------------------------------
# What --resume may change


#: Keys a resumed run must keep: they decide the weights' init, the batches or the model.
RESUME_IDENTITY = ("train.seed", "train.seq_len", "data.mode", "model.preset", "model.substrate",
                   "model.overrides")


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sec, values in (cfg or {}).items():
        if isinstance(values, dict):
            for key, value in values.items():
                out[f"{sec}.{key}"] = value
    return out


def resume_changes(saved: dict[str, Any], saved_world: int, cfg: RunConfig,
                   world: int) -> tuple[list[str], list[str]]:
    """What a resume changes against the checkpoint's config: ``(refused, allowed)``, each a list of
    ``"key old -> new"`` texts.

    Refused (the run would no longer be the run the checkpoint belongs to): ``train.seed``,
    ``train.seq_len``, ``data.mode``, the model (``model.preset``, ``model.substrate``, each
    ``model.overrides`` key) and the global batch ``train.batch_size x train.grad_accum x world
    size``. Allowed and reported: everything else, among them ``train.steps``, ``eval.*``,
    ``log.*``, ``checkpoint.*``, a new world size (or micro-batch) whose ``grad_accum`` keeps the
    global batch, and the schedule (``train.lr``, ``train.warmup`` ...: a deliberate change,
    e.g. after a diverged step). Keys the saved config lacks (older versions) are not compared.
    """
    old, new = _flat(saved), _flat(cfg.to_dict())
    refused: list[str] = []
    allowed: list[str] = []
    for key in sorted(set(old) & set(new)):
        if key in ("train.batch_size", "train.grad_accum") or old[key] == new[key]:
            continue
        if key == "model.overrides" and isinstance(old[key], dict) and isinstance(new[key], dict):
            for sub in sorted(set(old[key]) | set(new[key])):
                if old[key].get(sub) != new[key].get(sub):
                    refused.append(f"model.overrides.{sub} {old[key].get(sub)} -> {new[key].get(sub)}")
            continue
        (refused if key in RESUME_IDENTITY else allowed).append(f"{key} {old[key]} -> {new[key]}")
    t = cfg.train
    b_old, a_old = old.get("train.batch_size", t.batch_size), old.get("train.grad_accum", t.grad_accum)
    g_old, g_new = b_old * a_old * saved_world, t.batch_size * t.grad_accum * world
    parts = [f"{k} {o} -> {n}" for k, o, n in (("train.batch_size", b_old, t.batch_size),
                                              ("train.grad_accum", a_old, t.grad_accum),
                                              ("world size", saved_world, world)) if o != n]
    if g_old != g_new:
        refused.insert(0, f"global batch {g_old} -> {g_new} sequences ({', '.join(parts)}; keep "
                          f"train.batch_size x train.grad_accum x world size = {g_old})")
    elif parts:
        allowed.insert(0, f"{', '.join(parts)} (global batch {g_old} kept)")
    return refused, allowed
