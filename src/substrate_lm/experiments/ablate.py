"""Ablations: substrates x seeds x presets x corpora, trained identically, evaluated, aggregated.

A grid is described by a TOML file (every key, its meaning and a worked real-text example:
``docs/ablate.md``; ``substrate-lm ablate --help-config`` lists them)::

    [ablation]
    out = "runs/ablation"          # everything goes here; rerunning resumes
    recipe = "tiny"                # base training recipe (name or TOML path)
    substrates = ["bits", "16-bit", "uni-glyph", "unfrozen"]
    seeds = [0, 1, 2]
    presets = ["tiny"]
    corpora = ["world:2MB"]        # world:SIZE (the built-in world) or a prepared data folder
    heldout = ["data/wiki-heldout", "essays.txt"]  # scored (bpc, per source) for every cell
    benches = ["world-mc", "world-short"]
    task_files = ["my-mc.jsonl"]   # your own eval tasks (JSONL), run for every cell
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

Held-out data (``heldout``: prepared folders, scored per data source, or text files) and eval tasks
(``benches``, ``task_files``) added to a finished grid are evaluated on each cell's exported model
when the grid is run again; the training is not repeated. Cells and corpora are named without
absolute paths (a prepared folder by its folder name), so ``ablation.md`` can be shared as it is.
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

from ..data import TokenShards, prepare_data
from ..data.folder import is_prepared, load_meta
from ..errors import SubstrateError
from ..evaluation import evaluate_models, perplexity, perplexity_shards
from ..evaluation.datasets import parse_benches, register_task_file
from ..evaluation.perplexity import read_text
from ..export import export_model
from ..loading import load_model_dir, load_tokenizer
from ..fsutil import atomic_write_json, read_json
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
    """One ablation grid: presets x corpora x substrates x seeds, trained alike, evaluated alike
    (docs/ablate.md)."""

    out: str = "runs/ablation"
    """Output folder: corpora/, cells/<cell>/ (run, model, result.json), ablation.json, ablation.md. A
    rerun resumes: finished cells are skipped, an interrupted one continues from its checkpoint."""
    recipe: str = "tiny"
    """Training recipe every cell starts from: a recipe name (tiny, small, paper-1024-bit, ...) or a TOML
    file; the [overrides] table changes its keys for every cell."""
    substrates: list[str] = field(default_factory=lambda: ["bits", "16-bit", "unfrozen"])
    """Substrate specs compared (bits, 16-bit, uni-glyph, unfrozen, 1024-float, ...); one grid axis."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Training seeds (backbone init and batch order); every metric gets its mean and Student-t CI95 over
    them (2 or more seeds for a CI)."""
    presets: list[str] = field(default_factory=lambda: ["tiny"])
    """Model presets (see `substrate-lm info --presets`); one grid axis."""
    corpora: list[str] = field(default_factory=lambda: ["world:2MB"])
    """Training corpora: world:SIZE (the built-in world, generated with its tokenizer) or a folder from
    `substrate-lm data prepare` (real text; its tokenizer is used). A folder is named by its folder
    name in cell names and tables."""
    heldout: list[str] = field(default_factory=list)
    """Held-out data scored for every cell (bits per character, perplexity): a folder from `data prepare`
    (its heldout_split, overall and per data source; it must be tokenised with the corpus's tokenizer)
    or a text / JSONL file (any tokenizer). Named by its file or folder name."""
    heldout_split: str = "val"
    """Split of the held-out folders that is scored: val (default; per source) or train (one stream)."""
    heldout_window: int | None = None
    """Tokens per scoring window of the held-out data (none: the model's context, at most 1024)."""
    heldout_max_chars: int | None = None
    """Score at most this many characters of each held-out text file (none: all of it)."""
    benches: list[str] = field(default_factory=lambda: ["world-mc", "world-short"])
    """Named eval tasks run for every cell (see `substrate-lm eval --help`): world-mc and world-short
    (world corpora only: skipped for a data folder), mmlu, arc-e, ... (local files in bench_data_dir)."""
    task_files: list[str] = field(default_factory=list)
    """Your own eval tasks: JSONL files (multiple choice or short answer, as `eval --task-file`), each
    run for every cell under its file name."""
    bench_data_dir: str = ""
    """Folder of local benchmark files for the named benches (as `eval --data-dir`); empty: the hub."""
    protocol: str = "both"
    """How the benches are scored: paper (answers generated, n_runs times), loglik (options scored by
    log-likelihood) or both."""
    n_runs: int = 3
    """Repetitions of the paper (generation) protocol per cell."""
    limit: int | None = 60
    """At most this many items per bench (none: all)."""
    data_seed: int = 0
    """Seed of the generated world corpus (shared by every cell)."""
    langs: list[str] = field(default_factory=lambda: ["en", "ru", "zh"])
    """Languages of the generated world and its tokenizer (world corpora only)."""
    tokenizer: str = "bvv241"
    """Tokenizer layout of world corpora: bvv241 (the published 65,536 ids) or compact (the world's
    characters and n-grams only)."""
    world: dict[str, Any] = field(default_factory=dict)
    """Settings of the generated world ({entities_per_cat = 6, qa_fraction = 0.3, ...}; world corpora)."""
    sample_prompts: list[str] | None = None
    """Prompts the cells' training samples continue (log.sample_prompts). Unset: the recipe's own, except
    that a world recipe's prompts (the world's `Q: `) are dropped on a data-folder corpus."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Run-config keys applied to the recipe for every cell (the [overrides] table: "train.steps" = 300)."""

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise SubstrateError(f"ablation.limit must be >= 1 (or none for all items), got {self.limit}")
        for name in ("substrates", "seeds", "presets", "corpora"):
            if not getattr(self, name):
                raise SubstrateError(f"ablation.{name} is empty; list at least one value")
        if self.heldout_split not in ("val", "train"):
            raise SubstrateError(f"ablation.heldout_split {self.heldout_split!r} is not one of val, train")
        if self.heldout_window is not None and self.heldout_window < 2:
            raise SubstrateError(f"ablation.heldout_window must be >= 2 tokens (or none), got {self.heldout_window}")
        if self.heldout_max_chars is not None and self.heldout_max_chars < 1:
            raise SubstrateError(f"ablation.heldout_max_chars must be >= 1 (or none), got {self.heldout_max_chars}")
        for path in self.heldout:
            p = Path(path)
            if not p.exists():
                raise SubstrateError(f"ablation.heldout {path} does not exist; give a prepared data folder or a "
                                     "text / JSONL file")
            if p.is_dir() and not is_prepared(p):
                raise SubstrateError(f"ablation.heldout {path} is a folder but not a finished prepared data folder; "
                                     "run substrate-lm data prepare on it (or give a text file)")
        for path in self.task_files:
            if not Path(path).is_file():
                raise SubstrateError(f"ablation.task_files {path} is not a file; give a JSONL task file")
        if self.bench_data_dir and not Path(self.bench_data_dir).is_dir():
            raise SubstrateError(f"ablation.bench_data_dir {self.bench_data_dir} is not a folder")
        for name, values in (("corpora", [corpus_name(c) for c in self.corpora]),
                             ("heldout", [heldout_name(h) for h in self.heldout])):
            if len(set(values)) != len(values):
                raise SubstrateError(f"ablation.{name}: two entries have the same name "
                                     f"({', '.join(values)}); rename a folder or file")
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
        return f"{self.preset}__{slug(corpus_name(self.corpus))}__{slug(self.substrate)}__seed{self.seed}"

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.preset, self.corpus, self.substrate)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def corpus_name(spec: str) -> str:
    """The name of a corpus in cell names and tables: ``world:SIZE`` as it is, a prepared data folder
    by its folder name (never an absolute path)."""
    if spec.startswith("world:"):
        return spec
    return Path(spec.rstrip("/\\")).name or spec


def heldout_name(path: str) -> str:
    """The name of held-out data in metric names: its folder name, or its file name without extension."""
    p = Path(path.rstrip("/\\"))
    return (p.name if p.is_dir() else p.stem) or path


def source_name(spec: str | None) -> str:
    """A ``data prepare`` source in metric names: ``KIND:PATH`` or a bare path -> the file or folder name
    (``hf:NAME`` sources keep their name)."""
    if not spec:
        return "all"
    if spec.startswith("hf:"):
        return spec
    kind, sep, rest = spec.partition(":")
    loc = rest if sep and kind.isalpha() and len(kind) > 1 else spec
    return Path(loc.split("?", 1)[0].rstrip("/\\")).name or spec


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


def cell_sample_prompts(base: RunConfig, corpus: Corpus, prompts: list[str] | None = None,
                        keep: bool = False) -> list[str]:
    """The prompts a cell's training samples continue: ``prompts`` when given; else the base config's,
    unless the base trains on the built-in world (``data.world``) and the cell's corpus is a data
    folder: a world recipe's prompts (``Q: ``) would only show the world's format leaking into a
    real-text grid, so that cell samples nothing. ``keep``: the prompts were set on purpose
    (``[overrides] "log.sample_prompts"``) and stay."""
    if prompts is not None:
        return list(prompts)
    if keep or corpus.world_dir is not None or not base.data.world:
        return list(base.log.sample_prompts)
    return []


def cell_run_config(base: RunConfig, cell: Cell, corpus: Corpus, cell_dir: Path,
                    sample_prompts: list[str] | None = None) -> RunConfig:
    """The training config of one cell: ``base`` (:func:`base_run_config`, or the demo's typed
    config) with the cell's four values, its corpus and its folder; ``base`` is not changed.
    ``sample_prompts``: see :func:`cell_sample_prompts` (None: the base's, world prompts dropped on a
    data folder)."""
    run = copy.deepcopy(base)
    replace = dataclasses.replace
    prompts = cell_sample_prompts(base, corpus, sample_prompts)
    return replace(
        run,
        run=replace(run.run, name=cell.key, dir=str(cell_dir / "run")),
        model=replace(run.model, preset=cell.preset, substrate=cell.substrate, tokenizer=corpus.tokenizer_dir),
        data=replace(run.data, path=str(corpus.data_dir), world="", sources=[]),
        train=replace(run.train, seed=cell.seed),
        log=replace(run.log, sample_prompts=prompts,
                    sample_interval=run.log.sample_interval if prompts else 0),
    )


def _first_last_loss(history: list[dict]) -> tuple[float | None, float | None]:
    train = [h["loss"] for h in history if h.get("event") == "train" and "loss" in h]
    return (train[0], train[-1]) if train else (None, None)


def register_tasks(cfg: AblationConfig) -> list[str]:
    """Register the grid's ``task_files`` as named benches (idempotent); returns every bench a cell of
    any corpus may run (``benches`` plus the task files' names), checked."""
    names = [register_task_file(path) for path in cfg.task_files]
    benches = parse_benches(list(cfg.benches)) if cfg.benches else []
    return benches + [n for n in names if n not in benches]


def cell_benches(cfg: AblationConfig, corpus: Corpus) -> list[str]:
    """The benches one cell runs: the world's only on a world corpus."""
    return [b for b in register_tasks(cfg) if not b.startswith("world") or corpus.world_dir is not None]


def evaluate_heldout(model, tok, cfg: AblationConfig, names: list[str] | None = None,
                     log: Callable[[str], None] = print, key: str = "") -> dict[str, dict]:
    """Score the grid's held-out data with one model: ``{name: figures}`` (``bpc``, ``perplexity``,
    ``nll``, ``tokens_scored``, ``characters`` and for a prepared folder ``sources``: the same per
    data source, named by :func:`source_name`). ``names``: only these (default: all)."""
    out: dict[str, dict] = {}
    for path in cfg.heldout:
        name = heldout_name(path)
        if names is not None and name not in names:
            continue
        log(f"[{key}] held-out {name}")
        if Path(path).is_dir():
            res = perplexity_shards(model, path, tokenizer=tok, split=cfg.heldout_split,
                                    window=cfg.heldout_window, per_source=None)
            sources = [{**r, "name": source_name(r["spec"])} for r in res.get("sources") or []]
            for r in sources:
                r.pop("spec", None)
            res = {k: v for k, v in res.items() if k not in ("data", "sources")}
            if sources:
                res["sources"] = sources
        else:
            text = read_text(path, cfg.heldout_max_chars)
            res = perplexity(model, tok, text, window=cfg.heldout_window)
        out[name] = res
    return out


def _evaluate(cfg: AblationConfig, cell: Cell, model, tok, corpus: Corpus, benches: list[str],
              log: Callable[[str], None]) -> dict | None:
    if not benches:
        return None
    log(f"[{cell.key}] evaluating {', '.join(benches)} ({cfg.protocol})")
    return evaluate_models(
        {cell.substrate: (model, tok)},
        benches,
        protocol=cfg.protocol,
        n_runs=cfg.n_runs,
        limit=cfg.limit,
        seed=0,
        sample_size="all",
        data_dir=cfg.bench_data_dir or None,
        world_dir=corpus.world_dir,
    )


def _bench_results(evaluation: dict | None) -> dict:
    """``{bench: {protocol: ...}}`` of a cell's one model (empty when nothing was evaluated)."""
    models = (evaluation or {}).get("models") or {}
    return next(iter(models.values())).get("results") or {} if models else {}


def complete_cell(cfg: AblationConfig, cell: Cell, corpus: Corpus, result: dict, result_path: Path,
                  log: Callable[[str], None] = print) -> dict:
    """A finished cell with the held-out data and benches the grid now asks for and its
    ``result.json`` lacks: they are evaluated on the cell's exported model (no retraining) and the
    result rewritten. Returns the (possibly updated) result."""
    have = result.get("heldout") or {}
    missing_heldout = [heldout_name(h) for h in cfg.heldout if heldout_name(h) not in have]
    done = _bench_results(result.get("evaluation"))
    missing_benches = [b for b in cell_benches(cfg, corpus) if b not in done]
    if not missing_heldout and not missing_benches:
        return result
    model_dir = result_path.parent / "model"
    model = load_model_dir(model_dir)
    tok = load_tokenizer(model_dir)
    model.eval()
    if missing_heldout:
        result["heldout"] = {**have, **evaluate_heldout(model, tok, cfg, missing_heldout, log, cell.key)}
    if missing_benches:
        new = _evaluate(cfg, cell, model, tok, corpus, missing_benches, log)
        if result.get("evaluation") and new:
            results = next(iter(result["evaluation"]["models"].values())).setdefault("results", {})
            results.update(_bench_results(new))
            result["evaluation"].setdefault("benchmarks", {}).update(new.get("benchmarks") or {})
        else:
            result["evaluation"] = new
    atomic_write_json(result_path, result, default=str)
    return result


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
    run config the cell starts from (default: :func:`base_run_config` of ``cfg``). A finished cell is
    not trained again; held-out data or benches added to the grid since are evaluated on its model
    (:func:`complete_cell`)."""
    cell_dir = root / "cells" / cell.key
    result_path = cell_dir / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        return complete_cell(cfg, cell, corpus, result, result_path, log)
    cell_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    base = base if base is not None else base_run_config(cfg)
    prompts = cell_sample_prompts(base, corpus, cfg.sample_prompts, keep="log.sample_prompts" in cfg.overrides)
    run = cell_run_config(base, cell, corpus, cell_dir, sample_prompts=prompts)
    log(f"[{cell.key}] training {run.train.steps} steps")
    res = Trainer(run, resume=True).fit()
    model, tok = res.model, res.tokenizer
    model.eval()
    # the frozen table must be exactly the one installed at init (fingerprint in the config)
    model.verify_substrate()
    export_model(model, cell_dir / "model", tokenizer=tok, overwrite=True)
    evaluation = _evaluate(cfg, cell, model, tok, corpus, cell_benches(cfg, corpus), log)
    heldout = evaluate_heldout(model, tok, cfg, log=log, key=cell.key)
    first, last = _first_last_loss(res.history)
    result = dict(
        cell={**asdict(cell), "corpus_name": corpus_name(cell.corpus)},
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
        heldout=heldout,
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
    for name, res in (result.get("heldout") or {}).items():
        for k in ("bpc", "perplexity"):
            if res.get(k) is not None:
                out[f"heldout:{name}/{k}"] = float(res[k])
        for src in res.get("sources") or []:
            if src.get("bpc") is not None:
                out[f"heldout:{name}/{src['name']}/bpc"] = float(src["bpc"])
    return out


def aggregate(results: list[dict]) -> list[dict]:
    """One row per (preset, corpus, substrate): every metric's mean, sd and CI95 across seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["cell"]
        groups.setdefault((c["preset"], c.get("corpus_name") or corpus_name(c["corpus"]), c["substrate"]),
                          []).append(cell_metrics(r))
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


def check_heldout(cfg: AblationConfig, corpora) -> None:
    """Refuse, before any training, a held-out folder that a corpus's cells cannot score: another
    tokenizer than the corpus's, or an empty split."""
    for path in cfg.heldout:
        if not Path(path).is_dir():
            continue
        shards = TokenShards(path, cfg.heldout_split)
        if len(shards) == 0:
            raise SubstrateError(f"ablation.heldout {path}: its {cfg.heldout_split} split is empty; prepare it "
                                 "with a --val-fraction above 0 (or set ablation.heldout_split)")
        for corpus in corpora:
            try:
                shards.check_compatible(tokenizer=corpus.tokenizer_dir)
            except SubstrateError as exc:
                raise SubstrateError(f"ablation.heldout {path} cannot be scored by the cells of corpus "
                                     f"{corpus_name(corpus.spec)}: {exc}; or give held-out text as a file") from None


#: keys of a grid's ``config.json`` that may change between runs in one folder: they add or select
#: cells (keyed by preset, corpus, substrate and seed), or add held-out data and benches that are
#: scored on the finished cells' models (:func:`complete_cell`); the rest would change what a
#: finished cell holds
GRID_KEYS = ("out", "seeds", "substrates", "presets", "heldout", "benches", "task_files")


def check_same_grid(root: Path, record: dict) -> None:
    """Refuse, in one line, a rerun in ``root`` whose settings would change what its finished cells
    hold (training, model, data, evaluation): they would be reused as they are, next to cells
    trained otherwise. Changing the keys of :data:`GRID_KEYS` is allowed."""
    old = read_json(root / "config.json", missing=None, corrupt=None, kind=dict)
    if old is None or not any((root / "cells").glob("*/result.json")):
        return
    changed = sorted(k for k in set(old) | set(record) if k not in GRID_KEYS and k != "run_config"
                     and old.get(k) != record.get(k))
    runs = old.get("run_config") or {}, record.get("run_config") or {}
    changed += sorted(f"{sec}.{k}" for sec in set(runs[0]) | set(runs[1])
                      for k in set(runs[0].get(sec) or {}) | set(runs[1].get(sec) or {})
                      if sec != "run" and (runs[0].get(sec) or {}).get(k) != (runs[1].get(sec) or {}).get(k))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise SubstrateError(f"{root} holds finished cells trained with other settings ({shown}); use another "
                             f"output folder, or remove it to start again")


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
    record = json.loads(json.dumps({**asdict(cfg), "run_config": base.to_dict()}, default=str))
    check_same_grid(root, record)
    atomic_write_json(root / "config.json", record)
    register_tasks(cfg)  # task files and bench names checked before any training
    corpora = {c: prepare_corpus(c, root, cfg.data_seed, cfg.langs, log, tokenizer=cfg.tokenizer, world=cfg.world)
               for c in cfg.corpora}
    check_heldout(cfg, corpora.values())
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
