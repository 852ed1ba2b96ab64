"""Perplexity and bits per character on held-out text or a prepared data folder (sliding window).

The text is tokenized once (no special tokens; the BOS token, when the tokenizer has one, is put in
front so the first text token is scored too). Windows of ``window`` tokens start every ``stride``
tokens; each window scores only the tokens the previous window did not, so every token is scored
exactly once, with at least ``window - stride`` tokens of context where the text allows (the
Hugging Face perplexity recipe; ``stride < window``). Bits per character, ``total nll / ln 2 / characters``, compares
models whose tokenizers differ (perplexity per token does not). :func:`perplexity_shards` scores a
``data prepare`` folder's validation split with the same windows, overall and per data source.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import TokenShards
from ..errors import SubstrateError
from .models import accepts, encode_text, max_context, model_device, model_vocab_size


def _settings(model, window, stride, batch_size) -> tuple[int, int]:
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
    stride = int(stride or max(1, window // 2))
    if not 1 <= stride < window:
        # a window must keep at least one token of context for the tokens it scores
        raise SubstrateError(f"--stride must be at least 1 and below the window ({window}); got {stride}")
    return window, stride


def _spans(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(begin, end, n_new)`` over ``n`` tokens: ``[begin, end)`` fed, last ``n_new`` scored."""
    spans = []
    prev_end = 1  # token 0 has no context: it is never a target
    for begin in range(0, n - 1, stride):
        end = min(begin + window, n)
        if end - prev_end > 0:
            spans.append((begin, end, end - prev_end))
        prev_end = end
        if end == n:
            break
    return spans


def _progress_bar(total: int, progress: bool | None):
    return tqdm(total=total, unit="tok", desc="perplexity", disable=None if progress is None else not progress,
                dynamic_ncols=True, smoothing=0.1)


@torch.no_grad()
def _score_ids(model, ids, window: int, stride: int, batch_size: int, bar=None) -> tuple[float, int]:
    """Total nll (nats) and count of tokens ``ids[1:]`` (a list or array), each scored once by the
    sliding windows."""
    ids = np.asarray(ids, dtype=np.int64)
    spans = _spans(len(ids), window, stride)
    dev = model_device(model)
    take_mask = accepts(model, "attention_mask")
    nll_total, scored = 0.0, 0
    # batch windows of equal length (all but possibly the last)
    i = 0
    while i < len(spans):
        length = spans[i][1] - spans[i][0]
        j = i
        while j < len(spans) and j - i < batch_size and spans[j][1] - spans[j][0] == length:
            j += 1
        batch = spans[i:j]
        x = torch.from_numpy(np.stack([ids[b:e] for b, e, _ in batch])).to(dev)  # (B, L)
        kwargs = {"attention_mask": torch.ones_like(x)} if take_mask else {}
        logits = model(x, **kwargs).logits  # (B, L, V)
        for r, (b, e, n_new) in enumerate(batch):
            logp = torch.log_softmax(logits[r, length - 1 - n_new: length - 1].float(), dim=-1)  # (n_new, V)
            tgt = x[r, length - n_new:]
            nll_total -= float(logp.gather(-1, tgt[:, None]).sum())
            scored += n_new
        if bar is not None:
            bar.update(sum(n for _, _, n in batch))
        i = j
    return nll_total, scored


def _figures(nll: float, scored: int, chars: int | None) -> dict:
    """Perplexity, bits per token and (when the characters are known) bits per character."""
    return {
        "nll": nll, "tokens_scored": scored, "characters": chars,
        "perplexity": math.exp(nll / scored) if scored else None,
        "bits_per_token": nll / math.log(2) / scored if scored else None,
        "bpc": nll / math.log(2) / chars if chars else None,
    }


def perplexity(
    model,
    tokenizer,
    text: str,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    add_bos: bool = True,
    progress: bool | None = False,
) -> dict:
    """Perplexity, bits per token and bits per character of ``text``.

    Args:
        window: tokens per forward pass (default: the model's context length, at most 1024).
        stride: new tokens scored per window, below ``window`` (default: ``window // 2``).
        batch_size: windows per forward pass.
        add_bos: prepend the tokenizer's BOS token (if any) so the first token is scored.
        progress: show a progress bar with ETA on stderr (tqdm): True always, None when stderr is a
            terminal, False never.

    Returns:
        ``{"nll", "tokens", "tokens_scored", "characters", "perplexity", "bits_per_token", "bpc",
        "window", "stride", "bos"}``; ``nll`` is the total in nats.
    """
    if not text:
        raise SubstrateError("perplexity needs a non-empty text")
    window, stride = _settings(model, window, stride, batch_size)
    # text stays text (a literal "</s>" is not EOS); no too-long warning: the windows below handle it
    ids = encode_text(tokenizer, text, add_special_tokens=False)
    bos = tokenizer.bos_token_id if add_bos else None
    if bos is not None:
        ids = [int(bos)] + ids
    if len(ids) < 2:
        raise SubstrateError("the text is a single token; perplexity needs at least two")
    bar = _progress_bar(len(ids) - 1, progress)
    nll, scored = _score_ids(model, ids, window, stride, int(batch_size), bar)
    bar.close()
    out = _figures(nll, scored, len(text))
    out.update(tokens=len(ids) - (1 if bos is not None else 0), window=window, stride=stride, bos=bos is not None)
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
) -> dict:
    """Perplexity and bits per character of a prepared data folder's split, overall and per source.

    Each source of ``data prepare`` is a contiguous range of the split's token stream (see
    :meth:`~substrate_lm.data.TokenShards.source_ranges`); each range is scored on its own with
    the sliding windows of :func:`perplexity`, with the eos id in front (the document boundary it
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
        window, stride, batch_size, progress: as for :func:`perplexity`.

    Returns:
        ``{"data", "split", "window", "stride", "nll", "tokens_scored", "characters",
        "perplexity", "bits_per_token", "bpc", "sources": [{"spec", "documents", ...same figures}]
        or None}``.
    """
    window, stride = _settings(model, window, stride, batch_size)
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
    bar = _progress_bar(len(shards), progress)
    rows = []
    try:
        for r in ranges:
            if r["end"] > r["start"]:
                ids = np.concatenate([eos, shards.read(r["start"], r["end"] - r["start"])])
                nll, scored = _score_ids(model, ids, window, stride, int(batch_size), bar)
            else:
                nll, scored = 0.0, 0
            rows.append({"spec": r["spec"], "documents": r["documents"], **_figures(nll, scored, r["characters"])})
    finally:
        bar.close()
    chars = [r["characters"] for r in rows]
    out = {"data": str(shards.dir), "split": split, "window": window, "stride": stride,
           **_figures(sum(r["nll"] for r in rows), sum(r["tokens_scored"] for r in rows),
                      None if None in chars else sum(chars)),
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
