"""Checkpoints that survive crashes: atomic, verified, pruned.

Layout of ``<run>/checkpoints/``::

    step-00000200/
        model.safetensors     model weights (full, unsharded; frozen table included)
        optimizer.pt          optimizer state (torch.save; loaded with weights_only=True)
        state.pt              step, data position, scheduler, RNG states (python, numpy, torch,
                              CUDA), metrics, the run config
        manifest.json         sha256 + size of each file above; written LAST
    step-00000400/ ...
    index.json                latest / best / list, for people and tools (rebuilt on every save)

A checkpoint is written into a hidden ``.tmp-step-...`` folder, every file fsynced, the manifest
written last, and the folder renamed into place, so a SIGKILL at any moment leaves either no new
checkpoint or a complete one. Loading verifies every hash; a corrupt or truncated checkpoint is
reported in one line and the previous good one is used instead.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import SubstrateError
from ..fsutil import atomic_write_text, disk_error, fsync_dir, fsync_file, sha256_file

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.pt"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
FORMAT_VERSION = 1


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
# RNG


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
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
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------------------------
# Verification and loading


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a checkpoint against its manifest.

    Returns:
        The manifest.

    Raises:
        CheckpointCorrupt: missing manifest or file, size or sha256 mismatch.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointCorrupt(f"{MANIFEST_FILE} missing (save interrupted?)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorrupt(f"{MANIFEST_FILE} unreadable ({exc})") from None
    for name, meta in files.items():
        fpath = path / name
        if not fpath.is_file():
            raise CheckpointCorrupt(f"{name} missing")
        size = fpath.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointCorrupt(f"{name} has {size} bytes, expected {meta['bytes']} (truncated?)")
        if sha256_file(fpath) != meta["sha256"]:
            raise CheckpointCorrupt(f"{name} sha256 mismatch (corrupted on disk?)")
    return manifest


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True,
                    load_optimizer: bool = True) -> Checkpoint:
    """Load one checkpoint folder onto the CPU.

    Raises:
        CheckpointCorrupt: when ``verify`` and a file fails its hash, or a file does not parse.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if verify:
        verify_checkpoint(path)
    try:
        model_state = load_file(str(path / MODEL_FILE))
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        optim = (torch.load(path / OPTIM_FILE, map_location="cpu", weights_only=True)
                 if load_optimizer and (path / OPTIM_FILE).is_file() else None)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise CheckpointCorrupt(f"cannot read: {str(exc).splitlines()[0]}") from None
    return Checkpoint(path=path, step=int(state["step"]), model_state=model_state,
                      optimizer_state=optim, state=state)


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
        dirs = [p for p in self.root.iterdir() if p.is_dir() and _step_of(p) is not None]
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

    def save(self, step: int, *, model_state: dict[str, torch.Tensor],
             optimizer_state: dict[str, Any] | None, state: dict[str, Any],
             val_loss: float | None = None, config_toml: str | None = None) -> Path:
        """Write checkpoint ``step`` atomically, then prune.

        Args:
            step: optimizer steps done.
            model_state: full (unsharded) model state dict; tensors are moved to CPU.
            optimizer_state: optimizer state dict (FQN-keyed or index-keyed).
            state: step, data position, scheduler, RNG, config ... (``weights_only``-loadable).
            val_loss: validation loss at this step (for keep-best), or None.
            config_toml: the run config as TOML, stored beside the weights for people.

        Returns:
            The checkpoint folder.

        Raises:
            SubstrateError: disk full or another write error; the partial folder is removed and no
                existing checkpoint is touched.
        """
        from safetensors.torch import save_file

        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._clean_temp()
            tmp.mkdir()
            save_file(_safetensors_ready(model_state), str(tmp / MODEL_FILE),
                      metadata={"step": str(step), "format": "substrate-lm"})
            files = [MODEL_FILE]
            if optimizer_state is not None:
                torch.save(optimizer_state, tmp / OPTIM_FILE)
                files.append(OPTIM_FILE)
            torch.save(dict(state, step=step, val_loss=val_loss), tmp / STATE_FILE)
            files.append(STATE_FILE)
            if config_toml is not None:
                (tmp / "config.toml").write_text(config_toml, encoding="utf-8")
                files.append("config.toml")
            for name in files:
                fsync_file(tmp / name)
            # the manifest is written after the payload is durable: its presence certifies it
            manifest = {
                "format": FORMAT_VERSION,
                "step": step,
                "val_loss": val_loss,
                "time": time.time(),
                "files": {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                          for n in files},
            }
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
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_error(exc, f"checkpoint {final}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.prune()
        return final

    def _clean_temp(self) -> None:
        for p in self.root.iterdir():
            if p.name.startswith((".tmp-", ".old-")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def _read_manifest(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def best(self) -> tuple[Path, float] | None:
        """The checkpoint with the lowest recorded validation loss (manifest-complete ones only)."""
        best: tuple[Path, float] | None = None
        for path in self.step_dirs():
            man = self._read_manifest(path)
            if man is None or man.get("val_loss") is None:
                continue
            if best is None or man["val_loss"] < best[1]:
                best = (path, float(man["val_loss"]))
        return best

    def prune(self) -> None:
        """Delete all but the newest ``keep_last`` and the best; rewrite ``index.json``."""
        dirs = self.step_dirs()
        complete = [p for p in dirs if (p / MANIFEST_FILE).is_file()]
        keep = set(complete[: self.keep_last])
        best = self.best() if self.keep_best else None
        if best is not None:
            keep.add(best[0])
        for path in complete:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
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
