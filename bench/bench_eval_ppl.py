"""Held-out perplexity speed against training speed on the same model, and fine-tuning's real tokens/s.

Issue 24: ``eval ppl`` scored ~1,600 tok/s, no faster than training the same model (forward and
backward) at ~1,500 tok/s, and ``finetune`` padded 36-token examples to ``seq_len``. This script
measures, on one model and one box, in interleaved rounds (median of ``--rounds``):

* ``train``: tokens/s of a training step (the trainer's loss, ``causal_lm_loss`` with the chunked
  head, backward, clip, AdamW) on ``batch x context`` rows of the held-out ids;
* ``bpc new``: :func:`substrate_lm.evaluation.perplexity` with its defaults (window = context,
  stride = window: every token scored once, batched, inference mode, the chunked loss);
* ``bpc new, stride w/2``: the same code with the earlier default stride (every token's forward twice);
* ``bpc old``: the code this replaced, copied below verbatim (HF recipe windows, stride window/2,
  equal-length windows batched, full logits + log-softmax per row, ``no_grad``);
* ``bpc new bf16``: the default under bf16 autocast (``--precision bf16``);

and the same for a composed model of two such experts (logit averaging). Fine-tuning: tokens/s of
the training step on the same quiz-like instruction examples, batches padded to ``seq_len`` (before)
and to the longest row (after); "real" tokens are those up to each row's last learned target.

    .venv/bin/python bench/bench_eval_ppl.py [--preset tiny] [--tokens 16000] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model  # bench/machine.py



def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# -- the code this replaced (substrate_lm/evaluation/perplexity.py before issue 24), verbatim ------


def _old_spans(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
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


@torch.no_grad()
def old_score_ids(model, ids, window: int, stride: int, batch_size: int) -> tuple[float, int]:
    from substrate_lm.evaluation.models import accepts, model_device

    ids = np.asarray(ids, dtype=np.int64)
    spans = _old_spans(len(ids), window, stride)
    dev = model_device(model)
    take_mask = accepts(model, "attention_mask")
    nll_total, scored = 0.0, 0
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
        i = j
    return nll_total, scored


# -- workloads --------------------------------------------------------------------------------------


def held_out_text(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ("the river stone cloud apple table seven quiet north summer glass red blue green gold over under "
             "between question answer because which where when people city water light small great").split()
    out, size = [], 0
    while size < n_chars:
        s = " ".join(rng.choice(words) for _ in range(rng.randint(6, 18))).capitalize() + ". "
        out.append(s)
        size += len(s)
    return "".join(out)[:n_chars]


def train_step_fn(model, ids: np.ndarray, batch: int, seq: int, seed: int = 0):
    """A training step as the trainer takes it: chunked loss, backward, clip 1.0, AdamW."""
    from substrate_lm.components.loss import causal_lm_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    rng = np.random.default_rng(seed)

    def step() -> int:
        model.train()
        starts = rng.integers(0, len(ids) - seq - 1, size=batch)
        x = torch.from_numpy(np.stack([ids[s: s + seq] for s in starts]))
        y = torch.from_numpy(np.stack([ids[s + 1: s + seq + 1] for s in starts]))
        loss = causal_lm_loss(model, x, y, chunked=True, signature_of=model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return x.numel()

    return step


def timed_tokens(fn, repeat: int = 1) -> float:
    """tokens/s of ``fn`` (which returns the tokens it processed), over ``repeat`` calls."""
    t0, n = time.perf_counter(), 0
    for _ in range(repeat):
        n += fn()
    return n / (time.perf_counter() - t0)


def quiz_file(path: Path, n: int, seed: int = 0) -> Path:
    """Quiz-like prompt/response pairs of ~36 tokens (the issue's examples)."""
    rng = random.Random(seed)
    names = ["Zorb", "Quill", "Mave", "Tessa", "Orrin", "Pell", "Brannock", "Ilse"]
    attrs = ["colour", "home", "size", "friend", "job"]
    vals = ["blue", "the north", "small", "Mave", "a baker", "green", "the river", "tall"]
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            q = f"Question: What is the {rng.choice(attrs)} of {rng.choice(names)}?\nAnswer:"
            fh.write(json.dumps({"prompt": q, "response": f" {rng.choice(vals)}."}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokens", type=int, default=16000, help="held-out text size (characters ~ tokens)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=6, help="timed training steps per round")
    ap.add_argument("--no-composed", action="store_true")
    ap.add_argument("--no-finetune", action="store_true")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from substrate_lm.docking.compose import compose
    from substrate_lm.evaluation.models import encode_text
    from substrate_lm.evaluation.perplexity import perplexity
    from substrate_lm.factory import build_model
    from substrate_lm.tokenizer import build_from_stats, ngram_stats_from_texts

    text = held_out_text(args.tokens)
    tok = build_from_stats(ngram_stats_from_texts({"en": [text[:4000]]}, ns=(2, 3), top_k=50))
    ids = np.asarray([tok.bos_token_id] + encode_text(tok, text, add_special_tokens=False), dtype=np.int64)
    base = build_model(args.preset, tokenizer=tok, seed=0).eval()
    ctx = int(base.config.block_size)
    flags = cpu_flags()
    load0 = os.getloadavg()
    head = (f"CPU: {cpu_model()} ({os.cpu_count()} cores, AMX {'yes' if 'amx_bf16' in flags else 'no'}, "
            f"AVX-512 {'yes' if 'avx512f' in flags else 'no'}), torch {torch.__version__}, {args.threads} thread(s); "
            f"preset {args.preset} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters, vocab {len(tok)}, "
            f"context {ctx}); held-out {len(ids) - 1} tokens ({len(text)} chars); load average at start "
            f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(head, flush=True)

    models = {"plain": base}
    if not args.no_composed:
        other = build_model(args.preset, tokenizer=tok, seed=0)
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            for p in other.blocks.parameters():  # another expert on the same frozen table
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        models["composed (2 experts)"] = compose([base, other])

    results: dict = {"header": head, "models": {}}
    for name, model in models.items():
        model.requires_grad_(True)
        if hasattr(model, "token_embeddings"):
            model.token_embeddings.weight.requires_grad_(False)
        step = train_step_fn(model, ids, args.batch, ctx)
        step()  # warm-up
        cases = {
            "train": lambda: timed_tokens(step, args.train_steps),
            "bpc new (default: stride = window)": lambda: _ppl(perplexity, model, tok, text, args.batch),
            "bpc new, stride window/2": lambda: _ppl(perplexity, model, tok, text, args.batch, stride=ctx // 2),
            "bpc old (stride window/2, full logits)": lambda: _old(model, ids, ctx, args.batch),
            "bpc new bf16": lambda: _ppl(perplexity, model, tok, text, args.batch, precision="bf16"),
        }
        rows: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.rounds):  # interleaved: every case once per round
            for k, fn in cases.items():
                rows[k].append(fn())
            print(f"{name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rows.items()), flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        new, old = "bpc new (default: stride = window)", "bpc old (stride window/2, full logits)"
        # ratios within a round (adjacent timings, the same load), then their median and range
        per_round = {k: [a / b for a, b in zip(v, rows["train"])] for k, v in rows.items() if k != "train"}
        per_round["new / old"] = [a / b for a, b in zip(rows[new], rows[old])]
        results["models"][name] = {
            "tok_per_s_median": med, "all": rows,
            "ratio_median_of_rounds": {k: statistics.median(v) for k, v in per_round.items()},
            "ratio_range": {k: [min(v), max(v)] for k, v in per_round.items()},
        }
        print(json.dumps({name: {k: f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
                                 for k, v in per_round.items()}}), flush=True)

    if not args.no_finetune:
        results["finetune"] = finetune_bench(base, tok, ctx, args)
    load1 = os.getloadavg()
    results["load_end"] = load1
    print(f"load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _ppl(perplexity, model, tok, text, batch, **kw) -> float:
    model.eval()
    r = perplexity(model, tok, text, batch_size=batch, **kw)
    return r["tokens_scored"] / r["seconds"]


def _old(model, ids, window, batch) -> float:
    model.eval()
    t0 = time.perf_counter()
    _, n = old_score_ids(model, ids, window, max(1, window // 2), batch)
    return n / (time.perf_counter() - t0)


def finetune_bench(model, tok, ctx: int, args) -> dict:
    """Real tokens/s of the training step on quiz examples: rows padded to seq_len vs to the longest row."""
    from substrate_lm.components.loss import causal_lm_loss
    from substrate_lm.data.instructions import load_instructions
    from substrate_lm.training.trainer import _tokens_to_last_target

    seq_len = min(256, ctx)  # finetune's default
    path = quiz_file(Path(tempfile.mkdtemp(prefix="bench_ft_")) / "quiz.jsonl", 400)
    data = load_instructions(path, tok, seq_len=seq_len, val_fraction=0.05)
    mean_len = statistics.mean(len(e.ids) for e in data.train.examples)
    model.requires_grad_(True)
    model.token_embeddings.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def run(pad_to: str, steps: int, offset: int) -> tuple[float, float, float]:
        data.train.pad_to = pad_to
        model.train()
        real = padded = 0
        t0 = time.perf_counter()
        for i in range(steps):
            x, y = data.train.get_batch(offset + i, args.batch, seq_len, seed=0)
            loss = causal_lm_loss(model, x, y, chunked=True, signature_of=model)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            real += _tokens_to_last_target(y)
            padded += x.numel()
        dt = time.perf_counter() - t0
        return real / dt, padded / dt, real / padded

    run("longest", 1, 0)
    run("seq_len", 1, 0)
    rows: dict[str, list] = {"seq_len": [], "longest": []}
    steps = 3 * args.train_steps
    for r in range(args.rounds):
        for pad_to in rows:
            rows[pad_to].append(run(pad_to, steps, r * steps))
    out = {"seq_len": seq_len, "batch": args.batch, "mean_example_tokens": mean_len}
    for pad_to, vals in rows.items():
        out[pad_to] = {"real_tok_per_s": statistics.median(v[0] for v in vals),
                       "computed_tok_per_s": statistics.median(v[1] for v in vals),
                       "real_share": statistics.median(v[2] for v in vals)}
    ratios = [b[0] / a[0] for a, b in zip(rows["seq_len"], rows["longest"])]
    out["speedup_real_tok_per_s"] = {"median": statistics.median(ratios), "range": [min(ratios), max(ratios)]}
    print("finetune " + json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
