"""Perplexity and bits per character on held-out text or a prepared data folder (rolling windows).

The text is tokenized once (no special tokens; the BOS token, when the tokenizer has one, is put in
front so the first text token is scored too). It is scored in windows of ``window`` input tokens,
each predicting the ``window`` tokens that follow its positions (lm-evaluation-harness's
``loglikelihood_rolling``, :func:`lm_eval.utils.get_rolling_token_windows`):

* the first window scores every token it predicts;
* every later window scores the next ``stride`` tokens not yet scored (the last one ends at the
  text's end, so all windows but a text shorter than one window have the same length), and feeds
  the ``window - stride`` tokens before them as extra context.

So every token is scored exactly once. The default ``stride = window`` is lm-eval's rolling
log-likelihood (``context_len=1``): the windows' predictions are disjoint, each token is fed to the
model once (one forward position per scored token), and the first token a later window scores sees
one token of context (the last of the previous window) instead of a full window. A smaller
``stride`` buys context with compute: every scored token then has at least ``window - stride + 1``
tokens of context, at ``window / stride`` forward positions per token (the Hugging Face
perplexity recipe with its default ``stride = window / 2`` scores each token's forward twice).

Windows are batched (``batch_size`` per forward pass) under :func:`torch.inference_mode`, through
:func:`~substrate_lm.components.loss.causal_lm_loss` (our models' and composed models' chunked
loss, which without gradients computes the head in cache-sized tiles with an online log-sum-exp and
never forms the B x T x V logits; other models' logits), optionally under bf16 autocast. Progress
(tokens done / total, tok/s, ETA) goes to stderr: a tqdm bar on a terminal, a line every
:data:`PROGRESS_EVERY` seconds otherwise.

Bits per character, ``total nll / ln 2 / characters``, compares models whose tokenizers differ
(perplexity per token does not). :func:`perplexity_shards` scores a ``data prepare`` folder's
validation split with the same windows, overall and per data source.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..components.loss import causal_lm_loss
from ..data import TokenShards
from ..errors import SubstrateError
from ..training.metrics import format_count, format_duration
from .models import encode_text, max_context, model_device, model_vocab_size

#: seconds between two progress lines when stderr is not a terminal
PROGRESS_EVERY = 10.0
PRECISIONS = ("fp32", "bf16")


def ppl_settings(model, window=None, stride=None, batch_size=8) -> tuple[int, int]:
    """Checked ``(window, stride)`` with their defaults (see :func:`perplexity`)."""
    if window is not None and int(window) < 2:
        raise SubstrateError(f"--window must be at least 2 tokens (one of context, one scored); got {window}")
    if stride is not None and int(stride) < 1:
        raise SubstrateError(f"--stride must be at least 1; got {stride}")
    if int(batch_size) < 1:
        raise SubstrateError(f"--batch-size must be at least 1; got {batch_size}")
    context = max_context(model)
    if window is not None and context and int(window) > context:
        raise SubstrateError(f"--window {window} exceeds the model's context length ({context}); pass --window {context} or less")
    window = min(int(window or min(context, 1024)), context)
    stride = int(stride or window)
    if not 1 <= stride <= window:
        raise SubstrateError(f"--stride must be between 1 and the window ({window}); got {stride}")
    return window, stride


def describe_stride(window: int, stride: int, given: bool) -> str:
    """One sentence: which stride scores the windows, and why (printed by ``eval ppl``)."""
    if stride == window:
        why = ("--stride given" if given else "the default") + (
            ": disjoint windows, each token scored once at one forward position per token, as lm-eval's "
            f"rolling log-likelihood; a token sees the tokens before it in its window, 1 to {window} of "
            f"context; --stride N < {window} gives at least {window} - N + 1 at {window}/N the cost")
        return f"window {window}, stride {stride} ({why})"
    return (f"window {window}, stride {stride} (--stride given: every token scored once with at least "
            f"{window - stride + 1} tokens of context, at {window / stride:.2f} forward positions per token; "
            f"the default stride {window} costs 1)")


def _windows(n: int, window: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(starts, scored, length)`` of the windows over ``n`` ids: window ``i`` feeds
    ``ids[starts[i] : starts[i] + length]``, predicts the ids one position later and scores the last
    ``scored[i]`` of them. Every id but the first is scored once (lm-eval's rolling windows)."""
    length = min(window, n - 1)
    starts, scored = [0], [length]
    done = length + 1  # ids[:done] are scored (or the first, which nothing predicts)
    while done < n:
        end = min(done + stride, n)
        starts.append(end - 1 - length)
        scored.append(end - done)
        done = end
    return np.asarray(starts, dtype=np.int64), np.asarray(scored, dtype=np.int64), length


class _Progress:
    """Tokens scored of ``total``, with tok/s and ETA: a tqdm bar on a terminal (or when asked),
    a line every :data:`PROGRESS_EVERY` seconds when stderr is not a terminal (``progress=None``)."""

    def __init__(self, total: int, progress: bool | None, desc: str = "perplexity"):
        self.total, self.done, self.desc = int(total), 0, desc
        tty = sys.stderr.isatty()
        self.bar = None
        self.lines = progress is None and not tty
        if progress is True or (progress is None and tty):
            self.bar = tqdm(total=self.total, unit="tok", desc=desc, dynamic_ncols=True, smoothing=0.1,
                            file=sys.stderr)
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += int(n)
        if self.bar is not None:
            self.bar.update(int(n))
        elif self.lines:
            now = time.perf_counter()
            if now - self.last >= PROGRESS_EVERY and self.done < self.total:
                self.last = now
                rate = self.done / max(now - self.t0, 1e-9)
                eta = (self.total - self.done) / rate if rate > 0 else float("inf")
                self._line(f"{self.desc}: {format_count(self.done)}/{format_count(self.total)} tokens "
                           f"({100 * self.done / max(self.total, 1):.0f}%) | {format_count(rate)} tok/s | "
                           f"ETA {format_duration(eta)}")

    def _line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines and self.done:
            dt = time.perf_counter() - self.t0
            self._line(f"{self.desc}: {format_count(self.done)} tokens in {format_duration(dt)} "
                       f"({format_count(self.done / max(dt, 1e-9))} tok/s)")
            self.lines = False


def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise SubstrateError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.inference_mode()
def _score_ids(model, ids, window: int, stride: int, batch_size: int, bar=None,
               precision: str = "fp32") -> tuple[float, int]:
    """Total nll (nats) and count of tokens ``ids[1:]`` (a list or array), each scored once by the
    rolling windows (see the module docstring), ``batch_size`` windows per forward pass."""
    ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    n = len(ids)
    if n < 2:
        return 0.0, 0
    starts, scored, length = _windows(n, window, stride)
    dev = model_device(model)
    was_training = model.training
    model.eval()
    offsets = torch.arange(length)  # (L,)
    total = torch.zeros((), dtype=torch.float64 if dev.type in ("cpu", "cuda") else torch.float32, device=dev)
    try:
        for i in range(0, len(starts), batch_size):
            s = torch.from_numpy(starts[i: i + batch_size])
            k = torch.from_numpy(scored[i: i + batch_size])
            pos = s[:, None] + offsets  # (B, L)
            x, y = ids[pos], ids[pos + 1]
            y = torch.where(offsets >= length - k[:, None], y, -100)  # only the last k targets of a row
            count = int(k.sum())
            with _autocast(dev, precision):
                loss = causal_lm_loss(model, x.to(dev), y.to(dev), chunked=True)
            total += loss.detach().to(total.dtype) * count  # a mean over the scored targets
            if bar is not None:
                bar.update(count)
    finally:
        model.train(was_training)
    return float(total), int(scored.sum())


def _figures(nll: float, scored: int, chars: int | None) -> dict:
    """Perplexity, bits per token and (when the characters are known) bits per character."""
    return {
        "nll": nll, "tokens_scored": scored, "characters": chars,
        "perplexity": math.exp(nll / scored) if scored else None,
        "bits_per_token": nll / math.log(2) / scored if scored else None,
        "bpc": nll / math.log(2) / chars if chars else None,
    }


def forward_positions(n: int, window: int, stride: int) -> int:
    """Positions the model computes to score ``n`` ids (``n - 1`` targets) with these windows."""
    if n < 2:
        return 0
    starts, _, length = _windows(n, window, stride)
    return len(starts) * length


def perplexity(
    model,
    tokenizer,
    text: str,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    add_bos: bool = True,
    progress: bool | None = False,
    precision: str = "fp32",
    log=None,
) -> dict:
    """Perplexity, bits per token and bits per character of ``text``.

    Args:
        window: input tokens per window (default: the model's context length, at most 1024).
        stride: new tokens scored per window after the first, 1 to ``window`` (default ``window``:
            disjoint windows, each token fed and scored once; smaller adds context, see the module
            docstring).
        batch_size: windows per forward pass.
        add_bos: prepend the tokenizer's BOS token (if any) so the first token is scored.
        progress: tokens / total, tok/s and ETA on stderr: True always (tqdm), None as a tqdm bar on
            a terminal and a line every :data:`PROGRESS_EVERY` seconds otherwise, False never.
        precision: ``fp32`` or ``bf16`` (autocast; the loss itself is accumulated in fp32/fp64).
        log: receives one line saying which window and stride score the text, and why
            (:func:`describe_stride`), once the input is checked.

    Returns:
        ``{"nll", "tokens", "tokens_scored", "characters", "perplexity", "bits_per_token", "bpc",
        "window", "stride", "bos", "forward_positions", "seconds"}``; ``nll`` is the total in nats.
    """
    if not text:
        raise SubstrateError("perplexity needs a non-empty text")
    stride_given = stride is not None
    window, stride = ppl_settings(model, window, stride, batch_size)
    # text stays text (a literal "</s>" is not EOS); no too-long warning: the windows below handle it
    ids = encode_text(tokenizer, text, add_special_tokens=False)
    bos = tokenizer.bos_token_id if add_bos else None
    if bos is not None:
        ids = [int(bos)] + ids
    if len(ids) < 2:
        raise SubstrateError("the text is a single token; perplexity needs at least two")
    if log is not None:
        log(f"{describe_stride(window, stride, given=stride_given)}; batch {batch_size}")
    bar = _Progress(len(ids) - 1, progress)
    t0 = time.perf_counter()
    try:
        nll, scored = _score_ids(model, ids, window, stride, int(batch_size), bar, precision)
    finally:
        bar.close()
    out = _figures(nll, scored, len(text))
    out.update(tokens=len(ids) - (1 if bos is not None else 0), window=window, stride=stride, bos=bos is not None,
               forward_positions=forward_positions(len(ids), window, stride),
               seconds=round(time.perf_counter() - t0, 3))
    return out


def perplexity_shards(
    model,
    data_dir: str | os.PathLike,
    tokenizer=None,
    split: str = "val",
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool | None = False,
    per_source: bool | None = None,
    precision: str = "fp32",
    log=None,
) -> dict:
    """Perplexity and bits per character of a prepared data folder's split, overall and per source.

    Each source of ``data prepare`` is a contiguous range of the split's token stream (see
    :meth:`~substrate_lm.data.TokenShards.source_ranges`); each range is scored on its own with
    the rolling windows of :func:`perplexity`, with the eos id in front (the document boundary it
    follows in the stream), so every token of it, eos included, is scored exactly once and a
    source's figures equal those of its tokens scored alone. The overall figures sum the sources'
    nll, tokens and characters (perplexity is the token-weighted mean of the sources' nll).
    Bits per character count the text's characters (``manifest.json``), the eos predictions'
    bits included.

    Args:
        data_dir: a folder written by ``substrate-lm data prepare``.
        tokenizer: the model's tokenizer; when given it must be the one that prepared the data.
        split: ``"val"`` (default) or ``"train"``.
        per_source: report per source (True: refuse a folder without the record; None: when
            recorded; False: the whole split as one stream, characters from ``stats.json``).
        window, stride, batch_size, progress, precision, log: as for :func:`perplexity`.

    Returns:
        ``{"data", "split", "window", "stride", "nll", "tokens_scored", "characters",
        "perplexity", "bits_per_token", "bpc", "forward_positions", "seconds",
        "sources": [{"spec", "documents", ...same figures}] or None}``.
    """
    stride_given = stride is not None
    window, stride = ppl_settings(model, window, stride, batch_size)
    shards = TokenShards(data_dir, split)
    shards.check_compatible(vocab_size=model_vocab_size(model), tokenizer=tokenizer)
    if len(shards) == 0:
        raise SubstrateError(f"the {split} split of {shards.dir} is empty; prepare it with a --val-fraction above 0")
    ranges = None
    if per_source is not False:
        try:
            ranges = shards.source_ranges()
        except SubstrateError:
            if per_source:
                raise
    if ranges is None:
        chars = int((shards.stats.get("splits", {}).get(split) or {}).get("characters") or 0) or None
        ranges = [{"spec": None, "start": 0, "end": len(shards), "characters": chars, "documents": None}]
    eos = np.array([shards.eos_id], dtype=np.uint16)
    if log is not None:
        log(f"{describe_stride(window, stride, given=stride_given)}; batch {batch_size}")
    bar = _Progress(sum(max(0, r["end"] - r["start"]) for r in ranges), progress)
    rows, positions, t0 = [], 0, time.perf_counter()
    try:
        for r in ranges:
            if r["end"] > r["start"]:
                ids = np.concatenate([eos, shards.read(r["start"], r["end"] - r["start"])])
                nll, scored = _score_ids(model, ids, window, stride, int(batch_size), bar, precision)
                positions += forward_positions(len(ids), window, stride)
            else:
                nll, scored = 0.0, 0
            rows.append({"spec": r["spec"], "documents": r["documents"], **_figures(nll, scored, r["characters"])})
    finally:
        bar.close()
    chars = [r["characters"] for r in rows]
    out = {"data": str(shards.dir), "split": split, "window": window, "stride": stride,
           **_figures(sum(r["nll"] for r in rows), sum(r["tokens_scored"] for r in rows),
                      None if None in chars else sum(chars)),
           "forward_positions": positions, "seconds": round(time.perf_counter() - t0, 3),
           "sources": rows if rows[0]["spec"] is not None else None}
    return out


def read_text(path: str | os.PathLike, max_chars: int | None = None) -> str:
    """Held-out text from a plain file, or the ``text`` fields of a JSONL file (joined by newlines)."""
    p = Path(path)
    if max_chars is not None and int(max_chars) < 1:
        raise SubstrateError(f"--max-chars must be at least 1; got {max_chars}")
    if p.is_dir():
        raise SubstrateError(f"--text {p} is a folder; pass a text file (plain text or JSONL with a 'text' field)")
    if not p.is_file():
        raise SubstrateError(f"text file {p} not found; pass --text FILE (plain text or JSONL with a 'text' field)")
    try:
        text = _read_text(p, max_chars)
    except UnicodeDecodeError as exc:
        raise SubstrateError(f"{p} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8") from None
    except OSError as exc:
        raise SubstrateError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not text.strip():
        raise SubstrateError(f"{p} holds no text; pass a file with some held-out text")
    return text


def _read_text(p: Path, max_chars: int | None) -> str:
    if p.suffix == ".jsonl":
        parts, total = [], 0
        with p.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    t = json.loads(line).get("text", "")
                except (json.JSONDecodeError, AttributeError):
                    raise SubstrateError(f"{p}:{n}: not a JSON object with a 'text' field") from None
                if not isinstance(t, str):
                    raise SubstrateError(f"{p}:{n}: the 'text' field is not a string")
                parts.append(t)
                total += len(t) + 1
                if max_chars is not None and total >= max_chars:
                    break
        text = "\n".join(parts)
    else:
        text = p.read_text(encoding="utf-8")
    return text[:max_chars] if max_chars is not None else text
