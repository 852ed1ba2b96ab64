"""The papers' generation-based protocol, exactly as published (``_models_benchmarking.py``).

Per benchmark (spec section 5):

* MMLU: MMLU prompt, ``max_new_tokens=1``; ARC-e/ARC-c/CommonsenseQA (and world-mc): options one
  per line, ``max_new_tokens=2``; BoolQ: ``max_new_tokens=1``, gold ``T``/``F``. Correct when the
  first character of the stripped, upper-cased continuation equals the gold label.
* SQuAD v2: ``max_new_tokens = min(len(answer), 100)``; correct when the stripped upper-cased
  continuation equals or contains the upper-cased gold answer (world-short: any accepted answer).
* OPUS-100 BLEU: ``max_new_tokens = min(len(reference), 100)``; continuation stripped, upper-cased,
  cut at ``</S>``; per-sample ``sacrebleu.corpus_bleu([hyp], [[ref.upper()]]).score``, averaged.
* The same fixed item set is evaluated ``n_runs`` times (variance from sampled generation): mean,
  population sigma (``np.std``) and ``CI95 = 1.96 * sigma / sqrt(n_runs)``; accuracy x100, BLEU
  raw; printed as ``{model} MMLU: 23.58% ± 0.20% (σ=0.32%)``.

Departures, all recorded in the results: run ``r`` seeds torch with ``seed * 100003 + r`` (the
published runs were unseeded); a deterministic generator (greedy) is run once and its scores
repeated ``n_runs`` times (sigma 0, as re-running would give); per-subject MMLU statistics come from
the per-subject accuracies of the same runs instead of separate passes (same items, same
estimator, half the generation).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .datasets import MMLU_SUBJECTS, BenchData, BenchSpec, Item
from .models import generate_continuations
from .prompts import paper_prompt

# Scoring rules of the published script, by item task.
FIRST_CHAR_TASKS = ("mmlu", "mc", "boolq")


class Generator(Protocol):
    """Anything that turns prompts into published-style continuations (see :class:`HFGenerator`)."""

    deterministic: bool

    def __call__(self, prompts: list[str], max_new_tokens: list[int], run: int) -> list[str]: ...


class HFGenerator:
    """Continuations from a Hugging Face causal LM (batched; ``batch_size=1`` is the published loop).

    Args:
        model, tokenizer: the causal LM and its tokenizer.
        batch_size: prompts per generate call.
        greedy: ``do_sample=False``; otherwise the model's saved generation config decides (ours and
            the published checkpoints sample).
        generation_kwargs: extra ``generate`` arguments.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, greedy: bool = False,
                 generation_kwargs: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.greedy = batch_size, greedy
        self.generation_kwargs = dict(generation_kwargs or {})
        gc = getattr(model, "generation_config", None)
        samples = bool(self.generation_kwargs.get("do_sample", getattr(gc, "do_sample", False)))
        self.deterministic = greedy or not samples

    def __call__(self, prompts: list[str], max_new_tokens: list[int], run: int) -> list[str]:
        return generate_continuations(
            self.model, self.tokenizer, prompts, max_new_tokens, batch_size=self.batch_size,
            greedy=self.greedy, generation_kwargs=self.generation_kwargs,
        )


# ---------------------------------------------------------------------------------------------
# settings and scoring


def max_new_tokens_for(spec: BenchSpec, item: Item) -> int:
    """Published max_new_tokens: fixed for multiple choice, ``min(len(answer), cap)`` otherwise."""
    if item.task in FIRST_CHAR_TASKS:
        return spec.max_new_tokens
    longest = max(len(a) for a in (item.answers or [item.answer]))
    return max(1, min(longest, spec.max_new_tokens))


def max_new_tokens_rule(spec: BenchSpec) -> str:
    """Human-readable rule for the results file."""
    if spec.task in FIRST_CHAR_TASKS:
        return str(spec.max_new_tokens)
    return f"min(len(answer), {spec.max_new_tokens})"


def first_char_correct(continuation: str, gold: str) -> float:
    """1.0 when the first char of the stripped, upper-cased continuation is the gold label."""
    return 1.0 if continuation.strip().upper()[:1] == gold.upper() else 0.0


def contains_correct(continuation: str, answers: list[str]) -> float:
    """SQuAD rule: the upper-cased continuation equals or contains an upper-cased gold answer."""
    gen = continuation.strip().upper()
    return 1.0 if any(gen == a.upper() or a.upper() in gen for a in answers) else 0.0


def bleu_score(continuation: str, reference: str) -> float:
    """Per-sample sacrebleu on upper-cased text, the hypothesis cut at ``</S>``."""
    import sacrebleu  # lazy: optional dependency

    gen = continuation.strip().upper()
    idx = gen.find("</S>")
    gen = gen[:idx] if idx != -1 else gen
    return float(sacrebleu.corpus_bleu([gen.upper()], [[reference.upper()]]).score)


def valid_option(item: Item, continuation: str) -> float | None:
    """Multiple choice: 1.0 when the first char of the stripped, upper-cased continuation is one of
    the item's option labels (a valid answer, right or wrong), else 0.0; None for other tasks.
    (Spec section 5: scores below chance mean many generations are not a valid letter.)"""
    if item.task not in FIRST_CHAR_TASKS:
        return None
    labels = item.labels or (["T", "F"] if item.task == "boolq" else [])
    return 1.0 if continuation.strip().upper()[:1] in {str(x).upper() for x in labels} else 0.0


def score_item(item: Item, continuation: str) -> float:
    """Score one continuation with the published rule for its task (accuracy 0/1 or BLEU)."""
    if item.task in FIRST_CHAR_TASKS:
        return first_char_correct(continuation, item.answer)
    if item.task == "squad":
        return contains_correct(continuation, [item.answer])  # published: first answer only
    if item.task == "short":
        return contains_correct(continuation, item.answers)
    if item.task == "translate":
        return bleu_score(continuation, item.answer)
    raise ValueError(f"no published scoring for task {item.task!r}")


# ---------------------------------------------------------------------------------------------
# statistics and output lines


def run_stats(values: list[float]) -> tuple[float, float, float]:
    """``(mean, sigma, ci95)`` as published: ``np.mean``, ``np.std`` (population), 1.96 sigma/sqrt(n)."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(arr))
    std = float(np.std(arr))
    return mean, std, float(1.96 * std / np.sqrt(len(arr)))


def format_line(model: str, label: str, mean: float, ci95: float, std: float) -> str:
    """The published line: ``{model} MMLU: 23.58% ± 0.20% (σ=0.32%)`` (BLEU keeps the % too)."""
    return f"{model} {label}: {mean:.2f}% ± {ci95:.2f}% (σ={std:.2f}%)"


def run_seed(seed: int, run: int) -> int:
    return int(seed) * 100003 + int(run)


def _group_keys(item: Item) -> list[str]:
    if item.task == "mmlu":
        return [item.meta.get("subject", "unknown")]
    return [str(item.meta[k]) for k in ("lang", "kind") if k in item.meta]


def run_paper(
    generator: Generator | Callable,
    data: BenchData,
    model_name: str = "model",
    n_runs: int = 10,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> dict:
    """Evaluate one benchmark with the published protocol.

    Args:
        generator: ``generator(prompts, max_new_tokens, run) -> continuations``; its
            ``deterministic`` attribute (default False) lets one pass stand for all runs.
        data: the sampled benchmark.
        model_name: name used in the output lines.
        n_runs: repetitions over the same items (published: 10).
        seed: base seed; run ``r`` seeds torch with ``seed * 100003 + r``.
        progress: a progress bar with ETA on stderr over runs x items (tqdm): None (default) when
            stderr is a terminal, True always, False never.

    Returns:
        JSON-ready dict: mean, std, ci95, runs, line, per-item mean scores, per-subject (MMLU) or
        per-language/kind (world) statistics with their lines, settings.
    """
    if n_runs < 1:
        raise ValueError("n_runs must be at least 1")
    spec, items = data.spec, data.items
    prompts = [paper_prompt(it) for it in items]
    news = [max_new_tokens_for(spec, it) for it in items]
    deterministic = bool(getattr(generator, "deterministic", False))
    bleu = spec.task == "translate"
    scale = 1.0 if bleu else 100.0

    per_run_scores: list[list[float]] = []
    per_run_valid: list[list[float | None]] = []
    examples: list[dict] = []
    runs_needed = 1 if deterministic else n_runs
    bar = tqdm(total=runs_needed * len(items), unit="item", desc=f"{model_name} {spec.label}",
               disable=None if progress is None else not progress, dynamic_ncols=True, leave=False)
    for r in range(n_runs):
        if deterministic and r > 0:
            per_run_scores.append(per_run_scores[0])
            per_run_valid.append(per_run_valid[0])
            continue
        torch.manual_seed(run_seed(seed, r))
        conts = generator(prompts, news, r)
        bar.update(len(items))
        if len(conts) != len(items):
            raise RuntimeError(f"generator returned {len(conts)} continuations for {len(items)} prompts")
        per_run_scores.append([score_item(it, c) for it, c in zip(items, conts)])
        per_run_valid.append([valid_option(it, c) for it, c in zip(items, conts)])
        if r == 0:
            examples = [
                {"id": it.id, "continuation": c, "gold": it.answer} for it, c in list(zip(items, conts))[:5]
            ]
        if log is not None:
            log(f"  {model_name} {spec.label} run {r + 1}/{n_runs}: "
                f"{scale * float(np.mean(per_run_scores[-1])):.2f}")

    bar.close()
    run_values = [scale * float(np.mean(s)) for s in per_run_scores]
    mean, std, ci95 = run_stats(run_values)
    result = {
        "protocol": "paper",
        "label": spec.label,
        "metric": "bleu" if bleu else "accuracy",
        "mean": mean, "std": std, "ci95": ci95,
        "n_runs": n_runs, "runs": run_values, "n_items": len(items),
        "max_new_tokens": max_new_tokens_rule(spec),
        "deterministic": deterministic,
        "line": format_line(model_name, spec.label, mean, ci95, std),
        "item_scores": [float(np.mean(col)) for col in zip(*per_run_scores)],
        "examples": examples,
    }
    if spec.task in FIRST_CHAR_TASKS and items:
        # share of generations that are a valid option label (percent, mean over runs)
        result["valid_share"] = float(np.mean([100.0 * float(np.mean(v)) for v in per_run_valid]))

    # per-subject (MMLU) and per-language / per-kind (world) statistics over the same runs
    groups: dict[str, list[int]] = {}
    for idx, it in enumerate(items):
        for key in _group_keys(it):
            groups.setdefault(key, []).append(idx)
    if groups and (spec.task == "mmlu" or len(groups) > 1 or spec.name.startswith("world")):
        out = {}
        for key in sorted(groups) if spec.task != "mmlu" else _subject_order(groups):
            idxs = groups[key]
            vals = [scale * float(np.mean([s[i] for i in idxs])) for s in per_run_scores]
            m, sd, ci = run_stats(vals)
            out[key] = {
                "mean": m, "std": sd, "ci95": ci, "n_items": len(idxs), "runs": vals,
                "line": format_line(model_name, f"{spec.label} [{key}]", m, ci, sd),
            }
        result["subjects" if spec.task == "mmlu" else "groups"] = out
    return result


def _subject_order(groups: dict) -> list[str]:
    known = [s for s in MMLU_SUBJECTS if s in groups]
    return known + sorted(set(groups) - set(known))


def paper_lines(result: dict) -> list[str]:
    """Output lines in the published order: per-subject/group lines first, then the overall line."""
    sub = result.get("subjects") or result.get("groups") or {}
    return [v["line"] for v in sub.values()] + [result["line"]]
