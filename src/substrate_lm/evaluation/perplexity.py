"""Perplexity and bits per character on held-out text (sliding window with stride).

The text is tokenized once (no special tokens; the BOS token, when the tokenizer has one, is put in
front so the first text token is scored too). Windows of ``window`` tokens start every ``stride``
tokens; each window scores only the tokens the previous window did not, so every token is scored
exactly once, with at least ``window - stride`` tokens of context where the text allows (the
Hugging Face perplexity recipe; ``stride < window``). Bits per character, ``total nll / ln 2 / characters``, compares
models whose tokenizers differ (perplexity per token does not).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ..errors import SubstrateError
from .models import accepts, encode_text, max_context, model_device


@torch.no_grad()
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
    if window is not None and int(window) < 2:
        raise SubstrateError(f"--window must be at least 2 tokens (one of context, one scored); got {window}")
    if stride is not None and int(stride) < 1:
        raise SubstrateError(f"--stride must be at least 1; got {stride}")
    if int(batch_size) < 1:
        raise SubstrateError(f"--batch-size must be at least 1; got {batch_size}")
    context = max_context(model)
    if window is not None and context and int(window) > context:
        raise SubstrateError(f"--window {window} exceeds the model's context length ({context}); pass --window {context} or less")
    # text stays text (a literal "</s>" is not EOS); no too-long warning: the windows below handle it
    ids = encode_text(tokenizer, text, add_special_tokens=False)
    bos = tokenizer.bos_token_id if add_bos else None
    if bos is not None:
        ids = [int(bos)] + ids
    if len(ids) < 2:
        raise SubstrateError("the text is a single token; perplexity needs at least two")
    window = int(window or min(context, 1024))
    window = min(window, context)
    stride = int(stride or max(1, window // 2))
    if not 1 <= stride < window:
        # a window must keep at least one token of context for the tokens it scores
        raise SubstrateError(f"--stride must be at least 1 and below the window ({window}); got {stride}")

    # windows: (begin, end, n_new) with tokens [begin, end) fed and the last n_new targets scored
    spans = []
    prev_end = 1  # token 0 has no context: it is never a target
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        n_new = end - prev_end
        if n_new > 0:
            spans.append((begin, end, n_new))
        prev_end = end
        if end == len(ids):
            break

    dev = model_device(model)
    take_mask = accepts(model, "attention_mask")
    nll_total, scored = 0.0, 0
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(n for _, _, n in spans), unit="tok", desc="perplexity", disable=None if progress is None
               else not progress, dynamic_ncols=True, smoothing=0.1)
    # batch windows of equal length (all but possibly the last)
    i = 0
    while i < len(spans):
        length = spans[i][1] - spans[i][0]
        j = i
        while j < len(spans) and j - i < batch_size and spans[j][1] - spans[j][0] == length:
            j += 1
        batch = spans[i:j]
        x = torch.tensor([ids[b:e] for b, e, _ in batch], dtype=torch.long, device=dev)  # (B, L)
        kwargs = {"attention_mask": torch.ones_like(x)} if take_mask else {}
        logits = model(x, **kwargs).logits  # (B, L, V)
        for r, (b, e, n_new) in enumerate(batch):
            logp = torch.log_softmax(logits[r, length - 1 - n_new: length - 1].float(), dim=-1)  # (n_new, V)
            tgt = x[r, length - n_new:]
            nll_total -= float(logp.gather(-1, tgt[:, None]).sum())
            scored += n_new
        bar.update(sum(n for _, _, n in batch))
        i = j
    bar.close()

    chars = len(text)
    return {
        "nll": nll_total,
        "tokens": len(ids) - (1 if bos is not None else 0),
        "tokens_scored": scored,
        "characters": chars,
        "perplexity": math.exp(nll_total / scored),
        "bits_per_token": nll_total / math.log(2) / scored,
        "bpc": nll_total / math.log(2) / chars,
        "window": window,
        "stride": stride,
        "bos": bos is not None,
    }


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
    import json

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
