"""The one place that loads a model folder or a tokenizer, without running code from the folder.

Every command that takes a model folder (``info``, ``generate``, ``eval``, ``analyze``, ``compose``,
``model.init_from``) goes through :func:`load_model_dir`, and every tokenizer through
:func:`load_tokenizer`:

* Our own folders (``config.json`` ``model_type`` ``substrate_lm`` or ``substrate_lm_composed``)
  are loaded with the package's classes (:class:`~substrate_lm.modeling.SubstrateForCausalLM`,
  :class:`~substrate_lm.modeling.ComposedForCausalLM`); the ``.py`` files in the folder are never
  imported. Before the weights are read, the files the export listed in ``substrate_export.json``
  and the weight files listed in ``config.json`` are checked against their sha256; after, the table
  against its fingerprint and, for a frozen kind, against the table its kind and seed regenerate,
  whatever ``substrate_frozen`` says (:func:`check_table`).
* A model folder records its tokenizer's fingerprint (``tokenizer_fingerprint`` in ``config.json``);
  :func:`check_model_tokenizer` refuses another tokenizer with it in one line.
* Any other Hugging Face causal LM loads with ``trust_remote_code`` off: a folder that needs its
  own code (``auto_map`` in ``config.json``, a model type transformers does not know) is refused
  unless the caller passes ``trust_remote_code=True`` (the ``--trust-remote-code`` flag).
* Tokenizers load with ``trust_remote_code`` off the same way (:mod:`substrate_lm.tokenizer.load`).

Every failure is a one-line :class:`~substrate_lm.errors.SubstrateError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM

from .errors import SubstrateError
from .fsutil import read_json
from .export import EXPORT_MANIFEST, read_export_manifest
from .modeling import MODEL_CLASSES, SubstrateForCausalLM, file_sha256
from .substrates.provenance import table_provenance_problem
from .tokenizer.identity import CONFIG_KEY as TOKENIZER_KEY
from .tokenizer.identity import check_same_tokenizer, tokenizer_fingerprint
from .tokenizer.inspect import vocab_strings
from .tokenizer.load import load_tokenizer as _load_tokenizer

#: Files of an export that change what the model computes; checked against the export manifest.
CHECKED_EXPORT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

REMOTE_CODE_HINT = "pass --trust-remote-code only if you trust the code in that folder"


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:240] + "...") if len(text) > 240 else (text or type(exc).__name__)


def read_model_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a model folder as a dict.

    Raises:
        SubstrateError: not a folder, no ``config.json``, or one that is not a JSON object.
    """
    p = Path(path)
    if not p.is_dir():
        raise SubstrateError(f"{path} is not a model directory (no such folder); pass a directory written by init/export")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise SubstrateError(f"{path} is not a model directory (no config.json); pass a directory written by init/export")
    return read_json(cfg, kind=dict, fix="re-export the model")


def check_export_files(path: str | os.PathLike) -> bool:
    """Check the files an export listed in ``substrate_export.json`` (config, weights, tokenizer).

    Returns:
        True when the folder has a manifest (and every checked file matched), False when it has none.

    Raises:
        SubstrateError: a listed file is missing or differs from its recorded sha256.
    """
    p = Path(path)
    if not (p / EXPORT_MANIFEST).exists():
        return False
    manifest = read_export_manifest(p)
    if manifest is None:
        raise SubstrateError(f"{path}: {EXPORT_MANIFEST} is damaged; re-export the model")
    for name, digest in sorted(manifest["files"].items()):
        weight = name.endswith((".safetensors", ".bin", ".index.json"))
        if not (weight or name in CHECKED_EXPORT_FILES):
            continue
        f = p / name
        if not f.is_file():
            raise SubstrateError(f"{path}: {name} is missing; copy the whole folder or re-export the model")
        if file_sha256(f) != digest:
            raise SubstrateError(f"{path}: {name} does not match the sha256 recorded in {EXPORT_MANIFEST} "
                                 f"(corrupt, truncated or edited); copy it again or re-export the model")
    return True


def model_class_for(model_type: str | None):
    """Our class for a ``config.json`` model_type, or None for a foreign model."""
    return MODEL_CLASSES.get(model_type or "")


def _dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype == "auto":
            return "auto"
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise SubstrateError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        return value
    return dtype


def load_model_dir(
    path: str | os.PathLike,
    device: Any = "cpu",
    dtype: Any = None,
    trust_remote_code: bool = False,
    allow_hub: bool = False,
):
    """Load a causal LM folder, our own classes for our folders, in eval mode on ``device``.

    Args:
        path: model folder (``config.json`` + weights); with ``allow_hub`` also a hub id.
        device: where to put the model (``"cpu"``, ``"cuda"``, a ``torch.device``).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, a torch dtype or None (as saved).
        trust_remote_code: allow a foreign folder's own ``.py`` files to run (never used for ours).
        allow_hub: a path that is not a local folder is taken as a hub id.

    Raises:
        SubstrateError: one line: not a model folder, a damaged or altered file, a folder that
            needs its own code while ``trust_remote_code`` is off, any load error.
    """
    kwargs: dict[str, Any] = {}
    dt = _dtype(dtype)
    if dt is not None:
        kwargs["dtype"] = dt
    p = Path(path)
    looks_like_hub_id = str(path).count("/") == 1 and not str(path).startswith((".", "/", "~"))
    if allow_hub and not p.exists() and looks_like_hub_id:
        model = _load_hub(str(path), kwargs, trust_remote_code)
    else:
        cfg = read_model_config(p)
        cls = model_class_for(cfg.get("model_type"))
        if cls is not None:
            check_export_files(p)
            try:
                model = cls.from_pretrained(str(p), **kwargs)
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise SubstrateError(f"cannot load {path}: {_first_line(exc)}") from None
            if isinstance(model, SubstrateForCausalLM):
                check_table(p, cfg, model.token_embeddings.weight)
        else:
            check_export_files(p)
            model = _load_foreign(str(p), cfg, kwargs, trust_remote_code)
    try:
        return model.to(device).eval()
    except (RuntimeError, ValueError) as exc:
        raise SubstrateError(f"cannot move the model to {device}: {_first_line(exc)}") from None


def check_table(path: str | os.PathLike, cfg: dict, table) -> None:
    """Refuse a table that is not the one its config says, whatever ``substrate_frozen`` says: a
    frozen kind must be what its kind and seed regenerate, any table must match its recorded
    fingerprint (see :mod:`substrate_lm.substrates.provenance`).

    Raises:
        SubstrateError: one line naming the folder, the problem and the fix.
    """
    vocab = None
    if cfg.get("substrate_kind") == "glyph" and has_tokenizer(path):
        vocab = vocab_strings(load_tokenizer(path))
    problem = table_provenance_problem(cfg, table, vocab=vocab)
    if problem:
        raise SubstrateError(f"{path}: {problem}")


def model_tokenizer_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint of the tokenizer a model folder was made with: recorded in its config.json
    (``tokenizer_fingerprint``), else that of the tokenizer in the folder, else None (unknown)."""
    p = Path(path)
    if not p.is_dir():
        return None  # a hub id: nothing recorded locally
    cfg = read_json(p / "config.json", missing={}, corrupt={}, kind=dict)
    recorded = cfg.get(TOKENIZER_KEY)
    if isinstance(recorded, str) and recorded:
        return recorded
    if has_tokenizer(p):
        try:
            return tokenizer_fingerprint(load_tokenizer(p))
        except SubstrateError:
            return None
    return None


def check_model_tokenizer(path: str | os.PathLike, tokenizer, *, other: str,
                          flag: str = "--allow-foreign-tokenizer", allow: bool = False, warn=None) -> bool:
    """Refuse a tokenizer that is not the one model folder ``path`` was made with.

    Args:
        path: the model folder.
        tokenizer: the tokenizer about to be used with it.
        other: how the message names the tokenizer (``"--tokenizer tok2"``).
        flag: the explicit flag that accepts a mismatch; ``allow``: it was given.
        warn: receives the warning line when ``allow`` accepts a mismatch.

    Returns:
        False for an accepted mismatch, else True.

    Raises:
        SubstrateError: one line naming the model, both fingerprints and ``flag``.
    """
    return check_same_tokenizer(model_tokenizer_fingerprint(path), tokenizer_fingerprint(tokenizer),
                                owner=f"model {path}", other=other, flag=flag, allow=allow, warn=warn)


def _load_foreign(path: str, cfg: dict, kwargs: dict, trust_remote_code: bool):
    """A non-substrate-lm folder through ``AutoModelForCausalLM``, remote code only when allowed."""
    if cfg.get("auto_map") and not trust_remote_code:
        if cfg.get("model_type") not in CONFIG_MAPPING:
            raise SubstrateError(
                f"{path} is a {cfg.get('model_type')!r} model that needs the code in its own folder "
                f"(auto_map in config.json); it was not run: {REMOTE_CODE_HINT}"
            )
    try:
        return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; each becomes one line
        hint = f"; {REMOTE_CODE_HINT}" if "trust_remote_code" in str(exc) and not trust_remote_code else ""
        raise SubstrateError(f"cannot load a causal LM from {path}: {_first_line(exc)}{hint}") from None


def _load_hub(repo: str, kwargs: dict, trust_remote_code: bool):
    """A hub id: our class when its config names our model type, else ``AutoModelForCausalLM``."""
    try:
        config = AutoConfig.from_pretrained(repo, trust_remote_code=trust_remote_code)
        cls = model_class_for(getattr(config, "model_type", None))
        if cls is not None:
            return cls.from_pretrained(repo, **kwargs)
        return AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:  # noqa: BLE001
        hint = f"; {REMOTE_CODE_HINT}" if "trust_remote_code" in str(exc) and not trust_remote_code else ""
        raise SubstrateError(f"cannot load a causal LM from {repo}: {_first_line(exc)}{hint}") from None


def has_tokenizer(path: str | os.PathLike) -> bool:
    """True when the folder holds tokenizer files."""
    p = Path(path)
    return any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"))


def load_tokenizer(path: str | os.PathLike, trust_remote_code: bool = False):
    """A tokenizer folder, ``tokenizer.json`` file or hub id, without running code from it.

    Raises:
        SubstrateError: one line when nothing loadable is there.
    """
    return _load_tokenizer(path, trust_remote_code=trust_remote_code)


def load_model_and_tokenizer(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                             device: Any = "cpu", dtype: Any = None, trust_remote_code: bool = False,
                             allow_hub: bool = False):
    """:func:`load_model_dir` and :func:`load_tokenizer` (from ``tokenizer`` or the model folder)."""
    src = tokenizer if tokenizer is not None else path
    if tokenizer is None and Path(path).is_dir() and not has_tokenizer(path):
        raise SubstrateError(f"{path} holds no tokenizer; pass --tokenizer DIR")
    tok = load_tokenizer(src, trust_remote_code=trust_remote_code)
    model = load_model_dir(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                           allow_hub=allow_hub)
    return model, tok


__all__ = ["load_model_dir", "load_tokenizer", "load_model_and_tokenizer", "read_model_config",
           "check_export_files", "has_tokenizer", "model_class_for", "check_table", "check_model_tokenizer",
           "model_tokenizer_fingerprint"]
