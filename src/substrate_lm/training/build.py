"""Assemble a run's pieces from its config: data, tokenizer, model; and check they fit together.

This is the only training module that knows about presets and substrates (through
``substrate_lm.factory``); the loop itself sees a model, its ``requires_grad`` flags and batches.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..data import TokenShards, prepare_data
from ..data.encoding import load_tokenizer_any, tokenizer_identity
from ..data.folder import chars_per_token, is_prepared, load_meta, read_record
from ..errors import SubstrateError
from ..factory import build_model
from ..loading import check_model_tokenizer, load_model_dir
from ..modeling import SubstrateForCausalLM
from ..presets import get_preset
from ..tokenizer import build_from_corpus, save_tokenizer
from ..world import generate_world
from .config import DataSection, ModelSection

__all__ = ["RunData", "is_prepared", "load_run_data", "build_run_model", "build_model_meta", "check_compat",
           "model_spec", "model_from_spec", "load_init_model", "load_run_tokenizer", "prepare_world_sources"]


@dataclass
class RunData:
    """The token shards of a run plus what preparation recorded about them."""

    train: Any
    """Training split: anything with ``get_batch(step, batch_size, seq_len, seed, mode, rank, world_size)``."""
    val: Any | None = None
    """Validation split (None: validation is skipped)."""
    path: Path | None = None
    meta: dict = field(default_factory=dict)
    """``meta.json``: tokenizer identity (name, vocab_size, eos_id, fingerprint) and settings."""
    stats: dict = field(default_factory=dict)
    """``stats.json``: documents, characters, tokens, chars/token per split."""

    def chars_per_token(self, split: str = "val") -> float | None:
        """Characters per token of ``split`` (for bits per character), None when unknown."""
        return chars_per_token(self.stats, split)


def load_run_data(section: DataSection, *, tokenizer: Any = None, seed: int = 0,
                  is_main: bool = True, barrier: Callable[[], None] = lambda: None,
                  progress: bool = True) -> RunData:
    """Open (and, when ``data.sources`` is set and the folder is empty, first prepare) the data.

    Args:
        section: the ``[data]`` section.
        tokenizer: tokenizer object or name used when the data must be prepared.
        seed: split seed used when preparing.
        is_main: only the main rank prepares; the others wait at ``barrier``.

    Raises:
        SubstrateError: no data path, a missing corpus, or unprepared data without sources.
    """
    if not section.path:
        raise SubstrateError("no training data: set data.path to a folder written by "
                             "`substrate-lm data prepare` (e.g. --data.path data/world)")
    path = Path(os.path.expanduser(section.path))
    if not is_prepared(path):
        if not section.sources and not section.world:
            raise SubstrateError(
                f"missing corpus: {path} holds no prepared token shards; run `substrate-lm data "
                f"prepare SOURCE --tokenizer TOK --out {path}` first, or set data.sources")
        if section.sources and tokenizer is None:
            raise SubstrateError(f"data.sources needs a tokenizer to prepare {path}: set model.tokenizer")
        if is_main:
            if section.world:
                sources, tokenizer = prepare_world_sources(path, section.world, tokenizer, seed)
            else:
                sources = section.sources
            prepare_data(sources, tokenizer, path, val_fraction=section.val_fraction,
                         seed=seed, progress=progress)
        barrier()
    train = TokenShards(path, split="train")
    try:
        val = TokenShards(path, split="val")
        if len(val) == 0:
            val = None
    except (SubstrateError, FileNotFoundError, ValueError):
        val = None
    return RunData(train=train, val=val, path=path, meta=load_meta(path),
                   stats=read_record(path / "stats.json"))


def prepare_world_sources(path: Path, size: str, tokenizer: Any, seed: int) -> tuple[list[str], Any]:
    """Generate the built-in world corpus under ``path`` and, without a tokenizer, build one for it.

    Returns:
        ``(sources, tokenizer)`` for :func:`substrate_lm.data.prepare_data`; the tokenizer is an
        absolute folder path, so ``meta.json`` records where it lives.
    """
    corpus = path / "corpus"
    if not ((corpus / "train.jsonl").is_file() and (corpus / "val.jsonl").is_file()):
        generate_world(corpus, size=size, seed=seed)
    if tokenizer is None:
        tok_dir = path / "tokenizer"
        if not (tok_dir / "tokenizer.json").is_file():
            save_tokenizer(build_from_corpus([corpus / "train.jsonl"]), tok_dir, overwrite=True)
        tokenizer = str(tok_dir.resolve())
    return [str(corpus)], tokenizer


def load_run_tokenizer(section: ModelSection, data: RunData | None) -> Any:
    """The run's tokenizer: ``model.tokenizer`` or the one recorded in the data's ``meta.json``.

    Raises:
        SubstrateError: none can be found, or the configured one differs from the data's.
    """
    recorded = (data.meta.get("tokenizer") or {}) if data is not None else {}
    name = section.tokenizer or recorded.get("name")
    if not name:
        raise SubstrateError("no tokenizer: set model.tokenizer (a folder or hub id); the data's "
                             "meta.json names none")
    tok, _ = load_tokenizer_any(name)
    if recorded.get("fingerprint"):
        ident = tokenizer_identity(tok, name)
        if ident["fingerprint"] != recorded["fingerprint"]:
            raise SubstrateError(
                f"tokenizer mismatch: {data.path} was tokenised with {recorded.get('name')} (vocab "
                f"{recorded.get('vocab_size')}) but model.tokenizer is {name} (vocab "
                f"{ident['vocab_size']}); use the data's tokenizer or prepare the data again")
    return tok


def build_run_model(section: ModelSection, tokenizer: Any = None, *, seed: int = 0) -> nn.Module:
    """The model a run starts from: a fresh one with its substrate installed (through
    :func:`substrate_lm.factory.build_model`), or the weights of ``model.init_from``.

    Args:
        section: the ``[model]`` section (preset, substrate spec, overrides).
        tokenizer: sets vocab size and special ids, and provides the strings of glyph substrates.
        seed: seed of the weight init and of the substrate's random codes.
    """
    if section.init_from:
        if section.overrides:
            raise SubstrateError("model.overrides cannot change a model loaded with model.init_from")
        try:
            model = load_init_model(section.init_from)
        except (OSError, ValueError) as exc:
            raise SubstrateError(f"cannot load model.init_from {section.init_from}: "
                                 f"{str(exc).splitlines()[0]}") from None
        if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
            check_model_tokenizer(os.path.expanduser(section.init_from), tokenizer,
                                  other=(f"model.tokenizer {section.tokenizer}" if section.tokenizer
                                         else "the tokenizer the data was prepared with"),
                                  flag="--model.allow_foreign_tokenizer true",
                                  allow=section.allow_foreign_tokenizer, warn=lambda m: print(m, file=sys.stderr))
        return model
    return build_model(section.preset, section.substrate or None, tokenizer=tokenizer, seed=seed,
                       overrides=dict(section.overrides))


def build_model_meta(section: ModelSection) -> nn.Module:
    """The model of a config on the meta device: shapes and parameter counts, no memory, no data."""
    try:
        cfg = get_preset(section.preset, substrate=section.substrate or None, **section.overrides)
    except (ValueError, TypeError) as exc:
        raise SubstrateError(str(exc)) from None
    with torch.device("meta"):
        return SubstrateForCausalLM(cfg)


def check_compat(model: nn.Module, data: RunData | None, tokenizer: Any = None) -> None:
    """Refuse a model whose vocabulary cannot hold the data's or the tokenizer's ids.

    Raises:
        SubstrateError: one line naming both sides of the mismatch.
    """
    vocab = int(model.config.vocab_size)
    recorded = (data.meta.get("tokenizer") or {}) if data is not None else {}
    data_vocab = recorded.get("vocab_size")
    if data_vocab is not None and int(data_vocab) != vocab:
        raise SubstrateError(
            f"tokenizer/substrate mismatch: {data.path} was tokenised with {recorded.get('name')} "
            f"(vocab {data_vocab}) but the model's substrate and head have {vocab} rows; build the "
            f"model with that tokenizer (model.tokenizer) or prepare the data with the model's")
    if tokenizer is not None and len(tokenizer) != vocab:
        raise SubstrateError(
            f"tokenizer/substrate mismatch: the tokenizer has {len(tokenizer)} tokens but the model's "
            f"substrate and head have {vocab} rows")


def model_spec(model: nn.Module) -> dict[str, str]:
    """What rebuilds an empty copy of ``model``: its class and its config as JSON."""
    # fully_shard swaps the class for a subclass FSDP<cls>(FSDPModule, cls): record cls itself
    cls = next(c for c in type(model).__mro__ if not c.__module__.startswith("torch.distributed"))
    return {"class": f"{cls.__module__}:{cls.__qualname__}",
            "config_class": f"{type(model.config).__module__}:{type(model.config).__qualname__}",
            "config": model.config.to_json_string(use_diff=False)}


#: Packages whose classes a checkpoint's model spec may name; nothing else is ever imported.
SPEC_PACKAGES = ("substrate_lm", "transformers")


def _spec_class(qual: Any, base: type, what: str) -> type:
    """The class a spec names, imported only from :data:`SPEC_PACKAGES` and only if it subclasses ``base``."""
    if not isinstance(qual, str) or qual.count(":") != 1:
        raise SubstrateError(f"the checkpoint's model spec names a malformed {what} {qual!r}")
    mod, name = qual.split(":")
    parts = name.split(".")
    if (mod.split(".")[0] not in SPEC_PACKAGES
            or not all(p.isidentifier() and not p.startswith("_") for p in mod.split(".") + parts)):
        raise SubstrateError(f"the checkpoint's model spec names {qual!r}; only {what}es of "
                             f"{' and '.join(SPEC_PACKAGES)} are loaded (a checkpoint never chooses code)")
    try:
        obj: Any = importlib.import_module(mod)
        for part in parts:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SubstrateError(f"the checkpoint's model spec names {qual!r}, which does not exist "
                             f"here ({exc})") from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise SubstrateError(f"the checkpoint's model spec names {qual!r}, which is not a {what}")
    return obj


def model_from_spec(spec: dict[str, str]) -> nn.Module:
    """Inverse of :func:`model_spec`: a freshly initialised model of the same class and config.

    Only a model class (a ``PreTrainedModel`` subclass) and a config class (a ``PretrainedConfig``
    subclass) from ``substrate_lm`` or ``transformers`` are accepted, so a doctored checkpoint
    cannot make this import or call anything else.

    Raises:
        SubstrateError: a spec naming anything else, or a config that does not parse.
    """
    if not isinstance(spec, dict):
        raise SubstrateError("the checkpoint's model spec is not a mapping")
    cfg_cls = _spec_class(spec.get("config_class"), PretrainedConfig, "config class")
    cls = _spec_class(spec.get("class"), PreTrainedModel, "model class")
    try:
        cfg = cfg_cls.from_dict(json.loads(spec["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SubstrateError(f"the checkpoint's model config does not parse ({exc})") from None
    return cls(cfg)


def load_init_model(path: str) -> nn.Module:
    """The model of ``model.init_from`` without running code from that folder.

    Our own model types load with our classes (files checked against the export's hashes);
    any other folder with the classes transformers ships (``trust_remote_code=False``), so a
    folder's ``.py`` files never run. Goes through :func:`substrate_lm.loading.load_model_dir`.
    """
    return load_model_dir(os.path.expanduser(path), allow_hub=True)
