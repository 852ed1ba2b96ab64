"""Typed run configuration: TOML recipes plus ``--section.key value`` command-line overrides.

A run is described by one :class:`RunConfig` made of small dataclass sections. Every field has a
type and an attribute docstring (the docstrings double as ``substrate-lm train --help-config``).
Recipes are TOML files; a name without a path (``tiny``) resolves to the checked-in recipe
``substrate_lm/recipes/<name>.toml``. Unknown sections or keys, wrong types and bad choices are
:class:`~substrate_lm.errors.SubstrateError` with one line naming the key and the valid ones.

Example::

    cfg = load_config("tiny", ["--train.lr", "3e-4", "--model.overrides.n_layer", "2"])
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import SubstrateError


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
    """Micro-batches accumulated per optimizer step. Tokens per step = batch_size * seq_len * grad_accum * ranks."""
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
    """Validation batches per evaluation."""
    batch_size: int = 0
    """Validation batch size; 0: ``train.batch_size``."""
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
    from importlib import resources

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
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, dict):
        raw = _deepcopy(source)
    else:
        path = resolve_config_path(source)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SubstrateError(f"{path}: invalid TOML: {exc}") from None
    cfg = config_from_dict(raw)
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a nested dict (as read from TOML)."""
    cfg = RunConfig()
    for sec_name, values in raw.items():
        if sec_name not in SECTIONS:
            raise SubstrateError(f"unknown config section [{sec_name}]; valid sections: "
                                 f"{', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise SubstrateError(f"config section [{sec_name}] must be a table of keys, got {values!r}")
        section = getattr(cfg, sec_name)
        for key, value in values.items():
            _set_field(section, sec_name, key, value, from_text=False)
    validate(cfg)
    return cfg


def parse_override_args(argv: list[str]) -> dict[str, str]:
    """Turn ``["--train.lr", "3e-4", "--log.jsonl=false"]`` into ``{"train.lr": "3e-4", ...}``.

    A flag without a value (``--train.compile``) means ``true``.
    """
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise SubstrateError(f"unexpected argument {arg!r}; overrides look like --section.key VALUE")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
            i += 2
        else:
            value = "true"
            i += 1
        if "." not in key:
            raise SubstrateError(f"override --{key} needs a section: --<section>.{key} "
                                 f"(sections: {', '.join(SECTIONS)})")
        out[key] = value
    return out


def apply_overrides(cfg: RunConfig, overrides: list[str] | dict[str, Any]) -> RunConfig:
    """Apply dotted overrides in place (strings are parsed by the field's type) and re-validate."""
    items = parse_override_args(list(overrides)) if isinstance(overrides, list) else dict(overrides)
    for dotted, value in items.items():
        sec_name, _, key = dotted.partition(".")
        if sec_name not in SECTIONS:
            raise SubstrateError(f"unknown config section in --{dotted}; valid sections: "
                                 f"{', '.join(SECTIONS)}")
        _set_field(getattr(cfg, sec_name), sec_name, key, value, from_text=isinstance(value, str))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field checks; each failure is one line naming the key."""
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
    if t.clip < 0 or t.weight_decay < 0:
        raise SubstrateError("train.clip and train.weight_decay must be >= 0")
    for sec, key in (("eval", "interval"), ("eval", "steps"), ("eval", "batch_size"),
                     ("log", "interval"), ("log", "sample_interval"), ("log", "sample_tokens"),
                     ("checkpoint", "interval")):
        if getattr(getattr(cfg, sec), key) < 0:
            raise SubstrateError(f"{sec}.{key} must be >= 0")
    if cfg.log.interval == 0:
        raise SubstrateError("log.interval must be >= 1")
    if not cfg.model.init_from:
        # preset, substrate spec and overrides are checked now, not after the data is loaded
        from ..presets import get_preset

        try:
            get_preset(cfg.model.preset, substrate=cfg.model.substrate or None, **cfg.model.overrides)
        except (ValueError, TypeError, KeyError) as exc:
            what = " ".join(str(exc).split()) or type(exc).__name__
            raise SubstrateError(f"model.preset {cfg.model.preset!r} / model.substrate "
                                 f"{cfg.model.substrate!r} / model.overrides: {what}") from None
    if cfg.run.threads < 0:
        raise SubstrateError(f"run.threads must be >= 0 (0: torch's default), got {cfg.run.threads}")
    if cfg.checkpoint.keep_last < 1:
        raise SubstrateError(f"checkpoint.keep_last must be >= 1, got {cfg.checkpoint.keep_last}")
    if not 0 < cfg.data.val_fraction < 1:
        raise SubstrateError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")


# ----------------------------------------------------------------------------------------------
# Field typing


def _set_field(section: Any, sec_name: str, key: str, value: Any, *, from_text: bool) -> None:
    hints = typing.get_type_hints(type(section))
    if sec_name == "model" and key.startswith("overrides."):
        sub = key.split(".", 1)[1]
        section.overrides[sub] = _parse_literal(value) if from_text else value
        return
    if key not in hints:
        valid = ", ".join(f.name for f in dataclasses.fields(section))
        raise SubstrateError(f"unknown config key {sec_name}.{key}; valid keys in [{sec_name}]: {valid}")
    setattr(section, key, _coerce(value, hints[key], f"{sec_name}.{key}", from_text))


def _coerce(value: Any, tp: Any, name: str, from_text: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise SubstrateError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if tp is bool:
        if from_text:
            low = str(value).lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise SubstrateError(f"{name} must be true or false; got {value!r}")
    if tp is int:
        if from_text:
            try:
                return int(str(value).replace("_", ""))
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SubstrateError(f"{name} must be an integer; got {value!r}")
    if tp is float:
        if from_text:
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SubstrateError(f"{name} must be a number; got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise SubstrateError(f"{name} must be a string; got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if from_text:
            parsed = _parse_literal(value)
            value = parsed if isinstance(parsed, list) else [s for s in str(value).split(",") if s]
            # items of a comma list are text; TOML arrays already carry types
            return [_coerce(v, item_tp, name, isinstance(v, str) and item_tp is not str) for v in value]
        if not isinstance(value, list):
            raise SubstrateError(f"{name} must be a list; got {value!r}")
        return [_coerce(v, item_tp, name, False) for v in value]
    if origin is dict:
        if from_text:
            value = _parse_literal("{" + str(value) + "}") if not str(value).startswith("{") \
                else _parse_literal(value)
        if not isinstance(value, dict):
            raise SubstrateError(f"{name} must be a table, e.g. {{n_layer = 2}}; got {value!r}")
        return dict(value)
    raise AssertionError(f"unsupported config type {tp} for {name}")


def _parse_literal(text: Any) -> Any:
    """Parse a TOML value (``2``, ``1e-3``, ``true``, ``[1, 2]``, ``{a = 1}``); plain text stays text."""
    if not isinstance(text, str):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------
# TOML writing (tomllib only reads) and help


def dump_toml(data: dict[str, dict[str, Any]]) -> str:
    """Write a two-level dict of sections as TOML (values: str, int, float, bool, list, dict)."""
    lines: list[str] = []
    for sec, values in data.items():
        lines.append(f"[{sec}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return '""'
    raise SubstrateError(f"cannot write {value!r} as TOML")


def field_docs(section_cls: type) -> dict[str, str]:
    """Attribute docstrings of a section dataclass (the string right after each field)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(section_cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe_config(cfg: RunConfig | None = None) -> str:
    """Every section and key with its current value and docstring (``--help-config``)."""
    cfg = cfg or RunConfig()
    out: list[str] = []
    for sec_name, cls in SECTIONS.items():
        out.append(f"[{sec_name}]  {(cls.__doc__ or '').strip()}")
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            value = _toml_value(getattr(getattr(cfg, sec_name), f.name))
            out.append(f"  --{sec_name}.{f.name} = {value}")
            if docs.get(f.name):
                out.extend("      " + line for line in textwrap.wrap(docs[f.name], 90))
        out.append("")
    return "\n".join(out)
