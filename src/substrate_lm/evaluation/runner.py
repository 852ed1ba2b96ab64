"""``evaluate_models``: several models x several benchmarks x one or both protocols -> one results dict.

The library entry point behind ``substrate-lm eval`` and the in-process call the demo uses::

    from substrate_lm.evaluation import evaluate_models, write_report
    results = evaluate_models({"frozen": (model, tok), "baseline": "runs/unfrozen/export"},
                              ["mmlu", "arc-e"], protocol="both", data_dir="data/bench",
                              n_runs=10, limit=200, seed=0)
    write_report(results, "out/eval")
"""

from __future__ import annotations

import gc
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import transformers

from .. import __version__
from ..errors import SubstrateError
from .datasets import BenchData, load_bench, parse_benches
from .loglik import run_loglik
from .models import check_vocab, load_model, resolve_device
from .paper import HFGenerator, paper_lines, run_paper

PROTOCOLS = ("paper", "loglik", "both")


def _named_models(models) -> dict:
    """Normalise the ``models`` argument to ``{name: (model, tokenizer) | path}``."""
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    if isinstance(models, dict):
        return dict(models)
    out: dict = {}
    for m in models:
        if isinstance(m, tuple):
            raise SubstrateError("pass in-memory models as a dict {name: (model, tokenizer)}")
        p = Path(m)
        name = p.name or str(m)
        if p.name in ("export", "final", "model") and p.parent.name:
            name = f"{p.parent.name}/{p.name}"  # runs/<name>/export reads better than "export"
        base, k = name, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out[name] = str(m)
    return out


def _versions() -> dict:
    return {"substrate_lm": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _generation_settings(model) -> dict:
    gc_ = getattr(model, "generation_config", None)
    if gc_ is None:
        return {}
    keys = ("do_sample", "temperature", "top_k", "top_p", "eos_token_id", "pad_token_id")
    return {k: getattr(gc_, k, None) for k in keys}


def format_params(n: int) -> str:
    """A parameter count for the paper-format lines: ``1.3B`` from 1B up, ``335.6M`` / ``8.5M`` below."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def evaluate_models(
    models,
    benches: str | list[str],
    protocol: str = "paper",
    data_dir: str | os.PathLike | None = None,
    n_runs: int = 10,
    limit: int | None = None,
    seed: int = 0,
    sample_size: int | str | None = "paper",
    batch_size: int = 16,
    device: str | None = None,
    greedy: bool = False,
    mc_mode: str = "text",
    world_dir: str | os.PathLike | None = None,
    dtype: str | None = None,
    generation_kwargs: dict | None = None,
    bench_data: dict[str, BenchData] | None = None,
    log: Callable[[str], None] | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Evaluate models on benchmarks with the paper protocol, the log-likelihood protocol or both.

    Args:
        models: ``{name: (model, tokenizer)}``, ``{name: dir}``, a list of dirs, or one dir.
        benches: names or a comma list (``"mmlu,arc-e,bleu,world"``; see ``datasets.BENCHES``).
        protocol: ``"paper"``, ``"loglik"`` or ``"both"``.
        data_dir: local benchmark files (offline); None loads the published ids from the hub.
        n_runs: paper-protocol repetitions (published 10).
        limit: at most this many items per benchmark (after the published sampling).
        seed: shuffle seed and base of the per-run generation seeds.
        sample_size: ``"paper"`` (published sizes), ``"all"`` or an int.
        batch_size: prompts / scored rows per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``; in-memory models are moved there when given.
        greedy: generate with ``do_sample=False`` instead of the model's generation config.
        mc_mode: log-likelihood options as ``"text"`` (default) or ``"letter"``.
        world_dir: generated world for world-mc/world-short (default: ``data_dir``).
        dtype: load dtype for model directories.
        generation_kwargs: extra ``generate`` arguments for the paper protocol.
        bench_data: pre-loaded benchmarks (skips loading those names).
        log: progress callback (e.g. ``print``).
        trust_remote_code: let a foreign model or tokenizer folder run its own ``.py`` files
            (``--trust-remote-code``); our own folders load with our classes and never need it.

    Returns:
        JSON-ready dict ``{"settings", "benchmarks": {name: describe()}, "models": {name: {"path",
        "parameters", "vocab_size", "generation", "results": {bench: {"paper": ..., "loglik": ...}},
        "seconds", "lines"}}}``.
    """
    if protocol not in PROTOCOLS:
        raise SubstrateError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if mc_mode not in ("text", "letter"):
        raise SubstrateError(f"mc_mode must be 'text' or 'letter'; got {mc_mode!r}")
    if n_runs < 1:
        raise SubstrateError("n_runs must be at least 1")
    names = parse_benches(benches)
    named = _named_models(models)
    if not named:
        raise SubstrateError("no model given; pass --model DIR")
    say = log or (lambda s: None)

    # load every benchmark first: a missing file fails before any model time is spent
    data: dict[str, BenchData] = dict(bench_data or {})
    for b in names:
        if b not in data:
            data[b] = load_bench(b, data_dir=data_dir, sample_size=sample_size, seed=seed, limit=limit,
                                 world_dir=world_dir)
            say(f"{b}: {len(data[b].items)} items from {data[b].source}")

    dev = resolve_device(device) if device is not None else None
    results: dict = {
        "settings": {
            "protocol": protocol, "n_runs": n_runs, "seed": seed, "limit": limit,
            "sample_size": sample_size, "batch_size": batch_size,
            "device": str(dev) if dev is not None else "as loaded", "greedy": greedy, "mc_mode": mc_mode,
            "data_dir": str(data_dir) if data_dir is not None else None,
            "world_dir": str(world_dir) if world_dir is not None else None,
            "generation_kwargs": dict(generation_kwargs or {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
        },
        "benchmarks": {b: data[b].describe() for b in names},
        "models": {},
    }

    for name, spec in named.items():
        loaded_here = not isinstance(spec, tuple)
        if loaded_here:
            say(f"loading {name} from {spec}")
            model, tok = load_model(spec, device=dev, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            model, tok = spec
            check_vocab(model, tok)
            if dev is not None:
                model.to(dev)
            model.eval()
        n_params = sum(p.numel() for p in model.parameters())
        entry = {
            "path": spec if loaded_here else None,
            "parameters": n_params,
            "vocab_size": len(tok),
            "generation": _generation_settings(model),
            "results": {},
            "seconds": {},
            # the published files start with this line
            "lines": [f"{name} Total parameters:     {format_params(n_params)}"],
        }
        gen = HFGenerator(model, tok, batch_size=batch_size, greedy=greedy, generation_kwargs=generation_kwargs)
        for b in names:
            entry["results"][b], entry["seconds"][b] = {}, {}
            if protocol in ("paper", "both"):
                t0 = time.perf_counter()
                r = run_paper(gen, data[b], model_name=name, n_runs=n_runs, seed=seed, log=log)
                entry["seconds"][b]["paper"] = time.perf_counter() - t0
                entry["results"][b]["paper"] = r
                entry["lines"].extend(paper_lines(r))
                say(r["line"])
            if protocol in ("loglik", "both"):
                t0 = time.perf_counter()
                r = run_loglik(model, tok, data[b], mc_mode=mc_mode, batch_size=batch_size, log=log)
                entry["seconds"][b]["loglik"] = time.perf_counter() - t0
                entry["results"][b]["loglik"] = r
        results["models"][name] = entry
        if loaded_here:
            del model, tok, gen
            gc.collect()
    return results
