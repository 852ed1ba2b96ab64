"""Log-likelihood protocol: score each option's continuation by its log-probability, as lm-eval does.

Generation-based letter matching punishes a model that does not emit a letter (the published
trainable-embedding baselines score far below chance on MMLU); ranking the options by
log-probability asks only which option the model prefers. This module mirrors lm-eval-harness's
``loglikelihood`` for causal models so the numbers are comparable (and a test checks them against
``lm_eval`` on the same items):

* context and continuation are joined by one space (``target_delimiter``); trailing spaces of the
  context move to the continuation; ``whole = encode(context + continuation)``, ``ctx =
  encode(context)``, continuation tokens = ``whole[len(ctx):]`` (tokenizer-default special tokens; literal control
  strings in an item stay text, :func:`~.models.encode_text`);
* the input is ``(ctx + cont)[-(max_len + 1):][:-1]`` and the continuation's log-probability is the
  sum over its tokens; ``is_greedy`` when every continuation token is the argmax;
* ``acc``: argmax of the sums; ``acc_norm``: argmax of sum / ``len(option text)`` in characters.

What the options are (:func:`~substrate_lm.evaluation.prompts.loglik_request`): by default
(``mc_mode="text"``, lm-eval's ARC convention) the option *texts* after ``Question: {q}\\nAnswer:``;
``mc_mode="letter"`` scores the labels ``A``/``B``/... after the published prompt. Generative
benchmarks (SQuAD, BLEU, world-short) report bits per character of the gold answer given the
published prompt, and how often the gold answer is the greedy continuation.

Batching: the options of one question share their context; when the model takes ``position_ids``
(ours and most HF models) the context is run once and every option is scored from its KV cache
(same logits, a fraction of the work). Other requests are sorted by length and batched; rows are
left-padded with position ids and only the last positions' logits are kept when the model's
``forward`` takes ``position_ids`` and ``logits_to_keep``, else right-padded (exact for any causal
model).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .datasets import BenchData
from .models import accepts, encode_text, max_context, model_device, pad_id
from .prompts import loglik_request


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair`` for causal models (see module docstring)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode_text(tokenizer, context + continuation)
    ctx = encode_text(tokenizer, context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def score_continuations(
    model,
    tokenizer,
    requests: list[tuple[str, str]],
    batch_size: int = 16,
    padding: str = "auto",
    share_context: bool | str = "auto",
) -> list[tuple[float, bool, int]]:
    """Sum log-probabilities of continuations given contexts.

    Args:
        requests: ``(context, continuation)`` pairs (continuation includes its leading space).
        batch_size: rows per forward pass.
        padding: ``"left"`` (position ids + ``logits_to_keep``), ``"right"`` or ``"auto"``.
        share_context: run a context shared by several continuations (the options of one question)
            once and score the options from its KV cache; ``"auto"`` when the model supports it.

    Returns:
        Per request ``(logprob_sum, is_greedy, n_continuation_tokens)``.
    """
    enc = [encode_pair(tokenizer, c, x) for c, x in requests]
    return score_tokens(model, [(c, x) for c, x in enc], batch_size=batch_size, padding=padding,
                        pad=pad_id(tokenizer), share_context=share_context)


@torch.no_grad()
def score_tokens(
    model,
    pairs: list[tuple[list[int], list[int]]],
    batch_size: int = 16,
    padding: str = "auto",
    pad: int = 0,
    share_context: bool | str = "auto",
    progress: bool | None = None,
) -> list[tuple[float, bool, int]]:
    """:func:`score_continuations` on already-encoded ``(context_ids, continuation_ids)`` pairs.

    ``progress``: a progress bar with ETA over the pairs on stderr (tqdm): None (default) when stderr
    is a terminal, True always, False never.
    """
    bar = tqdm(total=len(pairs), unit="req", desc="log-likelihood", leave=False, dynamic_ncols=True,
               disable=None if progress is None else not progress)
    try:
        return _score_tokens(model, pairs, batch_size, padding, pad, share_context, bar)
    finally:
        bar.close()


def _score_tokens(model, pairs, batch_size, padding, pad, share_context, bar) -> list[tuple[float, bool, int]]:
    out: list[tuple[float, bool, int] | None] = [None] * len(pairs)
    max_len = max_context(model)
    if share_context == "auto":
        share_context = accepts(model, "position_ids") and accepts(model, "attention_mask")
    if share_context:
        # contexts shared by two or more continuations that fit the model without truncation
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            if len(ctx) >= 2 and cont and len(ctx) + len(cont) <= max_len + 1:
                groups.setdefault(tuple(ctx), []).append(i)
        shared = [idx for idx in groups.values() if len(idx) >= 2]
        if shared:
            done = _score_shared(model, pairs, shared, batch_size, pad, bar)
            if done is not None:
                for i, r in done.items():
                    out[i] = r
            else:
                bar.reset()
    rest = [i for i in range(len(pairs)) if out[i] is None]
    if rest:
        for i, r in zip(rest, _score_plain(model, [pairs[i] for i in rest], batch_size, padding, pad, bar)):
            out[i] = r
    return out  # type: ignore[return-value]


def _token_scores(sl: torch.Tensor, cont: list[int]) -> tuple[float, bool]:
    """Sum log-prob of ``cont`` under logits ``sl`` (n, V) and whether every token is the argmax.

    log p(target) = logit - logsumexp (no full log_softmax); greedy when the target's logit is the
    maximum (lm-eval compares argmax; the two differ only on exact ties).
    """
    sl = sl.float()
    target = torch.tensor(cont, device=sl.device)
    tgt_logit = sl.gather(-1, target[:, None]).squeeze(-1)  # (n,)
    ll = float((tgt_logit - torch.logsumexp(sl, dim=-1)).sum())
    return ll, bool((tgt_logit >= sl.max(dim=-1).values).all())


def _score_shared(model, pairs, groups: list[list[int]], batch_size: int, pad: int, bar=None):
    """Score groups of continuations that share a context: context once, options from its cache.

    Per chunk of groups: one forward over the contexts minus their last token (left-padded, with
    position ids) builds the KV cache; the cache rows are repeated for each option; a second forward
    feeds ``[last context token] + option[:-1]`` (right-padded) after it. The logits are those of the
    full ``context + option`` sequence. Returns None (caller falls back) when the model's cache
    cannot be re-indexed.
    """
    dev = model_device(model)
    out: dict[int, tuple[float, bool, int]] = {}
    keep_kw = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    # similar context lengths together; chunks of about batch_size option rows
    groups = sorted(groups, key=lambda g: -len(pairs[g[0]][0]))
    chunk: list[list[int]] = []
    chunks = []
    for g in groups:
        if chunk and sum(len(x) for x in chunk) + len(g) > max(batch_size, len(g)):
            chunks.append(chunk)
            chunk = []
        chunk.append(g)
    if chunk:
        chunks.append(chunk)
    for chunk in chunks:
        prefixes = [pairs[g[0]][0][:-1] for g in chunk]  # context minus its last token
        wp = max(len(p) for p in prefixes)
        ids = torch.full((len(chunk), wp), pad, dtype=torch.long)
        pmask = torch.zeros((len(chunk), wp), dtype=torch.long)
        for r, p in enumerate(prefixes):
            ids[r, wp - len(p):], pmask[r, wp - len(p):] = torch.tensor(p, dtype=torch.long), 1
        pos = (pmask.cumsum(-1) - 1).clamp(min=0)
        res = model(ids.to(dev), attention_mask=pmask.to(dev), position_ids=pos.to(dev), use_cache=True, **keep_kw)
        cache = getattr(res, "cache", None)
        if cache is None:
            cache = getattr(res, "past_key_values", None)
        if cache is None or not hasattr(cache, "reorder_cache"):
            return None
        rows = [(c, i) for c, g in enumerate(chunk) for i in g]  # (group row, pair index)
        cache.reorder_cache(torch.tensor([c for c, _ in rows], device=dev))
        suffixes = [[pairs[i][0][-1]] + list(pairs[i][1][:-1]) for _, i in rows]
        ws = max(len(x) for x in suffixes)
        sids = torch.full((len(rows), ws), pad, dtype=torch.long)
        smask = torch.zeros((len(rows), ws), dtype=torch.long)
        spos = torch.zeros((len(rows), ws), dtype=torch.long)
        for r, ((c, _), suf) in enumerate(zip(rows, suffixes)):
            sids[r, : len(suf)], smask[r, : len(suf)] = torch.tensor(suf, dtype=torch.long), 1
            spos[r] = len(prefixes[c]) + torch.arange(ws)
        mask = torch.cat([pmask[[c for c, _ in rows]], smask], dim=1)  # (R, wp + ws)
        # transformers 5 names the argument ``cache``; older models take ``past_key_values``
        cache_kw = {"cache": cache} if accepts(model, "cache") else {"past_key_values": cache}
        logits = model(sids.to(dev), attention_mask=mask.to(dev), position_ids=spos.to(dev),
                       use_cache=True, **cache_kw).logits  # (R, ws, V)
        for r, (_, i) in enumerate(rows):
            cont = list(pairs[i][1])
            ll, greedy = _token_scores(logits[r, : len(cont)], cont)
            out[i] = (ll, greedy, len(cont))
        if bar is not None:
            bar.update(len(rows))
    return out


def _score_plain(model, pairs, batch_size: int, padding: str, pad: int, bar=None) -> list[tuple[float, bool, int]]:
    """One row per (context, continuation), lm-eval style (left-truncated to the context length)."""
    if padding == "auto":
        padding = "left" if accepts(model, "position_ids") and accepts(model, "logits_to_keep") else "right"
    if padding not in ("left", "right"):
        raise ValueError(f"padding must be 'left', 'right' or 'auto', got {padding!r}")
    max_len = max_context(model)
    dev = model_device(model)
    take_mask = accepts(model, "attention_mask")
    rows = []
    for ctx, cont in pairs:
        if not cont:
            raise ValueError("a continuation encoded to zero tokens")
        full = (list(ctx) + list(cont))[-(max_len + 1):]
        rows.append((full[:-1], full[len(full) - len(cont):]))  # (input, continuation targets)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # longest first, like lm-eval
    out: list[tuple[float, bool, int] | None] = [None] * len(rows)
    for start in range(0, len(order), max(1, batch_size)):
        batch = order[start:start + batch_size]
        width = max(len(rows[i][0]) for i in batch)
        keep = max(len(rows[i][1]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            inp = torch.tensor(rows[i][0], dtype=torch.long)
            if padding == "left":
                ids[r, width - len(inp):], mask[r, width - len(inp):] = inp, 1
            else:
                ids[r, : len(inp)], mask[r, : len(inp)] = inp, 1
        kwargs = {}
        if take_mask:
            kwargs["attention_mask"] = mask.to(dev)
        if padding == "left":
            pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): padding does not shift positions
            kwargs.update(position_ids=pos.to(dev), logits_to_keep=keep)
        logits = model(ids.to(dev), **kwargs).logits  # (B, T or keep, V)
        for r, i in enumerate(batch):
            inp, cont = rows[i]
            n = len(cont)
            end = logits.shape[1] if padding == "left" else len(inp)  # one past the last prediction
            ll, greedy = _token_scores(logits[r, end - n: end], cont)  # positions predicting cont
            out[i] = (ll, greedy, n)
        if bar is not None:
            bar.update(len(batch))
    return out  # type: ignore[return-value]


def mean_stderr(values: list[float]) -> float:
    """Standard error of a mean with the sample std (lm-eval's ``mean_stderr``)."""
    n = len(values)
    if n < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(n))


def run_loglik(
    model,
    tokenizer,
    data: BenchData,
    mc_mode: str = "text",
    batch_size: int = 16,
    padding: str = "auto",
    share_context: bool | str = "auto",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate one benchmark with the log-likelihood protocol.

    Returns:
        For multiple choice: ``acc``, ``acc_norm`` (percent), their ``*_stderr`` and ``*_ci95``
        (1.96 x stderr), per-item predictions and option log-likelihoods, per-subject/group accuracy.
        For generative benchmarks: ``bpc`` of the gold answers, ``greedy_match`` (percent of items
        whose gold answer is the greedy continuation) with stderr/ci95, per-item nll.
    """
    spec, items = data.spec, data.items
    reqs, owner = [], []
    meta = []
    for idx, it in enumerate(items):
        context, conts, gold = loglik_request(it, mc_mode=mc_mode)
        meta.append((context, conts, gold))
        for c in conts:
            reqs.append((context, " " + c))
            owner.append(idx)
    scores = score_continuations(model, tokenizer, reqs, batch_size=batch_size, padding=padding,
                                 share_context=share_context)
    per_item: list[list[tuple[float, bool, int]]] = [[] for _ in items]
    for idx, s in zip(owner, scores):
        per_item[idx].append(s)

    result: dict = {"protocol": "loglik", "label": spec.label, "n_items": len(items), "mc_mode": mc_mode}
    if spec.multiple_choice:
        acc, acc_norm, preds, preds_norm, lls_all = [], [], [], [], []
        for (context, conts, gold), sc in zip(meta, per_item):
            lls = np.array([s[0] for s in sc])
            lens = np.array([float(len(c)) for c in conts])
            p, pn = int(np.argmax(lls)), int(np.argmax(lls / lens))
            preds.append(p)
            preds_norm.append(pn)
            acc.append(1.0 if p == gold else 0.0)
            acc_norm.append(1.0 if pn == gold else 0.0)
            lls_all.append([float(x) for x in lls])
        se, se_n = mean_stderr(acc), mean_stderr(acc_norm)
        result.update(
            metric="accuracy",
            acc=100 * float(np.mean(acc)), acc_stderr=100 * se, acc_ci95=100 * 1.96 * se,
            acc_norm=100 * float(np.mean(acc_norm)), acc_norm_stderr=100 * se_n,
            acc_norm_ci95=100 * 1.96 * se_n,
            item_pred=preds, item_pred_norm=preds_norm, item_gold=[m[2] for m in meta], item_lls=lls_all,
        )
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            keys = [it.meta["subject"]] if "subject" in it.meta else [str(it.meta[k]) for k in ("lang", "kind") if k in it.meta]
            for k in keys:
                groups.setdefault(k, []).append(i)
        if groups and (spec.task == "mmlu" or len(groups) > 1 or spec.name.startswith("world")):
            result["subjects" if spec.task == "mmlu" else "groups"] = {
                k: {"acc": 100 * float(np.mean([acc[i] for i in v])),
                    "acc_norm": 100 * float(np.mean([acc_norm[i] for i in v])), "n_items": len(v)}
                for k, v in sorted(groups.items())
            }
    else:
        nll = [-sc[0][0] for sc in per_item]
        chars = [len(" " + m[1][0]) for m in meta]
        greedy = [1.0 if sc[0][1] else 0.0 for sc in per_item]
        se = mean_stderr(greedy)
        result.update(
            metric="bpc",
            bpc=float(sum(nll) / math.log(2) / max(1, sum(chars))),
            greedy_match=100 * float(np.mean(greedy)), greedy_match_stderr=100 * se,
            greedy_match_ci95=100 * 1.96 * se,
            item_nll=[float(x) for x in nll],
        )
    if log is not None:
        if spec.multiple_choice:
            log(f"  loglik {spec.label}: acc {result['acc']:.2f}  acc_norm {result['acc_norm']:.2f}")
        else:
            log(f"  loglik {spec.label}: bpc {result['bpc']:.3f}  greedy match {result['greedy_match']:.2f}")
    return result
