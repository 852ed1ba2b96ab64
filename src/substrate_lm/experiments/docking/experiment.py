"""The docking experiment's run: data, then every training part (side by side with ``jobs`` > 1),
then each seed's scoring, the aggregation and the sentences (:mod:`..findings`)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch

from ...data import TokenShards
from ...errors import SubstrateError
from ...fsutil import atomic_write_json
from ..findings import aggregate_composition, aggregate_growth, docking_sentences
from ..parallel import check_jobs, run_tasks
from .composition import run_composition, run_refusal, train_expert
from .growth import GrowthBase, run_growth_seed
from .halves import load_union_questions, prepare_docking_data
from .records import Clock, read_done
from .settings import ENGINE, MODES, DockingSettings, expert_sections, record


def _load_eval_data(prep: dict, s: DockingSettings):
    """The union's questions by half, the number left out, and each half's validation shards."""
    questions, n_cross = load_union_questions(prep["world"], s.docking.n_questions, s.docking.split)
    val = {part: TokenShards(prep["data"][part], split="val") for part in prep["parts"]}
    return questions, n_cross, val


def _task(out: str, st: DockingSettings, kind: str, seed: int, part: str | None, verbose: bool,
          base: GrowthBase | None = None, log: Callable[[str], None] | None = None) -> None:
    """One independent part of the experiment (run in a worker process by ``jobs`` > 1): ``expert``
    (train one half's expert), ``growth``, ``refusal`` or ``composition`` (compose and score the
    trained experts). Each writes its result file; the parent reads them back."""
    if log is None:
        log = (lambda m: print(m, flush=True)) if verbose else (lambda m: None)
    o = Path(out)
    prep = prepare_docking_data(o, st.docking, log)  # done by the parent: only reads
    if kind == "expert":
        train_expert(o, st, prep, seed, part, "bits", log=log)
    elif kind == "growth":
        run_growth_seed(o, st, prep, seed, log, base)
    elif kind == "refusal":
        run_refusal(o, st, prep, seed, log)
    elif kind == "composition":
        questions, n_cross, val = _load_eval_data(prep, st)
        run_composition(o, st, prep, seed, questions, val, log, n_cross)
    else:
        raise ValueError(f"unknown docking task {kind!r}")


def run_docking_experiment(out_dir, settings: DockingSettings | None = None, *, mode: str = "full",
                           overrides: list[str] | dict | None = None, seeds=(0, 1, 2),
                           log: Callable[[str], None] = print, jobs: int = 1,
                           growth_base: GrowthBase | None = None) -> dict:
    """Run (or resume) the docking experiment; returns the result dict of the package docstring.

    Args:
        out_dir: folder of the experiment (created; a rerun skips finished parts).
        settings: the experiment's settings (the demo passes its own [docking], [model] and
            [train]); default: :meth:`DockingSettings.for_mode` of ``mode``.
        mode: ``quick`` (a smoke run), ``full`` or ``long``: the built-in settings when ``settings``
            is None, and the label of the run.
        overrides: settings to change, ``{"docking.steps": 400, "train.lr": 3e-3}`` or the command
            line's ``["--docking.steps", "400"]``, read and checked by the settings engine
            (:data:`~.settings.ENGINE`).
        seeds: training seeds (backbone init, the shared table, batches); the world is shared.
        log: receives progress lines.
        jobs: independent parts (each expert, each growth run, the refusal, each seed's scoring) run
            this many at a time, one process and one torch thread each; the results do not depend
            on it (every part seeds what it uses and is scored from its exported model).
        growth_base: the monolithic models growth is compared with when ``docking.grow_baseline``
            is demo (the demo passes its random-bits models; see :mod:`.growth`).
    Raises:
        SubstrateError: a bad setting, no seeds, or ``out_dir`` holding a run with other settings.
    """
    if mode not in MODES:
        raise SubstrateError(f"unknown docking mode {mode!r}; choose from {', '.join(MODES)}")
    jobs = check_jobs(jobs)
    s = ENGINE.apply(settings if settings is not None else DockingSettings.for_mode(mode), overrides or {})
    try:
        seeds = [int(x) for x in seeds]
    except (TypeError, ValueError):
        raise SubstrateError(f"docking seeds must be integers, got {seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SubstrateError(f"docking seeds must be distinct non-negative integers, got {seeds}")
    if (s.docking.grow_baseline == "demo") != (growth_base is not None):
        raise SubstrateError("docking.grow_baseline demo compares growth with the demo's models: run it from "
                             "substrate-lm demo, or set docking.grow_baseline own" if growth_base is None else
                             "a growth baseline was given but docking.grow_baseline is own")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SubstrateError(f"docking out_dir {out} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    flat = record(s)
    saved = read_done(out / "settings.json")
    if saved is not None and saved != flat:
        changed = sorted(k for k in set(saved) | set(flat) if saved.get(k) != flat.get(k))
        raise SubstrateError(
            f"{out} holds a docking run with other settings ({', '.join(changed)}); use another folder or the "
            f"same settings"
        )
    atomic_write_json(out / "settings.json", flat)
    clock = Clock()
    t0, c0 = time.perf_counter(), time.process_time()
    log(f"docking experiment ({mode}, {s.docking.split} split): seeds {seeds}, {expert_sections(s)[1].steps} steps "
        f"per expert, "
        f"{torch.get_num_threads()} CPU threads -> {out}")
    with clock.part("data"):
        prep = prepare_docking_data(out, s.docking, log)
        questions, n_cross, val = _load_eval_data(prep, s)
    # training first (the longest parts first, for an even load), then each seed's scoring
    verbose = log is print
    train, score = [], []
    for seed in seeds:
        if read_done(out / f"seed{seed}" / "growth.json") is None:
            train.insert(0, (str(out), s, "growth", seed, None, verbose, growth_base))
        if read_done(out / f"seed{seed}" / "composition.json") is None:
            train += [(str(out), s, "expert", seed, part, verbose) for part in prep["parts"]]
            score.append((str(out), s, "composition", seed, None, verbose))
    if read_done(out / "refusal.json") is None:
        train.append((str(out), s, "refusal", seeds[0], None, verbose))
    if jobs > 1 and len(train) > 1:
        log(f"docking: {len(train)} training parts, {jobs} at a time (one process and thread each)")
    for name, tasks in (("training", train), ("composition", score)):
        with clock.part(name):
            if jobs > 1:
                run_tasks(_task, tasks, jobs=jobs, threads=1)
            else:
                for t in tasks:
                    _task(*t, log=log)
    comp_rows = [run_composition(out, s, prep, seed, questions, val, log, n_cross) for seed in seeds]
    grow_rows = [run_growth_seed(out, s, prep, seed, log, growth_base) for seed in seeds]
    refusal = run_refusal(out, s, prep, seeds[0], log)
    result = {
        "claim": "docking",
        "quick": mode == "quick",
        "mode": mode,
        "seeds": seeds,
        "settings": dataclasses.asdict(s),
        "world": prep["info"],
        "composition": {"rows": comp_rows, **aggregate_composition(comp_rows)},
        "refusal": refusal,
        "growth": {"rows": grow_rows, **aggregate_growth(grow_rows)},
    }
    result["verdicts"] = {"composition": result["composition"]["verdict"],
                          "composition_val_loss": result["composition"]["verdict_val_loss"],
                          "refusal": bool(refusal["refused"]), "growth": result["growth"]["verdict"]}
    result["findings"] = docking_sentences(result)
    computed = {f"composition/seed{r['seed']}": r.get("timing") for r in comp_rows}
    computed.update({f"growth/seed{r['seed']}": r.get("timing") for r in grow_rows})
    computed["refusal"] = refusal.get("timing")
    result["timing"] = {
        "this_call": {**clock.parts, "total": {"wall_s": round(time.perf_counter() - t0, 2),
                                               "cpu_s": round(time.process_time() - c0, 2)}},
        "parts": computed,  # measured when each part was computed (a resumed part keeps its first timing)
        "threads": torch.get_num_threads(),
        "jobs": jobs,
    }
    atomic_write_json(out / "docking.json", result)
    for line in result["findings"]:
        log(f"  {line}")
    return result
