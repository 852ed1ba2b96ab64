"""Checkpoints that survive crashes: atomic, verified, pruned, and made of plain data only.

Layout of ``<run>/checkpoints/``::

    step-00000200/
        model.safetensors       model weights (full, unsharded; frozen table included)
        optimizer.json          optimizer state: its structure and numbers as JSON, tensors by name
        optimizer.safetensors   ... and the tensors it names (exp_avg, exp_avg_sq, step)
        state.json              step, data position, scheduler, RNG states, metrics, the run config
        state.safetensors       tensors of the state (torch and CUDA RNG states)
        config.toml             the run config, for people
        manifest.json           sha256 + size of each file above, and its own hash; written LAST
    step-00000400/ ...
    index.json                  latest / best / list, for people and tools (rebuilt on every save)

A sharded checkpoint (FSDP2 runs) has no ``model.safetensors`` / ``optimizer.*``; instead every rank
writes its own pieces of the weights and optimizer tensors with ``torch.distributed.checkpoint``
into ``shards/shard-0000R-model-00001-of-00001.safetensors`` (safetensors, DCP's sharding record
as JSON in each header; see :mod:`~substrate_lm.training.distributed`), and rank 0 adds
``state.json`` (with the optimizer's ``param_groups``), ``config.toml`` and the manifest, whose
``layout`` is ``"sharded"``. It resumes at any world size (DCP reshards) and loads in one process
(:func:`load_checkpoint` assembles the full tensors), so ``export`` still writes one model folder.

Nothing in a checkpoint is a pickle: tensors live in safetensors files and everything else in
JSON (tuples, non-string dict keys and tensors are tagged, see :func:`tree_to_json`), so loading a
checkpoint can never import or call anything, whoever wrote the folder. Checkpoints of the
pickled format (``state.pt``, ``optimizer.pt``) of earlier versions are refused in one line.

A checkpoint is written into a hidden ``.tmp-step-...`` folder, every file fsynced, the manifest
written last, and the folder renamed into place, so a SIGKILL at any moment leaves either no new
checkpoint or a complete one. Loading verifies every hash and the manifest's own; a corrupt,
truncated or doctored checkpoint is reported in one line and the previous good one is used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save_file
from safetensors.torch import save as save_bytes

from ..errors import SubstrateError
from ..fsutil import (TMP_PREFIX, atomic_write_bytes, atomic_write_text, clean_debris, disk_error, fsync_dir, fsync_file,
                      sha256_file)
from .distributed import MODEL_PREFIX, full_optimizer_from_shards, read_sharded

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.json"
OPTIM_TENSORS = "optimizer.safetensors"
STATE_FILE = "state.json"
STATE_TENSORS = "state.safetensors"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
SHARD_DIR = "shards"
FORMAT_VERSION = 2
#: Prefixes of this manager's own temporary folders (killed saves, replaced steps, pruned steps).
DEBRIS_PREFIXES = (".tmp-", ".old-", ".del-")
#: Files of the pickled format 1; never unpickled.
LEGACY_FILES = ("state.pt", "optimizer.pt")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHARD_NAME_RE = re.compile(r"^shard-[0-9]{5}-model-[0-9]{5}-of-[0-9]{5}\.safetensors$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
#: What a checkpoint folder holds; a step folder without a manifest holding only these is the
#: remains of an interrupted prune (see :meth:`CheckpointManager.prune`).
_OWN_NAMES = {MODEL_FILE, OPTIM_FILE, OPTIM_TENSORS, STATE_FILE, STATE_TENSORS, MANIFEST_FILE,
              "config.toml", SHARD_DIR}


def _manifest_name_ok(name: Any) -> bool:
    """A file name a manifest may list: a plain name in the folder, or one shard in ``shards/``."""
    if not isinstance(name, str) or name == MANIFEST_FILE:
        return False
    if "/" in name:
        head, _, tail = name.partition("/")
        return head == SHARD_DIR and bool(_SHARD_NAME_RE.match(tail))
    return bool(_NAME_RE.match(name))


class CheckpointCorrupt(Exception):
    """A checkpoint folder that fails verification; the message says which file and why."""


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on CPU)."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    state: dict[str, Any]
    sharded: bool = False
    """Written by FSDP2 ranks into ``shards/`` (the full tensors above were assembled from them)."""

    @property
    def shard_dir(self) -> Path:
        return self.path / SHARD_DIR


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith("step-"):
        return None
    try:
        return int(name[5:])
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# Plain-data serialisation: JSON for structure, safetensors for tensors


def tree_to_json(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-ready copy of ``obj``; its tensors are moved into ``tensors`` and named in the tree.

    Handles None, bool, int, float (NaN and infinities included), str, lists, tuples, dicts with
    any scalar or tuple keys, numpy scalars and torch tensors. Tags: ``{"__tensor__": name}``,
    ``{"__tuple__": [...]}``, ``{"__dict__": [[key, value], ...]}`` (for dicts whose keys are not
    all plain strings, or collide with a tag). :func:`tree_from_json` inverts it exactly.

    Raises:
        TypeError: any other type (a checkpoint never holds objects that need code to rebuild).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, np.generic):
        return tree_to_json(obj.item(), tensors)
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, tuple):
        return {"__tuple__": [tree_to_json(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [tree_to_json(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: tree_to_json(v, tensors) for k, v in obj.items()}
        return {"__dict__": [[tree_to_json(k, tensors), tree_to_json(v, tensors)]
                             for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (plain data and tensors only)")


def tree_from_json(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`tree_to_json`; builds only dicts, lists, tuples, scalars and tensors.

    Raises:
        ValueError: a tag that is malformed or names a tensor that is not there.
    """
    if isinstance(obj, list):
        return [tree_from_json(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise ValueError(f"unexpected {type(obj).__name__} in a checkpoint tree")
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == "__tensor__":
            if not isinstance(value, str) or value not in tensors:
                raise ValueError(f"the tree names a tensor {value!r} that is not stored")
            return tensors[value]
        if tag == "__tuple__":
            if not isinstance(value, list):
                raise ValueError("malformed __tuple__ tag")
            return tuple(tree_from_json(v, tensors) for v in value)
        if tag == "__dict__":
            if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
                raise ValueError("malformed __dict__ tag")
            out = {}
            for k, v in value:
                key = tree_from_json(k, tensors)
                if isinstance(key, (list, dict, torch.Tensor)):
                    raise ValueError("unhashable dict key in a checkpoint tree")
                out[key] = tree_from_json(v, tensors)
            return out
    if any(k.startswith("__") for k in obj):
        raise ValueError(f"unknown tag in a checkpoint tree: {sorted(obj)[0]!r}")
    return {k: tree_from_json(v, tensors) for k, v in obj.items()}


def _write_tree(obj: Any, folder: Path, json_name: str, tensor_name: str) -> list[str]:
    """Write ``obj`` as ``json_name`` (+ ``tensor_name`` when it holds tensors); the files written."""
    tensors: dict[str, torch.Tensor] = {}
    tree = tree_to_json(obj, tensors)
    files = []
    if tensors:
        save_file(_safetensors_ready(tensors), str(folder / tensor_name),
                  metadata={"format": "substrate-lm"})
        files.append(tensor_name)
    with open(folder / json_name, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": FORMAT_VERSION, "tree": tree}, ensure_ascii=False) + "\n")
    files.insert(0, json_name)
    return files


def _read_tree(folder: Path, json_name: str, tensor_name: str) -> Any:
    doc = json.loads((folder / json_name).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or "tree" not in doc:
        raise ValueError(f"{json_name} holds no tree")
    tensors = load_file(str(folder / tensor_name)) if (folder / tensor_name).is_file() else {}
    return tree_from_json(doc["tree"], tensors)


def _plain_digest(tree_json: str, data: bytes | memoryview) -> str:
    h = hashlib.sha256(tree_json.encode("utf-8"))
    h.update(data)
    return h.hexdigest()


def save_plain_file(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` (plain data and tensors) as one self-checking safetensors file, atomically.

    The tensors are the file's tensors; the structure is :func:`tree_to_json` text in the
    header's metadata, with a sha256 over that text and the tensor bytes. No pickle: loading
    (:func:`load_plain_file`) never runs code. For small training states written in one piece
    (e.g. growth stages); run checkpoints use :class:`CheckpointManager`.
    """
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps({"format": FORMAT_VERSION, "tree": tree_to_json(obj, tensors)},
                      ensure_ascii=True)
    ready = _safetensors_ready(tensors)
    first = save_bytes(ready, metadata={"tree": tree})
    n = int.from_bytes(first[:8], "little")
    digest = _plain_digest(tree, memoryview(first)[8 + n:])
    # the data section does not depend on the metadata: the digest holds for the final file
    return atomic_write_bytes(path, save_bytes(ready, metadata={"tree": tree, "sha256": digest}))


def load_plain_file(path: str | os.PathLike) -> Any:
    """Inverse of :func:`save_plain_file` (tensors on the CPU).

    Raises:
        CheckpointCorrupt: missing, truncated or altered file (one line).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or 8 + n > len(raw):
            raise ValueError("truncated header")
        meta = json.loads(raw[8:8 + n].decode("utf-8")).get("__metadata__") or {}
        tree = meta.get("tree")
        if not isinstance(tree, str) or meta.get("sha256") != _plain_digest(tree, memoryview(raw)[8 + n:]):
            raise ValueError("sha256 mismatch (damaged or altered)")
        doc = json.loads(tree)
        return tree_from_json(doc["tree"], load_bytes(raw))
    except FileNotFoundError:
        raise CheckpointCorrupt(f"{path} is missing") from None
    except Exception as exc:  # noqa: BLE001 - every parse failure is the same verdict
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointCorrupt(f"{path.name} is unreadable: {msg}") from None


# ----------------------------------------------------------------------------------------------
# RNG


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as plain data and tensors (see :func:`tree_to_json`)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------------------------
# Verification and loading


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "self_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check a checkpoint's manifest (shape and own hash) and every file against it.

    Returns:
        The manifest.

    Raises:
        CheckpointCorrupt: missing, unreadable, empty or doctored manifest; a legacy pickled
            checkpoint; a missing file; a size or sha256 mismatch.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointCorrupt(f"{MANIFEST_FILE} missing (save interrupted?)")
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointCorrupt(f"{MANIFEST_FILE} unreadable ({str(exc).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise CheckpointCorrupt(f"{MANIFEST_FILE} is not a JSON object")
    files = manifest.get("files")
    if isinstance(files, dict) and any(n in files for n in LEGACY_FILES) or (
            manifest.get("format") == 1 and "self_sha256" not in manifest):
        raise CheckpointCorrupt("written in the pickled format of substrate-lm < 0.2 (state.pt), "
                                "which is never loaded because a pickle can run code; retrain or "
                                "convert it with the version that wrote it")
    if manifest.get("self_sha256") != _manifest_digest(manifest):
        raise CheckpointCorrupt(f"{MANIFEST_FILE} fails its own hash (damaged or edited)")
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointCorrupt(f"{MANIFEST_FILE} has unknown format {manifest.get('format')!r}")
    if not isinstance(files, dict) or not files:
        raise CheckpointCorrupt(f"{MANIFEST_FILE} lists no files")
    sharded = manifest.get("layout") == "sharded"
    if manifest.get("layout", "full") not in ("full", "sharded"):
        raise CheckpointCorrupt(f"{MANIFEST_FILE} has unknown layout {manifest.get('layout')!r}")
    for required in ((STATE_FILE,) if sharded else (MODEL_FILE, STATE_FILE)):
        if required not in files:
            raise CheckpointCorrupt(f"{MANIFEST_FILE} does not list {required}")
    if sharded:
        listed = {n for n in files if isinstance(n, str) and n.startswith(SHARD_DIR + "/")}
        if not listed:
            raise CheckpointCorrupt(f"{MANIFEST_FILE} lists no shards")
        on_disk = ({f"{SHARD_DIR}/{p.name}" for p in (path / SHARD_DIR).iterdir()}
                   if (path / SHARD_DIR).is_dir() else set())
        extra = sorted(on_disk - listed)
        if extra:  # DCP reads every shard file in the folder: an unlisted one must not be there
            raise CheckpointCorrupt(f"{extra[0]} is not in {MANIFEST_FILE} (added after the save?)")
    step = manifest.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or (
            _step_of(path) is not None and step != _step_of(path)):
        raise CheckpointCorrupt(f"{MANIFEST_FILE} step {step!r} does not match the folder {path.name}")
    for name, meta in files.items():
        if not _manifest_name_ok(name):
            raise CheckpointCorrupt(f"{MANIFEST_FILE} lists a bad file name {name!r}")
        if not (isinstance(meta, dict) and isinstance(meta.get("bytes"), int)
                and isinstance(meta.get("sha256"), str) and _SHA_RE.match(meta["sha256"])):
            raise CheckpointCorrupt(f"{MANIFEST_FILE} entry of {name} is damaged")
        fpath = path / name
        if fpath.is_symlink() or fpath.parent.is_symlink() or not fpath.is_file():
            raise CheckpointCorrupt(f"{name} missing")
        size = fpath.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointCorrupt(f"{name} has {size} bytes, expected {meta['bytes']} (truncated?)")
        if sha256_file(fpath) != meta["sha256"]:
            raise CheckpointCorrupt(f"{name} sha256 mismatch (corrupted on disk?)")
    return manifest


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True,
                    load_optimizer: bool = True, load_model: bool = True) -> Checkpoint:
    """Load one checkpoint folder onto the CPU (safetensors and JSON only: no code can run).

    A sharded checkpoint (FSDP2) is assembled into full tensors here, in this process alone, so
    the result is the same whichever layout was written.

    Args:
        verify: check the manifest and every file's hash first.
        load_optimizer: also load the optimizer state.
        load_model: also load the weights (``False``: ``model_state`` is empty; the state only).

    Raises:
        CheckpointCorrupt: when ``verify`` and a file fails its hash, or a file does not parse.
    """
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    elif any((path / n).exists() for n in LEGACY_FILES) and not (path / STATE_FILE).exists():
        raise CheckpointCorrupt("written in the pickled format of substrate-lm < 0.2 (state.pt), "
                                "which is never loaded")
    sharded = not (path / MODEL_FILE).is_file() and (path / SHARD_DIR).is_dir()
    try:
        state = _read_tree(path, STATE_FILE, STATE_TENSORS)
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError(f"{STATE_FILE} records no step")
        if sharded:
            model_state = read_sharded(path / SHARD_DIR, MODEL_PREFIX) if load_model else {}
            optim = (full_optimizer_from_shards(path / SHARD_DIR, state.get("optimizer_param_groups") or [],
                                                state.get("optimizer_extra"))
                     if load_optimizer else None)
        else:
            model_state = load_file(str(path / MODEL_FILE)) if load_model else {}
            optim = (_read_tree(path, OPTIM_FILE, OPTIM_TENSORS)
                     if load_optimizer and (path / OPTIM_FILE).is_file() else None)
    except Exception as exc:  # noqa: BLE001 - safetensors, json and our own checks all end here
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointCorrupt(f"cannot read: {msg}") from None
    return Checkpoint(path=path, step=int(state["step"]), model_state=model_state,
                      optimizer_state=optim, state=state, sharded=sharded)


def resolve_checkpoint(path: str | os.PathLike, warn: Callable[[str], None] | None = None) -> Path:
    """Turn a run folder, a ``checkpoints`` folder or a step folder into a verified step folder.

    For a run or checkpoints folder the newest checkpoint that verifies is chosen; each skipped one
    is reported through ``warn`` in one line.

    Raises:
        SubstrateError: nothing usable there.
    """
    path = Path(path)
    if (path / MANIFEST_FILE).is_file() or _step_of(path) is not None:
        try:
            verify_checkpoint(path)
        except CheckpointCorrupt as exc:
            raise SubstrateError(f"checkpoint {path} is unusable: {exc}") from None
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        raise SubstrateError(f"{path} is not a checkpoint, a checkpoints folder or a run folder")
    found = CheckpointManager(root, rank0=False).latest_valid(warn=warn)
    if found is None:
        raise SubstrateError(f"no usable checkpoint under {root}")
    return found


# ----------------------------------------------------------------------------------------------
# Saving


def _write_error(exc: BaseException, what: str) -> SubstrateError:
    """One line for any failure while writing ``what`` (safetensors reports I/O errors as text)."""
    if isinstance(exc, OSError):
        return disk_error(exc, what)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "os error 28" in text or "No space left" in text or "os error 122" in text:
        return disk_error(OSError(errno.ENOSPC, "No space left on device"), what)
    return SubstrateError(f"could not write {what}: {text}; nothing was overwritten")


class CheckpointManager:
    """Save, verify, find and prune the checkpoints of one run.

    Args:
        root: the ``checkpoints`` folder (created on first save).
        keep_last: newest checkpoints to keep.
        keep_best: also keep the one with the lowest validation loss.
        rank0: whether this process writes (only rank 0 does under torchrun).
    """

    def __init__(self, root: str | os.PathLike, keep_last: int = 2, keep_best: bool = True,
                 rank0: bool = True):
        self.root = Path(root)
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.rank0 = rank0

    # -- listing ------------------------------------------------------------------------------

    def step_dirs(self) -> list[Path]:
        """Finished checkpoint folders, newest first (temp folders of killed saves are ignored)."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir()
                if p.is_dir() and not p.is_symlink() and _step_of(p) is not None]
        return sorted(dirs, key=lambda p: _step_of(p), reverse=True)  # type: ignore[arg-type,return-value]

    def latest_valid(self, warn: Callable[[str], None] | None = None) -> Path | None:
        """The newest checkpoint that verifies; each corrupt newer one is reported in one line."""
        bad: list[tuple[Path, str]] = []
        for path in self.step_dirs():
            try:
                verify_checkpoint(path)
            except CheckpointCorrupt as exc:
                bad.append((path, str(exc)))
                continue
            for bad_path, why in bad:
                if warn:
                    warn(f"checkpoint {bad_path.name} is unusable ({why}); using {path.name}")
            return path
        for bad_path, why in bad:
            if warn:
                warn(f"checkpoint {bad_path.name} is unusable ({why}); no earlier checkpoint")
        return None

    # -- saving -------------------------------------------------------------------------------

    def begin_sharded(self, step: int, tag: int | str) -> Path:
        """Rank 0: clean debris and create the temp folder a sharded save is written into.

        Every rank then writes its shards into ``<returned>/shards`` and rank 0 finishes with
        :meth:`save` (``model_state=None``, ``tmp=`` this folder, ``shard_files=`` their hashes).
        """
        tmp = self.root / f".tmp-{step_dir_name(step)}-{tag}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.clean_debris()
            tmp.mkdir()
            (tmp / SHARD_DIR).mkdir()
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_error(exc, f"checkpoint {self.root / step_dir_name(step)}") from None
        return tmp

    def discard(self, tmp: Path) -> None:
        """Remove an unfinished save's temp folder (a failed sharded save)."""
        if tmp.name.startswith(".tmp-") and tmp.parent == self.root:
            shutil.rmtree(tmp, ignore_errors=True)

    def save(self, step: int, *, model_state: dict[str, torch.Tensor] | None,
             optimizer_state: dict[str, Any] | None, state: dict[str, Any],
             val_loss: float | None = None, config_toml: str | None = None,
             tmp: Path | None = None, shard_files: dict[str, dict[str, Any]] | None = None) -> Path:
        """Write checkpoint ``step`` atomically, then prune.

        Args:
            step: optimizer steps done.
            model_state: full (unsharded) model state dict; tensors are moved to CPU. ``None`` for
                a sharded save, whose shards are already in ``tmp``.
            optimizer_state: optimizer state dict (FQN-keyed or index-keyed).
            state: step, data position, scheduler, RNG, config ... (plain data and tensors).
            val_loss: validation loss at this step (for keep-best), or None.
            config_toml: the run config as TOML, stored beside the weights for people.
            tmp: the folder of :meth:`begin_sharded` (sharded saves only).
            shard_files: ``{"shards/<file>": {"sha256", "bytes"}}`` of every shard in ``tmp``,
                hashed by the ranks that wrote them (fsynced by them).

        Returns:
            The checkpoint folder.

        Raises:
            SubstrateError: disk full or another write error; the partial folder is removed and no
                existing checkpoint is touched.
            TypeError: ``state`` or ``optimizer_state`` holds an object that is not plain data.
        """
        final = self.root / step_dir_name(step)
        sharded = model_state is None
        if sharded and (tmp is None or not shard_files):
            raise ValueError("a sharded save needs the temp folder and its shard files")
        tmp = tmp if sharded else self.root / f".tmp-{final.name}-{os.getpid()}"
        if val_loss is not None and not math.isfinite(val_loss):
            val_loss = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            files: list[str] = []
            if not sharded:
                self.clean_debris()
                tmp.mkdir()
                save_file(_safetensors_ready(model_state), str(tmp / MODEL_FILE),
                          metadata={"step": str(step), "format": "substrate-lm"})
                files = [MODEL_FILE]
            if optimizer_state is not None:
                files += _write_tree(optimizer_state, tmp, OPTIM_FILE, OPTIM_TENSORS)
            files += _write_tree(dict(state, step=step, val_loss=val_loss), tmp, STATE_FILE,
                                 STATE_TENSORS)
            if config_toml is not None:
                (tmp / "config.toml").write_text(config_toml, encoding="utf-8")
                files.append("config.toml")
            for name in files:
                fsync_file(tmp / name)
            listed = {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                      for n in files}
            if sharded:
                fsync_dir(tmp / SHARD_DIR)
                listed.update({n: dict(shard_files[n]) for n in sorted(shard_files)})
            # the manifest is written after the payload is durable: its presence certifies it
            manifest = {
                "format": FORMAT_VERSION,
                "step": step,
                "val_loss": val_loss,
                "time": time.time(),
                "files": listed,
            }
            if sharded:
                manifest["layout"] = "sharded"
                manifest["world_size"] = int(state.get("world_size", 0) or 0)
            manifest["self_sha256"] = _manifest_digest(manifest)
            with open(tmp / MANIFEST_FILE, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(tmp)
            if final.exists():
                # re-saving a step (e.g. after a resume): move the old one aside first
                trash = self.root / f".old-{final.name}-{os.getpid()}"
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
            fsync_dir(self.root)
        except (KeyboardInterrupt, SystemExit, TypeError):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except BaseException as exc:  # OSError, SafetensorError (I/O as text), ...
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(exc, f"checkpoint {final}") from None
        self.prune()
        return final

    def clean_debris(self) -> list[str]:
        """Delete this manager's own leftovers in its folder: temp folders of killed saves
        (``.tmp-*``), replaced steps (``.old-*``) and steps a kill caught while being pruned
        (``.del-*``, and manifest-less step folders of older versions, see :meth:`prune`).
        Nothing else is touched. Only the trainer that holds the run's lock may call it.

        Returns:
            The names removed.
        """
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for p in self.root.iterdir():
            if p.name.startswith(DEBRIS_PREFIXES) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        # the temp files of an index.json write a kill interrupted (.tmp-index.json.*)
        if clean_debris(self.root, names=[INDEX_FILE]):
            removed.append(f"{TMP_PREFIX}{INDEX_FILE}.*")
        removed += self._remove_half_pruned()
        return removed

    def _remove_half_pruned(self) -> list[str]:
        """Step folders without a manifest, older than the oldest complete checkpoint, holding only
        a checkpoint's own file names: what an older version's prune left when it was killed."""
        dirs = self.step_dirs()
        complete = [p for p in dirs if (p / MANIFEST_FILE).is_file()]
        if not complete:
            return []
        oldest = _step_of(complete[-1])
        removed = []
        for p in dirs:
            if (p / MANIFEST_FILE).exists() or _step_of(p) >= oldest:  # type: ignore[operator]
                continue
            try:
                names = {c.name for c in p.iterdir()}
            except OSError:
                continue
            if names <= _OWN_NAMES:
                self._delete(p)
                removed.append(p.name)
        return removed

    def _delete(self, path: Path) -> None:
        """Rename a step folder to ``.del-...`` first (atomic), then delete it: a kill in between
        leaves a name :meth:`clean_debris` removes, never a half-deleted ``step-N``."""
        trash = self.root / f".del-{path.name}-{os.getpid()}"
        try:
            os.replace(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _read_manifest(self, path: Path) -> dict[str, Any] | None:
        try:
            man = json.loads((path / MANIFEST_FILE).read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return None
        return man if isinstance(man, dict) else None

    def best(self) -> tuple[Path, float] | None:
        """The checkpoint with the lowest recorded validation loss (manifest-complete ones only)."""
        best: tuple[Path, float] | None = None
        for path in self.step_dirs():
            man = self._read_manifest(path)
            val = None if man is None else man.get("val_loss")
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not math.isfinite(val):
                continue
            if best is None or val < best[1]:
                best = (path, float(val))
        return best

    def prune(self) -> None:
        """Delete all but the newest ``keep_last`` and the best; rewrite ``index.json``.

        Only complete checkpoint folders (``step-N`` with a manifest) directly under the root are
        ever deleted, each renamed to ``.del-step-N-<pid>`` before it is removed (a kill leaves
        that name, which the next run cleans, and never a half-deleted ``step-N``); anything else
        in the folder is left alone.
        """
        dirs = self.step_dirs()
        complete = [p for p in dirs if (p / MANIFEST_FILE).is_file()]
        keep = set(complete[: self.keep_last])
        best = self.best() if self.keep_best else None
        if best is not None:
            keep.add(best[0])
        for path in complete:
            if path not in keep:
                self._delete(path)
        entries = []
        for path in self.step_dirs():
            man = self._read_manifest(path) or {}
            entries.append({"name": path.name, "step": _step_of(path), "val_loss": man.get("val_loss")})
        index = {
            "latest": entries[0]["name"] if entries else None,
            "best": ({"name": best[0].name, "val_loss": best[1]} if best else None),
            "checkpoints": entries,
        }
        try:
            atomic_write_text(self.root / INDEX_FILE, json.dumps(index, indent=1))
        except OSError as exc:
            raise disk_error(exc, f"{self.root / INDEX_FILE}") from None


def _safetensors_ready(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses aliases)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[k] = t
    return out
