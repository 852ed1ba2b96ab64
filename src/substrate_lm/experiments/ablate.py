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
CI95 = 1.96 sd / sqrt(n).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ..errors import SubstrateError
from ..fsutil import atomic_write_json

PROTOCOLS = ("paper", "loglik", "both")
TOKENIZERS = ("bvv241", "compact")
# keyword settings of ``generate_world`` an ablation may pass through (``[ablation] world = {...}``)
WORLD_OPTIONS = ("entities_per_cat", "qa_fraction", "val_fraction", "n_questions")


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
        from ..presets import PRESETS, parse_substrate_spec

        for p in self.presets:
            if p not in PRESETS:
                raise SubstrateError(f"unknown preset {p!r} in ablation.presets; choose from {', '.join(PRESETS)}")
        for s in self.substrates:
            try:
                parse_substrate_spec(s, 64)
            except ValueError as exc:
                raise SubstrateError(str(exc)) from None


def load_ablation_config(path: str | os.PathLike, overrides: list[str] | None = None) -> AblationConfig:
    """Read an ablation TOML file; ``overrides`` are ``key=value`` strings for the [ablation] table."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubstrateError(f"ablation config {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SubstrateError(f"{p} is not valid TOML: {exc}") from None
    unknown_tables = set(raw) - {"ablation", "overrides"}
    if unknown_tables:
        raise SubstrateError(f"{p}: unknown table(s) {', '.join(sorted(unknown_tables))}; use [ablation] and [overrides]")
    section = dict(raw.get("ablation", {}))
    known = {f.name for f in fields(AblationConfig)} - {"overrides"}
    for item in overrides or []:
        key, _, value = item.partition("=")
        try:
            section[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            section[key.strip()] = value
    unknown = set(section) - known
    if unknown:
        raise SubstrateError(
            f"{p}: unknown ablation key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(sorted(known))}"
        )
    overrides_table = raw.get("overrides", {})
    if not isinstance(overrides_table, dict):
        raise SubstrateError(f"{p}: [overrides] must be a table of \"key\" = value pairs")
    typed = {key: _typed(key, value) for key, value in section.items()}
    cfg = AblationConfig(**typed, overrides=dict(overrides_table))
    cfg.validate()
    return cfg


_LIST_OF = {"substrates": str, "seeds": int, "presets": str, "corpora": str, "benches": str, "langs": str}
_SCALAR = {"out": str, "recipe": str, "protocol": str, "tokenizer": str, "n_runs": int, "data_seed": int}


def _typed(key: str, value):
    """One [ablation] value (TOML or ``--set`` JSON/string) as its field's type; one-line errors.

    Lists also take a comma string (``--set substrates=bits,16-bit``) or one scalar
    (``--set seeds=3`` is ``[3]``); a string is never split into its characters.
    """
    def one(kind, v):
        if kind is int:
            if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and not v.strip().lstrip("-").isdigit()):
                raise SubstrateError(f"ablation.{key} takes integers, got {value!r}")
            return int(v)
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise SubstrateError(f"ablation.{key} takes strings, got {value!r}")
        return str(v)

    if key in _LIST_OF:
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
        return [one(_LIST_OF[key], v.strip() if isinstance(v, str) else v) for v in items if not (isinstance(v, str) and not v.strip())]
    if key in _SCALAR:
        if isinstance(value, list):
            raise SubstrateError(f"ablation.{key} takes one value, got {value!r}")
        return one(_SCALAR[key], value)
    if key == "limit":
        return None if value in (None, "none", "all") else one(int, value)
    if key == "world":
        if not isinstance(value, dict):
            raise SubstrateError(f"ablation.world takes a table, e.g. world = {{ entities_per_cat = 8 }}; got {value!r}")
        return dict(value)
    return value


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


def compact_layout(world_dir: Path, langs: list[str], top_k: int | None = None):
    """A bvv241-style layout sized to a corpus: monograms ``0 .. max code point`` (still
    ``id == code point``), 32 special ids after them, then just enough n-gram ids.

    The published layout spends 65,536 ids (and a 65,536-wide output head) on every character of
    the BMP; a world in Latin and Cyrillic script needs about 1,300 monograms. Token strings (so
    glyph tables) and the tokenisation itself stay those of the bvv241 construction: the same
    n-gram selection and merges, only the id space is smaller.

    Raises:
        SubstrateError: when the corpus uses a code point at or above the surrogate block (CJK
            text): there the compact layout would save little; use the bvv241 layout.
    """
    from ..tokenizer.layout import BVV241_2_3, VocabLayout

    top = 0
    for name in ("train.jsonl", "val.jsonl", "questions/mc.jsonl", "questions/short.jsonl"):
        path = world_dir / name
        if path.is_file():
            # the world writes its JSON lines with ensure_ascii=False: the file's characters are the text's
            top = max(top, max(map(ord, path.read_text(encoding="utf-8")), default=0))
    if top >= 0xD800:
        raise SubstrateError(
            f"the corpus uses code point U+{top:04X}; the compact tokenizer covers scripts below U+D800 "
            "without CJK (drop zh from the languages or use tokenizer = \"bvv241\")"
        )
    k = BVV241_2_3.top_k if top_k is None else int(top_k)
    capacity = k * len(BVV241_2_3.ns) * max(1, len(langs))
    first_special = top + 1
    first_ngram = first_special + 32
    return VocabLayout(
        name=f"compact-{len(langs)}x{k}",
        vocab_size=first_ngram + capacity,
        monogram_ranges=((0, top),),
        special_range=(first_special, first_ngram - 1),
        ngram_ranges=((first_ngram, first_ngram + capacity - 1),),
        ns=BVV241_2_3.ns,
        top_k=k,
    )


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
    :func:`compact_layout`). ``world``: keyword settings of :func:`~substrate_lm.world.generate_world`
    (``entities_per_cat``, ``qa_fraction``, ...). Any other spec is a folder prepared by
    ``substrate-lm data prepare`` and is used as it is.
    """
    if spec.startswith("world:"):
        size = spec.split(":", 1)[1] or "2MB"
        base = root / "corpora" / corpus_dir_name(spec, tokenizer, world)
        world_dir, tok_dir, data_dir = base / "world", base / "tokenizer", base / "data"
        if not (world_dir / "world.json").is_file():
            from ..world import generate_world

            log(f"generating the semantic world ({size}, {','.join(langs)})")
            generate_world(world_dir, size=size, langs=tuple(langs), seed=data_seed, **(world or {}))
        if not (tok_dir / "tokenizer.json").is_file():
            from ..tokenizer import build_from_corpus, save_tokenizer

            layout = {} if tokenizer == "bvv241" else {"layout": compact_layout(world_dir, langs)}
            log(f"building its {'bvv241' if not layout else layout['layout'].name}-layout tokenizer from the corpus n-grams")
            save_tokenizer(build_from_corpus([world_dir / "train.jsonl"], langs=list(langs), **layout), tok_dir,
                           overwrite=True)
        if not (data_dir / "stats.json").is_file():
            from ..data import prepare_data

            log("tokenising into uint16 shards")
            prepare_data([f"world:{world_dir}"], str(tok_dir), data_dir, seed=data_seed, progress=False)
        return Corpus(spec, data_dir, str(tok_dir.resolve()), world_dir)
    data_dir = Path(spec)
    meta = data_dir / "meta.json"
    if not meta.is_file():
        raise SubstrateError(
            f"corpus {spec!r} is neither world:SIZE nor a prepared data folder (no {meta}); "
            "run substrate-lm data prepare first"
        )
    tok = (json.loads(meta.read_text(encoding="utf-8")).get("tokenizer") or {}).get("name")
    if not tok:
        raise SubstrateError(f"{meta} names no tokenizer; prepare the data again")
    return Corpus(spec, data_dir, tok, None)


# -- running -------------------------------------------------------------------------------------


def cell_run_config(cfg: AblationConfig, cell: Cell, corpus: Corpus, cell_dir: Path):
    """The training config of one cell: the recipe + overrides + the cell's four values."""
    from ..training import load_config

    flat = [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg.overrides.items()]
    run = load_config(cfg.recipe, flat)
    run.run.name = cell.key
    run.run.dir = str(cell_dir / "run")
    run.model.preset = cell.preset
    run.model.substrate = cell.substrate
    run.model.tokenizer = corpus.tokenizer_dir
    run.data.path = str(corpus.data_dir)
    run.data.world = ""
    run.data.sources = []
    run.train.seed = cell.seed
    return run


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
) -> dict:
    """Train, export and evaluate one cell; returns (and writes) its ``result.json``."""
    from ..evaluation import evaluate_models
    from ..export import export_model
    from ..training import Trainer

    cell_dir = root / "cells" / cell.key
    result_path = cell_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text(encoding="utf-8"))
    cell_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    run = cell_run_config(cfg, cell, corpus, cell_dir)
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


def summarize(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "ci95": 1.96 * sd / math.sqrt(n), "n": n}


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


def run_ablation(cfg: AblationConfig, log: Callable[[str], None] = print, keep_models: bool = False) -> dict:
    """Run (or resume) every cell of the grid, then aggregate; writes ``ablation.json`` and ``.md``."""
    cfg.validate()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "config.json", asdict(cfg), default=str)
    corpora = {c: prepare_corpus(c, root, cfg.data_seed, cfg.langs, log, tokenizer=cfg.tokenizer, world=cfg.world)
               for c in cfg.corpora}
    grid = cells(cfg)
    results = []
    for i, cell in enumerate(grid, 1):
        done = (root / "cells" / cell.key / "result.json").is_file()
        log(f"cell {i}/{len(grid)}: {cell.key}" + (" (done, skipped)" if done else ""))
        results.append(run_cell(cfg, cell, corpora[cell.corpus], root, log, keep_model=keep_models))
    rows = aggregate(results)
    summary = dict(config=asdict(cfg), cells=[r["key"] for r in results], groups=rows)
    atomic_write_json(root / "ablation.json", summary, default=str)
    (root / "ablation.md").write_text(markdown_table(rows), encoding="utf-8")
    return dict(summary, results=results, corpora=corpora)
