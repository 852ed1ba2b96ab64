"""Instruction data for fine-tuning: JSONL records -> token ids with masked labels -> batches.

One record per line (``.jsonl``, ``.jsonl.gz``, or a ``.json`` array of the same objects)::

    {"prompt": "Question: What is 2+2?\\nAnswer:", "response": " 4"}   # only the response is learned
    {"text": "A plain document, learned whole."}                       # plain language modelling

A prompt/response pair becomes ``prompt ids + response ids + eos``; the labels of the prompt ids
are ``-100`` (ignored by the loss), so the model learns the response and where it ends. The two
parts are joined exactly as written (put your separator in the prompt) and tokenised separately,
as ``generate`` will see the prompt. A ``text`` record is ``text ids + eos``, every position
learned. Text is plain text: a literal ``</s>`` or ``[INST]`` is encoded as its characters, never
as the control token (:func:`~substrate_lm.data.encoding.plain_text_mode`), as ``data prepare`` does.

The validation split is deterministic: the records are grouped by a keyed blake2b hash of their
content (``seed`` is the key; copies of one record form a group) and the groups, in hash order, are
taken into validation when they fit in ``max(1, round(val_fraction * n))`` (a group that does not
fit is skipped). Only when no group fits are copies of one record split. It depends on the content
and the seed only, is never empty, never exceeds its share and never takes every record.

Batches (:meth:`InstructionSplit.get_batch`): one example per row, cut to ``seq_len + 1`` tokens,
right-padded (inputs with the pad id, targets with ``-100``) to the longest row of the batch, not to
``seq_len`` (``pad_to="seq_len"`` restores the fixed width): a causal model never attends to the
padding from a real position, so the loss is the same and short examples cost only their own
length (36-token examples in rows of 128 were 72% padding). Rows are not packed: padding to the
longest row is exact with every model (no attention mask or position ids to pass through the
trainer). Like :class:`~substrate_lm.data.TokenShards`, a batch is a pure function of ``(seed, index, rank, world_size)``: ``random`` walks a seeded permutation of the
examples per epoch, ``sequential`` walks them in order, both wrapping around, except in a split
made with ``wrap=False`` (the validation split of :func:`load_instructions`): there rows past the
last example are empty (padding, targets all ``-100``), so an evaluation that walks it once counts
every example exactly once, also when ranks split the batches.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import SubstrateError
from .encoding import batch_encoder, tokenizer_identity

IGNORE_INDEX = -100
"""Label of a position the loss skips (PyTorch's and transformers' convention)."""

MODES = ("random", "sequential")
PAD_TO = ("longest", "seq_len")


@dataclass
class Example:
    """One tokenised record: input ids and labels of the same length (``-100`` where not learned)."""

    ids: np.ndarray
    labels: np.ndarray
    line: int
    """Line (or array position) of the record in its file, from 1."""
    key: bytes = b""
    """Content hash that decides the split."""


# -- reading --------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a (gzipped) UTF-8 file, one line at a time."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise SubstrateError(f"{path}:{lineno}: not valid UTF-8 ({exc.reason}); convert the file "
                                         "to UTF-8, e.g. iconv -f LATIN1 -t UTF-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise SubstrateError(f"{path}: not a readable gzip file ({exc}); check the file") from None


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line, record)`` for every record of an instruction file; blank lines are skipped.

    Raises:
        SubstrateError: a missing file, invalid JSON (with its line number), a line that is not a
            JSON object, or a file with no records.
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise SubstrateError(f"instruction file {p} does not exist; check the path")
    if p.is_dir():
        raise SubstrateError(f"{p} is a folder without prepared data (no meta.json); pass a JSONL file "
                             "or a folder written by `substrate-lm data prepare`")
    lines = _lines(p)
    first = next(((n, t) for n, t in lines if t.strip()), None)
    if first is None:
        raise SubstrateError(f"{p} holds no records; write one JSON object per line, e.g. "
                             '{"prompt": "...", "response": "..."}')
    if first[1].lstrip().startswith("["):  # a JSON array file: small by nature, read whole
        text = first[1] + "".join(t for _, t in lines)
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SubstrateError(f"{p}:{first[0] + exc.lineno - 1}: invalid JSON ({exc.msg})") from None
        items = enumerate(records, 1)
    else:
        items = _parsed(p, first, lines)
    n = 0
    for lineno, rec in items:
        if not isinstance(rec, dict):
            raise SubstrateError(f"{p}:{lineno}: expected a JSON object such as "
                                 f'{{"prompt": ..., "response": ...}}, got {type(rec).__name__}')
        n += 1
        yield lineno, rec
    if n == 0:
        raise SubstrateError(f"{p} holds no records (an empty JSON array); add some")


def _parsed(path: Path, first: tuple[int, str], rest: Iterator[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    for lineno, text in itertools.chain([first], rest):
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            raise SubstrateError(f"{path}:{lineno}: invalid JSON ({exc.msg}, column {exc.colno}); write one "
                                 "JSON object per line (plain text: `substrate-lm data prepare` it)") from None


def record_parts(rec: dict, where: str) -> tuple[str, str | None]:
    """``(prompt, response)`` of a prompt/response record, ``(text, None)`` of a text record.

    Raises:
        SubstrateError: neither form, or a field that is not a string or holds a lone surrogate.
    """
    if "prompt" in rec or "response" in rec:
        missing = [k for k in ("prompt", "response") if k not in rec]
        if missing:
            raise SubstrateError(f"{where}: the record has no {missing[0]!r} field (fields: "
                                 f"{', '.join(sorted(map(str, rec))) or 'none'}); give both prompt and response")
        keys = ("prompt", "response")
    elif "text" in rec:
        keys = ("text",)
    else:
        hint = ("; chat 'messages' records are not read: write them as prompt/response pairs"
                if "messages" in rec else "")
        raise SubstrateError(f"{where}: expected a 'prompt' and 'response' (or a 'text') field; fields: "
                             f"{', '.join(sorted(map(str, rec))) or 'none'}{hint}")
    values = []
    for k in keys:
        v = rec[k]
        if not isinstance(v, str):
            raise SubstrateError(f"{where}: field {k!r} holds {type(v).__name__}, not text")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\ud800"
            raise SubstrateError(f"{where}: field {k!r} holds an unpaired surrogate {v[exc.start]!r} at character "
                                 f"{exc.start}, which is not Unicode text; fix or remove the record") from None
        values.append(v)
    return (values[0], values[1]) if len(values) == 2 else (values[0], None)


# -- encoding -------------------------------------------------------------------------------------


def _split_key(parts: tuple[str, str | None], seed: int) -> bytes:
    prompt, response = parts
    text = prompt if response is None else prompt + "\x00" + response
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                           key=int(seed).to_bytes(8, "little")).digest()


def encode_records(path: str | os.PathLike, tokenizer: Any, *, seed: int = 0) -> list[Example]:
    """Read and tokenise an instruction file (see the module docstring for the formats).

    Raises:
        SubstrateError: see :func:`read_records` and :func:`record_parts`; a tokenizer without eos.
    """
    eos = tokenizer_identity(tokenizer)["eos_id"]
    encode, _ = batch_encoder(tokenizer)
    where = Path(os.fspath(path))
    lines, parts = [], []
    for lineno, rec in read_records(path):
        lines.append(lineno)
        parts.append(record_parts(rec, f"{where}:{lineno}"))
    prompts = encode([p for p, _ in parts])
    responses = encode([r for _, r in parts if r is not None])
    out, k = [], 0
    for lineno, (prompt, response), p_ids in zip(lines, parts, prompts):
        if response is None:
            ids = p_ids + [eos]
            labels = list(ids)
        else:
            r_ids = responses[k] + [eos]
            k += 1
            ids = p_ids + r_ids
            labels = [IGNORE_INDEX] * len(p_ids) + r_ids
        out.append(Example(np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64),
                           lineno, _split_key((prompt, response), seed)))
    return out


# -- splits and batches ---------------------------------------------------------------------------


class InstructionSplit:
    """A list of tokenised examples served as padded batches (see the module docstring).

    Args:
        examples: the split's examples.
        pad_id: input id of padding positions (their targets are always ``-100``).
        wrap: batches past the last example start over (training); False: those rows are empty,
            so one pass counts every example once (evaluation).
        pad_to: ``"longest"`` (default): a batch is as wide as its longest row (at most
            ``seq_len``); ``"seq_len"``: always ``seq_len`` wide (the earlier fixed width).
    """

    def __init__(self, examples: list[Example], pad_id: int, *, wrap: bool = True, pad_to: str = "longest"):
        if not examples:
            raise SubstrateError("an instruction split needs at least one example")
        if pad_to not in PAD_TO:
            raise SubstrateError(f"pad_to must be one of {', '.join(PAD_TO)}; got {pad_to!r}")
        self.examples = list(examples)
        self.pad_id = int(pad_id)
        self.wrap = bool(wrap)
        self.pad_to = pad_to
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def _order(self, seed: int, epoch: int) -> np.ndarray:
        key = (int(seed), int(epoch))
        if key not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
            self._perms[key] = rng.permutation(len(self.examples))
        return self._perms[key]

    def rows(self, index: int, batch_size: int, seed: int = 0, mode: str = "random", rank: int = 0,
             world_size: int = 1) -> list[int]:
        """Example indices of this rank's rows of global batch ``index`` (-1: an empty row, past the
        end of a split that does not wrap)."""
        if mode not in MODES:
            raise SubstrateError(f"batch mode must be one of {', '.join(MODES)}; got {mode!r}")
        n = len(self.examples)
        start = (int(index) * world_size + rank) * batch_size
        out = []
        for g in range(start, start + batch_size):
            if not self.wrap and g >= n:
                out.append(-1)
            elif mode == "sequential":
                out.append(g % n)
            else:
                out.append(int(self._order(seed, g // n)[g % n]))
        return out

    def get_batch(self, index: int, batch_size: int, seq_len: int, seed: int = 0, mode: str = "random",
                  rank: int = 0, world_size: int = 1, device=None):
        """Inputs and aligned targets ``(x, y)``: LongTensors ``[batch_size, width]``, ``width`` the
        longest row's length (at least 1, at most ``seq_len``; always ``seq_len`` with
        ``pad_to="seq_len"``).

        ``y[t]`` is the label of position ``t + 1`` (``-100`` on prompts and padding).
        """
        import torch

        rows = [(row, self.examples[i]) for row, i in
                enumerate(self.rows(index, batch_size, seed, mode, rank, world_size)) if i >= 0]
        lengths = [min(len(ex.ids), seq_len + 1) - 1 for _, ex in rows]  # empty rows: padding only
        width = seq_len if self.pad_to == "seq_len" else max([1, *lengths])
        x = torch.full((batch_size, width), self.pad_id, dtype=torch.long)
        y = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        for (row, ex), n in zip(rows, lengths):
            if n > 0:
                x[row, :n] = torch.from_numpy(ex.ids[:n])
                y[row, :n] = torch.from_numpy(ex.labels[1: n + 1])
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x, y


@dataclass
class InstructionData:
    """Train and validation splits of an instruction file, and what loading found."""

    train: InstructionSplit
    val: InstructionSplit
    stats: dict = field(default_factory=dict)
    """``examples``, ``train``, ``val``, ``truncated`` (cut to ``seq_len + 1``), ``dropped`` (nothing
    learned left after the cut), ``learned_tokens`` (scored targets of the kept examples after the
    cut: what one pass over them trains on) and ``tokens`` (their ids, uncut)."""


def _split(examples: list[Example], val_fraction: float) -> tuple[list[int], list[int]]:
    """``(val, train)`` indices: whole groups of identical records, in hash order, taken when they fit
    in the validation share (a group that does not is skipped); if none fits, copies of the first
    group are split. Validation is never empty, never over its share and never everything."""
    want = min(len(examples) - 1, max(1, round(val_fraction * len(examples))))
    groups: dict[bytes, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.key, []).append(i)
    order = sorted(groups)
    val: list[int] = []
    for key in order:
        if len(val) + len(groups[key]) <= want:
            val += groups[key]
            if len(val) == want:
                break
    if not val:  # every group is larger than the share: split the copies of the first
        val = groups[order[0]][:want]
    chosen = set(val)
    return sorted(val), [i for i in range(len(examples)) if i not in chosen]


def load_instructions(path: str | os.PathLike, tokenizer: Any, *, seq_len: int, val_fraction: float = 0.05,
                      seed: int = 0, warn=None) -> InstructionData:
    """Tokenise an instruction file and split it into train and validation.

    Args:
        path: JSONL (or ``.jsonl.gz``, or a JSON array) of prompt/response or text records.
        tokenizer: a fast tokenizer with an eos token (the model's).
        seq_len: tokens per row; longer examples are cut, and those left with no learned label
            after the cut are dropped (both counted in ``stats`` and reported through ``warn``).
        val_fraction: share of examples held out (at least one, never all); the validation split
            does not wrap (see :class:`InstructionSplit`).
        seed: key of the split hash.
        warn: receives one line about cut or dropped examples.

    Raises:
        SubstrateError: bad records (see :func:`encode_records`), fewer than 2 usable examples.
    """
    if not 0 < val_fraction < 1:
        raise SubstrateError(f"val_fraction must be in (0, 1), got {val_fraction}")
    examples = encode_records(path, tokenizer, seed=seed)
    n_all = len(examples)
    truncated = sum(len(e.ids) > seq_len + 1 for e in examples)
    usable = [e for e in examples if (e.labels[1: seq_len + 1] != IGNORE_INDEX).any()]
    dropped = n_all - len(usable)
    if len(usable) < 2:
        why = f" ({dropped} have no response token within seq_len {seq_len})" if dropped else ""
        raise SubstrateError(f"{path} has {len(usable)} usable example(s){why}; fine-tuning needs at least 2 "
                             "(one to train on, one to validate)")
    if warn is not None and (truncated or dropped):
        warn(f"warning: {truncated} of {n_all} examples are longer than seq_len + 1 = {seq_len + 1} tokens "
             f"and were cut; {dropped} left with no response token were dropped (raise --seq-len to keep them)")
    val_idx, train_idx = _split(usable, val_fraction)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = tokenizer_identity(tokenizer)["eos_id"]
    stats = {
        "examples": n_all, "train": len(train_idx), "val": len(val_idx), "truncated": truncated,
        "dropped": dropped, "tokens": int(sum(len(e.ids) for e in usable)),
        "learned_tokens": int(sum(int((e.labels[1: seq_len + 1] != IGNORE_INDEX).sum()) for e in usable)),
    }
    return InstructionData(train=InstructionSplit([usable[i] for i in train_idx], pad),
                           val=InstructionSplit([usable[i] for i in val_idx], pad, wrap=False), stats=stats)


__all__ = ["IGNORE_INDEX", "PAD_TO", "Example", "InstructionData", "InstructionSplit", "encode_records",
           "load_instructions", "read_records", "record_parts"]
