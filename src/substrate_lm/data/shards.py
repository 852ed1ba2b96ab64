"""Memory-mapped reader of prepared token shards and the deterministic batch sampler.

``get_batch`` is a pure function of ``(seed, step, rank, world_size)`` and the data, so a resumed
run (or a rank restarted on another node) sees exactly the batches it would have seen.

Both modes define a *global* batch of ``world_size * batch_size`` windows per step and give rank
``r`` the rows ``r * batch_size .. (r + 1) * batch_size``. Ranks are therefore disjoint slices of
one global batch, and ``world_size`` ranks with batch ``B`` see, together, exactly what a single
process with batch ``world_size * B`` sees: a DDP run and its single-process twin train on the
same data.

The trainer asks for micro-batch ``m`` of rank ``r`` (of ``grad_accum`` micro-batches) as rank
``m * world_size + r`` of ``world_size * grad_accum`` at index = the optimizer step, so the global
batch of step ``s`` is the ``batch_size * grad_accum * world_size`` windows drawn for ``(seed, s)``
however it is split into ranks, micro-batches and rows (with ``grad_accum == 1`` this is the plain
rank slice above).

- ``"random"``: the global batch's window starts are drawn uniformly from ``[0, N - T)`` with
  ``numpy.random.Generator(PCG64(SeedSequence([seed, step])))``.
- ``"sequential"``: the split is packed into ``(N - 1) // T`` consecutive non-overlapping windows;
  global row ``g`` of step ``s`` is window ``(s * world_size * B + g) mod n_windows``, so the
  stream is walked in order and wraps around into the next epoch.

A window of ``T + 1`` tokens gives ``x = w[:-1]`` and ``y = w[1:]``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import SubstrateError
from ..fsutil import read_json
from .encoding import load_tokenizer_any, tokenizer_identity

MODES = ("random", "sequential")


def _load_json(path: Path, what: str) -> dict:
    data = read_json(path, missing=None, kind=dict, what=what,
                     fix=f"re-run prepare with --overwrite to rebuild {path.parent}")
    if data is None:
        raise SubstrateError(f"{path.parent} is not a prepared data directory (no {path.name}); run "
                             "substrate-lm data prepare --out DIR first")
    return data


class TokenShards:
    """One split of a prepared data directory as a memory-mapped token stream.

    Args:
        data_dir: directory written by :func:`substrate_lm.data.prepare_data`.
        split: ``"train"`` or ``"val"``.
        verify: also check every shard's sha256 against the manifest (reads all data).

    Attributes:
        meta: ``meta.json`` (tokenizer identity and preparation settings).
        vocab_size, eos_id: from the tokenizer that prepared the data.

    Raises:
        SubstrateError: not a prepared directory, unfinished preparation, or a missing / damaged
            shard.
    """

    def __init__(self, data_dir: "str | os.PathLike", split: str = "train", verify: bool = False):
        self.dir = Path(os.path.expanduser(os.fspath(data_dir)))
        if not self.dir.is_dir():
            raise SubstrateError(f"data directory not found: {self.dir}")
        self.meta = _load_json(self.dir / "meta.json", "metadata")
        manifest = {}
        if (self.dir / "manifest.json").exists():
            manifest = _load_json(self.dir / "manifest.json", "manifest")
        if self.meta.get("dtype") != "uint16":
            raise SubstrateError(f"{self.dir}: unsupported token dtype {self.meta.get('dtype')!r}")
        if not manifest.get("complete"):
            raise SubstrateError(
                f"{self.dir} is not fully prepared (interrupted?); re-run the same "
                "substrate-lm data prepare command to finish it"
            )
        if not isinstance(manifest.get("splits"), dict):
            raise SubstrateError(f"{self.dir / 'manifest.json'} is damaged (no splits); re-run "
                                 f"prepare with --overwrite to rebuild {self.dir}")
        if split not in manifest.get("splits", {}):
            raise SubstrateError(f"unknown split {split!r}; use 'train' or 'val'")
        self.split = split
        tok = self.meta.get("tokenizer", {})
        try:
            self.vocab_size: int = int(tok.get("vocab_size", 0))
            self.eos_id: int = int(tok.get("eos_id", -1))
        except (AttributeError, TypeError, ValueError):
            raise SubstrateError(f"{self.dir / 'meta.json'} is damaged (tokenizer record); re-run "
                                 f"prepare with --overwrite to rebuild {self.dir}") from None
        self._sources = manifest["splits"][split].get("sources") if isinstance(
            manifest["splits"][split], dict) else None
        self._maps: list[np.ndarray] = []
        lengths = []
        shards = (manifest["splits"][split] or {}).get("shards") if isinstance(
            manifest["splits"][split], dict) else None
        if not isinstance(shards, list):
            raise SubstrateError(f"{self.dir / 'manifest.json'} is damaged (no shard list for "
                                 f"{split}); re-run prepare with --overwrite to rebuild {self.dir}")
        for i, sh in enumerate(shards):
            # a manifest names only our own shard files, in order, directly in the folder
            if not (isinstance(sh, dict) and sh.get("file") == f"{split}-{i:05d}.bin"
                    and isinstance(sh.get("tokens"), int) and sh["tokens"] >= 0):
                raise SubstrateError(
                    f"{self.dir / 'manifest.json'} is damaged (shard entry {i} of {split}: "
                    f"{str(sh)[:80]}); re-run prepare with --overwrite to rebuild {self.dir}")
            path = self.dir / sh["file"]
            if not path.is_file():
                raise SubstrateError(
                    f"shard {path} is missing; re-run prepare with --overwrite to rebuild {self.dir}"
                )
            if path.stat().st_size != 2 * sh["tokens"]:
                raise SubstrateError(
                    f"shard {path} is truncated ({path.stat().st_size} bytes, expected "
                    f"{2 * sh['tokens']}); re-run prepare with --overwrite to rebuild {self.dir}"
                )
            mm = np.memmap(path, dtype="<u2", mode="r", shape=(sh["tokens"],))
            if verify:
                digest = "sha256:" + hashlib.sha256(memoryview(mm).cast("B")).hexdigest()
                if digest != sh.get("sha256"):
                    raise SubstrateError(
                        f"shard {path} is corrupt (sha256 mismatch); re-run prepare with "
                        f"--overwrite to rebuild {self.dir}"
                    )
            self._maps.append(mm)
            lengths.append(int(sh["tokens"]))
        # offsets[i] = first global token index of shard i; offsets[-1] = len(self)
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self._n = int(self.offsets[-1])

    # -- the stream --

    def __len__(self) -> int:
        """Number of tokens in the split (eos included)."""
        return self._n

    def __repr__(self) -> str:
        return (f"TokenShards({str(self.dir)!r}, split={self.split!r}, tokens={self._n:,}, "
                f"shards={len(self._maps)})")

    def source_ranges(self) -> list[dict]:
        """Where each source of ``data prepare`` lies in this split's stream, in source order.

        Returns:
            ``[{"spec", "start", "end", "tokens", "characters", "documents"}]``: tokens
            ``[start, end)`` (eos included) came from source ``spec``; ``characters`` is its text.

        Raises:
            SubstrateError: the folder predates the per-source record, or the record is damaged.
        """
        rebuild = f"re-run prepare with --overwrite to rebuild {self.dir}"
        entries = self._sources
        if self.split != "val":
            raise SubstrateError(f"{self.dir}: where each source lies is recorded for the val split only")
        if entries is None:
            raise SubstrateError(f"{self.dir} was prepared by an older substrate-lm and does not record "
                                 f"where each source lies in {self.split}; {rebuild}")
        keys = ("tokens", "characters", "documents")
        out, start = [], 0
        for e in entries if isinstance(entries, list) else [None]:
            if not (isinstance(e, dict) and all(isinstance(e.get(k), int) and e[k] >= 0 for k in keys)):
                raise SubstrateError(f"{self.dir / 'manifest.json'} is damaged (per-source record of "
                                     f"{self.split}); {rebuild}")
            out.append({"spec": str(e.get("spec")), "start": start, "end": start + e["tokens"],
                        **{k: e[k] for k in keys}})
            start += e["tokens"]
        if start != self._n:
            raise SubstrateError(f"{self.dir / 'manifest.json'} is damaged (its sources hold {start:,} "
                                 f"{self.split} tokens, the shards {self._n:,}); {rebuild}")
        return out

    @property
    def stats(self) -> dict:
        """``stats.json`` of the directory."""
        return _load_json(self.dir / "stats.json", "statistics")

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of the split as a uint16 array (copies)."""
        if start < 0 or length < 0 or start + length > self._n:
            raise IndexError(f"range [{start}, {start + length}) outside 0..{self._n}")
        out = np.empty(length, dtype=np.uint16)
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos, filled = start, 0
        while filled < length:
            off = pos - int(self.offsets[i])
            take = min(length - filled, int(self.offsets[i + 1]) - pos)
            out[filled:filled + take] = self._maps[i][off:off + take]
            filled += take
            pos += take
            i += 1
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, stride = key.indices(self._n)
            if stride != 1:
                raise ValueError("TokenShards slices must have step 1")
            return self.read(start, max(0, stop - start))
        idx = int(key)
        if idx < 0:
            idx += self._n
        return int(self.read(idx, 1)[0])

    def check_compatible(self, vocab_size: int | None = None, tokenizer=None) -> None:
        """Refuse data that a model or tokenizer cannot consume (one clear line).

        Args:
            vocab_size: the model's vocabulary; must cover every id the tokenizer can emit.
            tokenizer: the tokenizer the run uses; must be the one that prepared the data
                (same serialised Rust tokenizer, i.e. the ``fingerprint`` in ``meta.json``).

        Raises:
            SubstrateError: on a mismatch.
        """
        tok = self.meta.get("tokenizer", {})
        if vocab_size is not None and int(vocab_size) < self.vocab_size:
            raise SubstrateError(
                f"{self.dir} was tokenised with a {self.vocab_size:,}-id tokenizer but the model "
                f"has vocab_size {int(vocab_size):,}; use a matching model or re-prepare the data"
            )
        if tokenizer is not None:
            fast, name = load_tokenizer_any(tokenizer)
            ident = tokenizer_identity(fast, name)
            if ident["fingerprint"] != tok.get("fingerprint"):
                raise SubstrateError(
                    f"{self.dir} was prepared with another tokenizer ({tok.get('name')}, vocab "
                    f"{tok.get('vocab_size')}) than {name or 'the given one'}; re-prepare the data "
                    "with this tokenizer or train with that one"
                )

    # -- batches --

    def num_windows(self, seq_len: int) -> int:
        """Non-overlapping ``seq_len`` windows (with their shifted target) in the split."""
        return max(0, (self._n - 1) // int(seq_len))

    def steps_per_epoch(self, batch_size: int, seq_len: int, world_size: int = 1) -> int:
        """Sequential steps that cover the split once (the last one wraps around)."""
        per_step = int(batch_size) * int(world_size)
        return -(-self.num_windows(seq_len) // per_step)

    def _check(self, step, batch_size, seq_len, seed, mode, rank, world_size) -> None:
        if mode not in MODES:
            raise SubstrateError(f"unknown batch mode {mode!r}; use 'random' or 'sequential'")
        if batch_size < 1 or seq_len < 1:
            raise SubstrateError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        if step < 0 or seed < 0:
            raise SubstrateError(f"step and seed must be non-negative, got {step}, {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise SubstrateError(f"rank {rank} is outside world_size {world_size}")
        if self._n < seq_len + 1:
            raise SubstrateError(
                f"the {self.split} split of {self.dir} has {self._n:,} tokens, fewer than "
                f"seq_len + 1 = {seq_len + 1}; prepare more data or use a shorter seq_len"
            )

    def window_starts(self, step: int, batch_size: int, seq_len: int, seed: int = 0,
                      mode: str = "random", rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Start token of each of this rank's ``batch_size`` windows at ``step`` (int64 [B])."""
        step, batch_size, seq_len = int(step), int(batch_size), int(seq_len)
        seed, rank, world_size = int(seed), int(rank), int(world_size)
        self._check(step, batch_size, seq_len, seed, mode, rank, world_size)
        lo, hi = rank * batch_size, (rank + 1) * batch_size
        if mode == "random":
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step])))
            # draw the whole global batch so rank slices match a single-process run
            starts = rng.integers(0, self._n - seq_len, size=world_size * batch_size,
                                  dtype=np.int64)
            return starts[lo:hi]
        n_win = self.num_windows(seq_len)
        g = step * world_size * batch_size + np.arange(lo, hi, dtype=np.int64)
        return (g % n_win) * seq_len

    def get_batch(self, step: int, batch_size: int, seq_len: int, seed: int = 0,
                  mode: str = "random", rank: int = 0, world_size: int = 1, device=None):
        """Inputs and next-token targets of one batch.

        Args:
            step: the optimizer step (the index of the global batch); the batch is a pure function of
                ``(seed, step, rank, world_size)``.
            batch_size: rows for this rank.
            seq_len: tokens per row.
            seed: data seed.
            mode: ``"random"`` windows or ``"sequential"`` packing (see module docstring).
            rank, world_size: this process's slice of the global batch.
            device: optional torch device to move the tensors to.

        Returns:
            ``(x, y)``: LongTensors ``[batch_size, seq_len]``; ``y[:, :-1] == x[:, 1:]``.
        """
        import torch

        starts = self.window_starts(step, batch_size, seq_len, seed, mode, rank, world_size)
        win = self._gather(starts, int(seq_len) + 1)  # [B, T+1] uint16
        data = torch.from_numpy(win.astype(np.int64))
        x = data[:, :-1].contiguous()  # [B, T]
        y = data[:, 1:].contiguous()  # [B, T]
        if device is not None:
            dev = torch.device(device)
            if dev.type == "cuda":
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        return x, y

    def _gather(self, starts: np.ndarray, width: int) -> np.ndarray:
        shard = np.searchsorted(self.offsets, starts, side="right") - 1
        ends_inside = starts + width <= self.offsets[shard + 1]
        if len(self._maps) == 1 and ends_inside.all():
            # one fancy-index read from the single map: [B, width]
            return np.asarray(self._maps[0][starts[:, None] + np.arange(width)])
        out = np.empty((len(starts), width), dtype=np.uint16)
        for row, (s, i, inside) in enumerate(zip(starts, shard, ends_inside)):
            if inside:
                off = int(s - self.offsets[i])
                out[row] = self._maps[i][off:off + width]
            else:
                out[row] = self.read(int(s), width)
        return out

    def iter_batches(self, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                     max_batches: int | None = None) -> Iterator[tuple]:
        """Sequential batches covering the split once, without wrap-around (for validation).

        The last batch may have fewer rows; a rank whose slice is empty stops early. Yields
        ``(x, y)`` LongTensors like :meth:`get_batch`.
        """
        import torch

        n_win = self.num_windows(seq_len)
        if n_win == 0:
            self._check(0, batch_size, seq_len, 0, "sequential", rank, world_size)
        per_step = batch_size * world_size
        for step in range(-(-n_win // per_step)):
            if max_batches is not None and step >= max_batches:
                return
            lo = step * per_step + rank * batch_size
            rows = np.arange(lo, min(lo + batch_size, n_win), dtype=np.int64)
            if rows.size == 0:
                return
            win = self._gather(rows * seq_len, seq_len + 1)
            data = torch.from_numpy(win.astype(np.int64))
            yield data[:, :-1].contiguous(), data[:, 1:].contiguous()
