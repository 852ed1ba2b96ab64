"""Ablations: substrates x seeds x presets x corpora, trained identically, evaluated, aggregated.

A grid is described by a TOML file::

    [ablation]
    out = "runs/ablation"          # everything goes here; rerunning resumes
    recipe = "tiny"                # base training recipe (name or TOML path)
    substrates = ["bits", "16-bit", "uni-glyph", "unfrozen"]
    seeds = [0, 1, 2]
    presets = ["tiny"]
    corpora = ["world:2MB"]        # world:SIZE (the built-in world) or a prepared data folder
    benches = ["world-mc", "world-short"]
    protocol = "both"              # paper | loglik | both
    n_runs = 3                     # paper-protocol repetitions
    limit = 60                     # items per benchmark
    data_seed = 0                  # seed of the generated corpus (shared by every cell)

    [overrides]                    # applied to the recipe of every cell
    "train.steps" = 300

Every cell (preset, corpus, substrate, seed) differs from the others only in those four values:
the same corpus, tokenizer and token shards, the same steps and schedule, the same backbone init for
the same seed. A cell is finished when its ``result.json`` exists (written atomically after
training, export and evaluation): a rerun never recomputes it, and an interrupted cell resumes
from its last checkpoint. Across seeds each metric gets mean, sample standard deviation and
CI95 = t(0.975, n-1) sd / sqrt(n) (Student t, as the demo's findings; 0 with one seed).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..data import prepare_data
from ..data.folder import is_prepared, load_meta
from ..errors import SubstrateError
from ..evaluation import evaluate_models
from ..export import export_model
from ..fsutil import atomic_write_json
from ..presets import PRESETS
from ..settings import SettingsEngine, read_toml
from ..substrates.registry import parse_spec
from ..training import RunConfig, Trainer, load_config
from ..world import generate_world
from .compact import build_tokenizer, corpus_layout
from .findings import summarize
from .parallel import check_jobs, run_tasks

PROTOCOLS = ("paper", "loglik", "both")
TOKENIZERS = ("bvv241", "compact")
# keyword settings of ``generate_world`` an ablation may pass through (``[ablation] world = {...}``)
WORLD_OPTIONS = ("entities_per_cat", "qa_fraction", "val_fraction", "n_questions", "mc_variants", "mc_share")


@dataclass
class AblationConfig:
    """One ablation grid; see the module docstring for the TOML form."""

    out: str = "runs/ablation"
    recipe: str = "tiny"
    substrates: list[str] = field(default_factory=lambda: ["bits", "16-bit", "unfrozen"])
    seeds: list[int] = field(default_factory=lambda: [0])
    presets: list[str] = field(default_factory=lambda: ["tiny"])
    corpora: list[str] = field(default_factory=lambda: ["world:2MB"])
    benches: list[str] = field(default_factory=lambda: ["world-mc", "world-short"])
    protocol: str = "both"
    n_runs: int = 3
    limit: int | None = 60
    data_seed: int = 0
    langs: list[str] = field(default_factory=lambda: ["en", "ru", "zh"])
    tokenizer: str = "bvv241"
    world: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise SubstrateError(f"ablation.limit must be >= 1 (or none for all items), got {self.limit}")
        for name in ("substrates", "seeds", "presets", "corpora"):
            if not getattr(self, name):
                raise SubstrateError(f"ablation.{name} is empty; list at least one value")
        if self.protocol not in PROTOCOLS:
            raise SubstrateError(f"ablation.protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.n_runs < 1:
            raise SubstrateError("ablation.n_runs must be at least 1")
        if self.tokenizer not in TOKENIZERS:
            raise SubstrateError(f"ablation.tokenizer {self.tokenizer!r} is not one of {', '.join(TOKENIZERS)}")
        unknown = set(self.world) - set(WORLD_OPTIONS)
        if unknown:
            raise SubstrateError(
                f"unknown ablation.world option(s) {', '.join(sorted(unknown))}; valid: {', '.join(WORLD_OPTIONS)}"
            )
        for p in self.presets:
            if p not in PRESETS:
                raise SubstrateError(f"unknown preset {p!r} in ablation.presets; choose from {', '.join(PRESETS)}")
        for s in self.substrates:
            parse_spec(s, 64)


#: the settings engine of ``substrate-lm ablate`` (flat: ``--ablation.KEY VALUE``)
ENGINE: SettingsEngine[AblationConfig] = SettingsEngine(AblationConfig, name="ablation",
                                                        check=lambda cfg: cfg.validate())


def load_ablation_config(path: str | os.PathLike, overrides: list[str] | dict | None = None) -> AblationConfig:
    """Read an ablation TOML file ([ablation] keys, an optional [overrides] table of run-config keys)
    through the settings engine; ``overrides`` change [ablation] keys: ``["--ablation.seeds", "0,1"]``
    (the command line) or ``{"ablation.seeds": [0, 1]}``."""
    p = Path(path)
    if not p.is_file():
        raise SubstrateError(f"ablation config {p} not found; give an ablation TOML file")
    raw = read_toml(p)
    unknown_tables = set(raw) - {"ablation", "overrides"}
    if unknown_tables:
        raise SubstrateError(f"{p}: unknown table(s) {', '.join(sorted(unknown_tables))}; use [ablation] and [overrides]")
    section = raw.get("ablation", {})
    if not isinstance(section, dict):
        raise SubstrateError(f"{p}: [ablation] must be a table of keys")
    if "overrides" in section:
        raise SubstrateError(f"{p}: run-config overrides go in their own [overrides] table, not in [ablation]")
    overrides_table = raw.get("overrides", {})
    if not isinstance(overrides_table, dict):
        raise SubstrateError(f"{p}: [overrides] must be a table of \"key\" = value pairs")
    cfg = ENGINE.from_dict({"ablation": {**section, "overrides": dict(overrides_table)}})
    return ENGINE.apply(cfg, overrides) if overrides else cfg


# -- cells ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    preset: str
    corpus: str
    substrate: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.preset}__{slug(self.corpus)}__{slug(self.substrate)}__seed{self.seed}"

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.preset, self.corpus, self.substrate)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def cells(cfg: AblationConfig) -> list[Cell]:
    return [
        Cell(p, c, s, int(seed)) for p in cfg.presets for c in cfg.corpora for s in cfg.substrates for seed in cfg.seeds
    ]


# -- corpora -------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Prepared data shared by every cell of one corpus."""

    spec: str
    data_dir: Path
    tokenizer_dir: str
    world_dir: Path | None = None


def corpus_dir_name(spec: str, tokenizer: str = "bvv241", world: dict | None = None) -> str:
    """Folder name of a prepared corpus: the spec, plus the tokenizer and world options when they
    are not the defaults (so two grids with different worlds never share shards)."""
    parts = [slug(spec)]
    if tokenizer != "bvv241":
        parts.append(tokenizer)
    parts += [f"{k}{slug(str(v))}" for k, v in sorted((world or {}).items())]
    return "__".join(parts)


def prepare_corpus(spec: str, root: Path, data_seed: int, langs: list[str], log: Callable[[str], None],
                   *, tokenizer: str = "bvv241", world: dict | None = None) -> Corpus:
    """``world:SIZE`` -> generate the world, build its tokenizer, prepare shards (each step once).

    ``tokenizer``: ``"bvv241"`` (the published 65,536-id layout) or ``"compact"`` (see
    :func:`~substrate_lm.experiments.compact.corpus_layout`). ``world``: keyword settings of :func:`~substrate_lm.world.generate_world`
    (``entities_per_cat``, ``qa_fraction``, ...). Any other spec is a folder prepared by
    ``substrate-lm data prepare`` and is used as it is.
    """
    if spec.startswith("world:"):
        size = spec.split(":", 1)[1] or "2MB"
        base = root / "corpora" / corpus_dir_name(spec, tokenizer, world)
        world_dir, tok_dir, data_dir = base / "world", base / "tokenizer", base / "data"
        if not (world_dir / "world.json").is_file():
            log(f"generating the semantic world ({size}, {','.join(langs)})")
            generate_world(world_dir, size=size, langs=tuple(langs), seed=data_seed, **(world or {}))
        if not (tok_dir / "tokenizer.json").is_file():
            layout = None if tokenizer == "bvv241" else corpus_layout(world_dir, langs)
            log(f"building its {layout.name if layout else 'bvv241'}-layout tokenizer from the corpus n-grams")
            build_tokenizer([world_dir / "train.jsonl"], langs, tok_dir, layout)
        if not is_prepared(data_dir):
            log("tokenising into uint16 shards")
            prepare_data([f"world:{world_dir}"], str(tok_dir), data_dir, seed=data_seed, progress=False)
        return Corpus(spec, data_dir, str(tok_dir.resolve()), world_dir)
    data_dir = Path(spec)
    if not is_prepared(data_dir):
        raise SubstrateError(
            f"corpus {spec!r} is neither world:SIZE nor a finished prepared data folder; "
            "run substrate-lm data prepare first"
        )
    tok = (load_meta(data_dir).get("tokenizer") or {}).get("name")
    if not tok:
        raise SubstrateError(f"{data_dir / 'meta.json'} names no tokenizer; prepare the data again")
    return Corpus(spec, data_dir, tok, None)


# -- running -------------------------------------------------------------------------------------


def base_run_config(cfg: AblationConfig) -> RunConfig:
    """The run config every cell starts from: the recipe with the grid's ``[overrides]`` applied by
    the settings engine (TOML values keep their types; text is read by each field's type)."""
    return load_config(cfg.recipe, cfg.overrides)


def cell_run_config(base: RunConfig, cell: Cell, corpus: Corpus, cell_dir: Path) -> RunConfig:
    """The training config of one cell: ``base`` (:func:`base_run_config`, or the demo's typed
    config) with the cell's four values, its corpus and its folder; ``base`` is not changed."""
    run = copy.deepcopy(base)
    replace = dataclasses.replace
    return replace(
        run,
        run=replace(run.run, name=cell.key, dir=str(cell_dir / "run")),
        model=replace(run.model, preset=cell.preset, substrate=cell.substrate, tokenizer=corpus.tokenizer_dir),
        data=replace(run.data, path=str(corpus.data_dir), world="", sources=[]),
        train=replace(run.train, seed=cell.seed),
    )


def _first_last_loss(history: list[dict]) -> tuple[float | None, float | None]:
    train = [h["loss"] for h in history if h.get("event") == "train" and "loss" in h]
    return (train[0], train[-1]) if train else (None, None)


def run_cell(
    cfg: AblationConfig,
    cell: Cell,
    corpus: Corpus,
    root: Path,
    log: Callable[[str], None] = print,
    keep_model: bool = False,
    base: RunConfig | None = None,
) -> dict:
    """Train, export and evaluate one cell; returns (and writes) its ``result.json``. ``base``: the
    run config the cell starts from (default: :func:`base_run_config` of ``cfg``)."""
    cell_dir = root / "cells" / cell.key
    result_path = cell_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text(encoding="utf-8"))
    cell_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run = cell_run_config(base if base is not None else base_run_config(cfg), cell, corpus, cell_dir)
    log(f"[{cell.key}] training {run.train.steps} steps")
    res = Trainer(run, resume=True).fit()
    model, tok = res.model, res.tokenizer
    model.eval()
    # the frozen table must be exactly the one installed at init (fingerprint in the config)
    model.verify_substrate()
    export_model(model, cell_dir / "model", tokenizer=tok)
    evaluation = None
    if cfg.benches:
        benches = [b for b in cfg.benches if not b.startswith("world") or corpus.world_dir is not None]
        if benches:
            log(f"[{cell.key}] evaluating {', '.join(benches)} ({cfg.protocol})")
            evaluation = evaluate_models(
                {cell.substrate: (model, tok)},
                benches,
                protocol=cfg.protocol,
                n_runs=cfg.n_runs,
                limit=cfg.limit,
                seed=0,
                sample_size="all",
                world_dir=corpus.world_dir,
            )
    first, last = _first_last_loss(res.history)
    result = dict(
        cell=asdict(cell),
        key=cell.key,
        steps=res.step,
        train_loss_first=first,
        train_loss_last=last,
        val=res.val,
        best_val_loss=res.best_val_loss,
        substrate_kind=model.config.substrate_kind,
        substrate_width=model.config.n_embed,
        substrate_frozen=model.config.substrate_frozen,
        substrate_fingerprint=model.config.substrate_fingerprint,
        substrate_unchanged=True if model.config.substrate_frozen else None,
        parameters=dict(
            total=sum(p.numel() for p in model.parameters()),
            trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        ),
        history=res.history,
        evaluation=evaluation,
        model_dir=str((cell_dir / "model").resolve()),
        seconds=time.time() - t0,
    )
    atomic_write_json(result_path, result, default=str)
    if keep_model:
        result["_model"], result["_tokenizer"] = model, tok
    return result


# -- aggregation ---------------------------------------------------------------------------------


def cell_metrics(result: dict) -> dict[str, float]:
    """Flat ``{metric: value}`` of one cell: validation and each benchmark x protocol."""
    out: dict[str, float] = {}
    val = result.get("val") or {}
    for k in ("val_loss", "val_bpc", "val_ppl"):
        if val.get(k) is not None:
            out[k] = float(val[k])
    if result.get("train_loss_last") is not None:
        out["train_loss"] = float(result["train_loss_last"])
    ev = result.get("evaluation") or {}
    for model_res in (ev.get("models") or {}).values():
        for bench, by_proto in (model_res.get("results") or {}).items():
            paper = by_proto.get("paper") or {}
            if "mean" in paper:
                out[f"{bench}/paper"] = float(paper["mean"])
            ll = by_proto.get("loglik") or {}
            for k in ("acc", "acc_norm", "greedy_match", "bpc"):
                if ll.get(k) is not None:
                    out[f"{bench}/loglik_{k}"] = float(ll[k])
    return out


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (preset, corpus, substrate): every metric's mean, sd and CI95 across seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["cell"]
        groups.setdefault((c["preset"], c["corpus"], c["substrate"]), []).append(cell_metrics(r))
    rows = []
    for (preset, corpus, substrate), ms in groups.items():
        names = sorted({k for m in ms for k in m})
        rows.append(
            dict(
                preset=preset,
                corpus=corpus,
                substrate=substrate,
                seeds=len(ms),
                metrics={k: summarize([m[k] for m in ms if k in m]) for k in names},
            )
        )
    return rows


def markdown_table(rows: list[dict], metrics: list[str] | None = None) -> str:
    if not rows:
        return "(no results)\n"
    metrics = metrics or sorted({k for r in rows for k in r["metrics"]})
    head = "| preset | corpus | substrate | seeds | " + " | ".join(metrics) + " |"
    sep = "|" + "---|" * (4 + len(metrics))
    lines = [head, sep]
    for r in rows:
        cells_ = []
        for m in metrics:
            s = r["metrics"].get(m)
            if s is None:
                cells_.append("-")
            elif s["n"] > 1:
                cells_.append(f"{s['mean']:.3f} ± {s['ci95']:.3f}")
            else:
                cells_.append(f"{s['mean']:.3f}")
        lines.append(f"| {r['preset']} | {r['corpus']} | {r['substrate']} | {r['seeds']} | " + " | ".join(cells_) + " |")
    return "\n".join(lines) + "\n"


def _cell_task(cfg: dict, cell: dict, corpus: dict, root: str, verbose: bool, base: RunConfig) -> str:
    """One cell in a worker process (see :func:`run_ablation`); returns its key."""
    overrides = cfg.pop("overrides")
    c = Cell(**cell)
    corp = Corpus(corpus["spec"], Path(corpus["data_dir"]), corpus["tokenizer_dir"],
                  Path(corpus["world_dir"]) if corpus["world_dir"] else None)
    run_cell(AblationConfig(**cfg, overrides=overrides), c, corp, Path(root),
             log=(lambda m: print(m, flush=True)) if verbose else (lambda m: None), base=base)
    return c.key


def run_ablation(cfg: AblationConfig, log: Callable[[str], None] = print, keep_models: bool = False,
                 jobs: int = 1, threads: int = 1, base: RunConfig | None = None) -> dict:
    """Run (or resume) every cell of the grid, then aggregate; writes ``ablation.json`` and ``.md``.

    ``base``: the run config every cell starts from, typed (the demo passes its own); default
    :func:`base_run_config` (the recipe with the grid's ``[overrides]``). It is recorded in
    ``config.json`` and ``ablation.json`` as ``run_config``.

    ``jobs`` > 1 trains that many unfinished cells at a time, each in its own process with
    ``threads`` torch threads (:func:`~substrate_lm.experiments.parallel.run_tasks`); every cell
    seeds its own training and evaluation, so the results equal those of ``jobs=1``. Models of
    cells trained in a worker are not kept in memory (``keep_models``): reload them from
    ``model_dir``.
    """
    cfg.validate()
    jobs = check_jobs(jobs)
    base = base if base is not None else base_run_config(cfg)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "config.json", {**asdict(cfg), "run_config": base.to_dict()}, default=str)
    corpora = {c: prepare_corpus(c, root, cfg.data_seed, cfg.langs, log, tokenizer=cfg.tokenizer, world=cfg.world)
               for c in cfg.corpora}
    grid = cells(cfg)
    pending = [c for c in grid if not (root / "cells" / c.key / "result.json").is_file()]
    if jobs > 1 and len(pending) > 1:
        log(f"training {len(pending)} cells, {jobs} at a time (one process each, {threads} thread(s))")
        corpus_of = {spec: {"spec": c.spec, "data_dir": str(c.data_dir), "tokenizer_dir": c.tokenizer_dir,
                            "world_dir": str(c.world_dir) if c.world_dir else None} for spec, c in corpora.items()}
        run_tasks(_cell_task, [(asdict(cfg), asdict(c), corpus_of[c.corpus], str(root), log is print, base)
                               for c in pending], jobs=jobs, threads=threads)
    results = []
    for i, cell in enumerate(grid, 1):
        done = (root / "cells" / cell.key / "result.json").is_file()
        log(f"cell {i}/{len(grid)}: {cell.key}" + (" (done, skipped)" if done else ""))
        results.append(run_cell(cfg, cell, corpora[cell.corpus], root, log, keep_model=keep_models, base=base))
    rows = aggregate(results)
    summary = dict(config=asdict(cfg), run_config=base.to_dict(), cells=[r["key"] for r in results], groups=rows)
    atomic_write_json(root / "ablation.json", summary, default=str)
    (root / "ablation.md").write_text(markdown_table(rows), encoding="utf-8")
    return dict(summary, results=results, corpora=corpora)
