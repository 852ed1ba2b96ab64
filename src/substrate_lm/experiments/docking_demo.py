"""Claim 3 of the demo: the docking port works (composition by logit averaging, and growth).

After A. Bochkov, *Growing Transformers* (arXiv 2507.07129): models trained separately on one
shared *frozen* token-embedding table merge with no architectural change by averaging their
logits, and a deep model can be grown one block at a time on top of frozen lower blocks. This
module runs the three checks of issue 12's claim 3 on the built-in world, end to end, on a CPU::

    from substrate_lm.experiments.docking_demo import run_docking_experiment
    result = run_docking_experiment("runs/demo/docking", quick=False, seeds=(0, 1, 2))
    print("\\n".join(result["findings"]))

What it does (every step a file or folder under ``out_dir``; a rerun skips what is finished):

1. **World and halves.** A small built-in world in English and Russian (few entities, so that the
   facts are seen over many epochs) is generated once (``world/``) and halved (``halves/a``,
   ``halves/b``). The default split (``split="entity"``) gives alternate entities of each category
   to half A and half B; every sentence and question-answer item of a document goes to the half of
   the entities it names (an item naming entities of both halves, e.g. a relation across them, is
   dropped; one naming none goes to both), so both experts read both languages and differ in
   which entities they know. ``split="lang"`` halves by language instead (``halves/en``,
   ``halves/ru``): there each expert has never seen the other script, and logit averaging with it
   costs accuracy on every question (see ``benchmarks/2026-11-30-docking-demo-configs.md``).
   One tokenizer is built from the whole corpus (``tokenizer/``) and each half, and the union,
   is prepared into token shards (``data/<half>``, ``data/all``) by
   :func:`substrate_lm.data.prepare_data`.
   The default tokenizer is a *compact* bvv241-style layout (:data:`COMPACT_LAYOUT`: ``id ==
   code point`` for U+0000-U+04FF, which holds Latin and Cyrillic, the special tokens after it, and
   736 bigram/trigram ids): the world needs no more, and a 2,048-row head instead of 65,536 makes
   the run ~10x cheaper on a CPU. The em dash of the Russian templates is written as ``-`` so that
   every character has an id (``unk_share`` is reported). ``tokenizer="bvv241"`` uses the
   published 65,536-id layout instead.
2. **Composition.** Per seed, two experts (``seed<k>/expert-a``, ``seed<k>/expert-b``) with the
   same backbone shape are trained by the project trainer (:class:`substrate_lm.training.Trainer`),
   one per half, on ONE frozen random-bits table (same substrate seed: the table fingerprints are
   equal). :func:`substrate_lm.docking.compose` averages their logits. The experts and the composed
   model answer the world's held-out-phrasing multiple-choice questions of both halves, in both
   languages (the union; with the entity split a question whose chain of facts crosses the halves
   is answerable by neither expert and is left out, and counted) under the log-likelihood
   protocol (:func:`substrate_lm.evaluation.loglik.run_loglik`, option texts after
   ``Question: ...\\nAnswer:``, chance 25%), and their validation loss is taken on each half's
   validation split (``seed<k>/composition.json``).
3. **Refusal.** Two experts with *trainable* tables (substrate ``unfrozen``) are trained on the two
   halves (``trainable_steps`` steps, first seed only) and handed to ``compose``; its one-line
   refusal is recorded verbatim (``refusal.json``).
4. **Growth.** Per seed, :func:`substrate_lm.docking.run_growth` grows a model block by block to
   ``grow_layers`` blocks on the union data (stage 1 trains a ``grow_first_layers``-block model from
   scratch, every later stage one new block plus the head, the lower blocks frozen, optionally
   adapted by LoRA), and trains a monolithic model of the same depth on the same batches (equal
   tokens); both are scored on the same validation tokens (``seed<k>/grow/``, summary
   ``seed<k>/growth.json``).

Returned dict (also written to ``out_dir/docking.json``; JSON-serialisable)::

    {
      "claim": "docking",
      "quick": bool, "mode": "quick" | "full" | "long", "seeds": [int], "settings": {DockingSettings fields},
      "world": {"entities", "split", "parts": [half, half], "entity_halves": {entity id: "a"|"b"} | None,
                "langs", "questions": {lang: n}, "tokens": {half|"all": {"train", "val"}},
                "vocab_size", "unk_share": {half|"all": share}},
      "composition": {
        "rows": [{"seed", "n_items": {<half>, <half>, "union", "cross_excluded"}, "chance": 25.0,
                  # halves: "a"/"b" (entity split) or "en"/"ru" (language split)
                  "models": {"expert-<half>" (x2) | "composed":
                               {"acc": {<half>, <half>, "union"}, "acc_norm": {...}, "val_loss": {<half>, <half>, "union"}}},
                  "best_expert", "margin_acc",         # composed - best expert, union accuracy (points)
                  "beats_both",                       # composed union acc > each expert's
                  "margin_val_loss",                  # best expert - composed, union val loss (nats)
                  "fingerprint", "same_substrate", "experts": {name: {"half", "substrate_kind", "substrate_frozen",
                  "fingerprint", "steps", "train_loss", "val_loss"}}, "timing"}],
        "aggregate": {"<model>/acc/<part>" | "<model>/val_loss/<part>" | "margin_acc" | "margin_val_loss":
                      {"mean", "sd", "ci95", "n"}},   # ci95 = t(0.975, n-1) sd / sqrt(n) over seeds
        "beats_both_seeds": int, "verdict": bool,          # on the questions (the claim's measure)
        "lower_val_loss_seeds": int, "verdict_val_loss": bool},   # the same criterion on validation loss
      "refusal": {"refused": bool, "message": str | None, "reason": "trainable" | "fingerprint" | "other" | None,
                  "experts": [{"half", "substrate_kind", "substrate_frozen", "fingerprint", ...}], "steps", "seed", "timing"},
      "growth": {
        "rows": [{"seed", "grown_val_loss", "monolithic_val_loss", "ratio", "within_10pct", "tokens_grown",
                  "tokens_monolithic", "stages": [{"depth", "val_loss", "trained", "lower_blocks_unchanged"}],
                  "lower_blocks_unchanged", "same_substrate", "timing"}],
        "aggregate": {"grown_val_loss" | "monolithic_val_loss" | "ratio": {"mean", "sd", "ci95", "n"}},
        "within_seeds": int, "verdict": bool},
      "verdicts": {"composition": bool, "composition_val_loss": bool, "refusal": bool, "growth": bool},
      "findings": [str],                   # each sentence computed from the numbers above
      "timing": {"this_call": {part: {"wall_s", "cpu_s"}, "total": ...},   # cpu_s = process CPU time (all threads)
                 "parts": {"composition/seed<k>" | "growth/seed<k>" | "refusal": {"wall_s", "cpu_s"}},
                 "threads": int},                # parts: measured when computed (kept on a resume)
    }

Verdicts (computed, never assumed): *composition* holds when the composed model beats both
experts on the union of the questions in every seed and the lower end of the CI95 of its margin
over the better expert is above 0 (*composition_val_loss*: the same on the validation loss of
both halves); *refusal* when ``compose`` raised for the trainable-table experts; *growth*
when the grown model's validation loss is at most 1.10 x the monolithic one in every seed and the
upper end of the CI95 of the ratio is at most 1.10.

Every part runs in its own process when ``jobs`` > 1 (:mod:`.parallel`), with the same numbers.
Settings: :meth:`DockingSettings.full` (three seeds: about 10 CPU-minutes, see
``benchmarks/2026-12-01-demo-configs.md``; about half of that in wall time with ``jobs=2``) and
:meth:`DockingSettings.quick` (a smoke run: about 60 CPU-seconds for three seeds; too short for
the effects), :meth:`DockingSettings.long` (longer training; for ``demo --long``);
``**overrides`` change any field (``steps=400``), and a bad key or value is a one-line
:class:`SubstrateError`. A rerun in the same ``out_dir`` with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..data.folder import is_prepared, load_meta, load_stats
from ..errors import SubstrateError
from ..fsutil import atomic_write_json, atomic_write_text
from ..settings import SettingsEngine
from .compact import build_tokenizer, compact_layout
from .findings import summarize

LANGS = ("en", "ru")
SPLITS = {"entity": ("a", "b"), "category": ("a", "b"), "lang": ("en", "ru")}
#: the categories of half A under the category split (B holds the others); relations inside a half:
#: animal/plant -> city (A), tool -> person, person -> person (B); person -> city and food -> plant cross
CATEGORY_HALF_A = ("animal", "plant", "city")
LABELS = {"a": "entity half A", "b": "entity half B", "en": "English", "ru": "Russian"}

CHANCE = 25.0
GROWTH_TOLERANCE = 0.10
# characters of the world's templates outside the compact layout, and what they are written as
TEXT_FIXES = {"\u2014": "-", "\u2013": "-", "\u2026": "...", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def _labels(split: str | None) -> dict[str, str]:
    """:data:`LABELS`, with the category split's halves named by their categories."""
    if split == "category":
        from ..world.ontology import CATEGORIES

        rest = [c for c in CATEGORIES if c not in CATEGORY_HALF_A]
        return {**LABELS, "a": f"category half A ({', '.join(CATEGORY_HALF_A)})", "b": f"category half B ({', '.join(rest)})"}
    return LABELS


#: the compact bvv241-style layout of the docking experiment (see the module docstring)
COMPACT_LAYOUT = compact_layout(0x04FF, top_k=150, ngram_ids=0x800 - 0x0500 - 32, name="bvv241-compact-en-ru")


@dataclass
class DockingSettings:
    """Sizes of one docking experiment; :meth:`quick` and :meth:`full` are the built-in ones."""

    world_size: str = "300KB"
    """Text of the world over both languages (more text = more varied sentences about the same
    facts: less overfitting of the experts)."""
    entities_per_cat: int = 6
    """Entities per category (6 categories; 6 is the world's minimum)."""
    qa_fraction: float = 0.5
    """Share of training documents that are question-answer documents (training phrasings only)."""
    n_questions: int = 150
    """Held-out questions per language (the union has twice as many)."""
    data_seed: int = 0
    """Seed of the world (shared by every seed of the experiment)."""
    split: str = "entity"
    """How the world is halved: ``entity`` (alternate entities of every category, both languages in
    each half), ``category`` (disjoint categories: :data:`CATEGORY_HALF_A` vs the rest) or ``lang``
    (English facts vs Russian facts)."""
    balanced_halves: bool = True
    """With the entity split: both halves of every category carry the same attribute values (each
    half its own permutation), so an expert's ignorance of the other half's entities is not a bias
    against their values (with values balanced over the whole category each expert ranks the
    other half's values last and falls below chance there)."""
    tokenizer: str = "compact"
    """``compact`` (:data:`COMPACT_LAYOUT`, 2,048 ids) or ``bvv241`` (the published 65,536 ids)."""
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    block_size: int = 128
    steps: int = 600
    """Optimizer steps of each expert."""
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-2
    min_lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.1
    precision: str = "fp32"
    trainable_steps: int = 60
    """Steps of each trainable-table expert (they only have to exist to be refused)."""
    grow_layers: int = 2
    """Depth of the grown model (one block per stage) and of its monolithic baseline."""
    grow_steps: int = 200
    """Steps of each growth stage (see grow_first_steps)."""
    grow_lr: float = 1e-2
    grow_first_layers: int = 1
    """Blocks of the first growth stage's model (trained from scratch); one block per later stage."""
    grow_first_steps: int = 0
    """Steps of the first growth stage (0: grow_steps); the monolithic model trains as many steps as all
    stages together."""
    grow_lora_rank: int = 0
    """LoRA rank on the frozen lower blocks in later growth stages, merged at each stage's end (0: off)."""
    eval_batches: int = 8
    """Validation batches (batch_size x seq_len tokens each) for the validation losses."""

    @classmethod
    def quick(cls) -> "DockingSettings":
        return cls(world_size="60KB", steps=60, trainable_steps=10, grow_steps=20, warmup=5, n_questions=40,
                   eval_batches=2)

    @classmethod
    def full(cls) -> "DockingSettings":
        # growth: a 2-block first stage (600 steps), then a third block on top (100 steps) against a
        # 3-block monolithic model (700 steps); benchmarks/2026-12-01-demo-configs.md
        return cls(grow_layers=3, grow_first_layers=2, grow_first_steps=600, grow_steps=100)

    @classmethod
    def long(cls) -> "DockingSettings":
        """``demo --long``: experts train 1,000 steps; growth trains its 2-block first stage
        1,500 steps and the third block 300 (the monolithic model 1,800), long enough for both to
        reach the world's validation floor (benchmarks/2026-12-01-demo-configs-3.md)."""
        return cls(steps=1000, warmup=50, grow_layers=3, grow_first_layers=2, grow_first_steps=1500,
                   grow_steps=300)

    def apply(self, overrides: dict) -> "DockingSettings":
        """Change fields from ``{"steps": 400}`` (bare names or ``docking.`` keys; text is read by
        the field's type) through the settings engine; one-line errors. Returns ``self``."""
        items = {(k if str(k).startswith("docking.") else f"docking.{k}"): v for k, v in overrides.items()}
        return DOCKING_ENGINE.update(self, items)

    def validate(self) -> None:
        positive = ("entities_per_cat", "n_questions", "d_model", "n_layer", "n_head", "block_size", "steps",
                    "batch_size", "seq_len", "trainable_steps", "grow_layers", "grow_steps", "eval_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise SubstrateError(f"docking setting {name} must be >= 1, got {getattr(self, name)}")
        if self.split not in SPLITS:
            raise SubstrateError(f"docking setting split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.tokenizer not in ("compact", "bvv241"):
            raise SubstrateError(f"docking setting tokenizer must be compact or bvv241, got {self.tokenizer!r}")
        if self.precision not in ("fp32", "bf16"):
            raise SubstrateError(f"docking setting precision must be fp32 or bf16, got {self.precision!r}")
        if self.seq_len > self.block_size:
            raise SubstrateError(f"docking setting seq_len {self.seq_len} exceeds block_size {self.block_size}")
        if self.d_model % self.n_head:
            raise SubstrateError(f"docking setting d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        if self.grow_layers < 2:
            raise SubstrateError("docking setting grow_layers must be >= 2 (growth needs at least two stages)")
        if not 1 <= self.grow_first_layers < self.grow_layers:
            raise SubstrateError(f"docking setting grow_first_layers must be in 1..grow_layers-1 ({self.grow_layers - 1}), "
                                 f"got {self.grow_first_layers}")
        if self.grow_first_steps < 0 or self.grow_lora_rank < 0:
            raise SubstrateError(f"docking settings grow_first_steps and grow_lora_rank must be >= 0 (got "
                                 f"{self.grow_first_steps}, {self.grow_lora_rank})")
        if not (self.lr > 0 and self.grow_lr > 0 and 0 <= self.min_lr <= self.lr):
            raise SubstrateError(f"docking settings need lr, grow_lr > 0 and 0 <= min_lr <= lr (got {self.lr}, "
                                 f"{self.grow_lr}, {self.min_lr})")
        if not 0.0 <= self.qa_fraction <= 0.5:
            raise SubstrateError(f"docking setting qa_fraction must be in [0, 0.5], got {self.qa_fraction}")
        if self.warmup < 0 or self.warmup >= self.steps:
            raise SubstrateError(f"docking setting warmup must be in [0, steps), got {self.warmup}")


#: the settings engine of the docking experiment (flat: ``docking.KEY``)
DOCKING_ENGINE: SettingsEngine[DockingSettings] = SettingsEngine(DockingSettings, name="docking",
                                                                 check=lambda s: s.validate())


# ----------------------------------------------------------------------------------------------
# small helpers


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a damaged part is recomputed


class _Clock:
    """Wall and process-CPU seconds per part (CPU counts every thread of this process)."""

    def __init__(self):
        self.parts: dict[str, dict[str, float]] = {}

    @contextmanager
    def part(self, name: str):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            p = self.parts.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
            p["wall_s"] = round(p["wall_s"] + time.perf_counter() - w0, 2)
            p["cpu_s"] = round(p["cpu_s"] + time.process_time() - c0, 2)


def _fmt_ci(s: dict, digits: int = 1) -> str:
    if s.get("mean") is None:
        return "n/a"
    if s["n"] > 1:
        return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


# ----------------------------------------------------------------------------------------------
# data


def _fix_text(text: str) -> str:
    for a, b in TEXT_FIXES.items():
        text = text.replace(a, b)
    return text


def entity_halves(world: dict, split: str = "entity") -> dict[str, str]:
    """``{entity id: "a" | "b"}``: with ``split="entity"`` alternate entities of each category (so
    both halves hold every category and half of its entities); with ``split="category"`` the
    entities of :data:`CATEGORY_HALF_A` go to A and all others to B (disjoint categories, so
    disjoint attribute values apart from the universal size)."""
    side: dict[str, str] = {}
    count: dict[str, int] = {}
    for e in world["entities"]:
        if split == "category":
            side[e["id"]] = "a" if e["category"] in CATEGORY_HALF_A else "b"
            continue
        k = count.get(e["category"], 0)
        side[e["id"]] = "ab"[k % 2]
        count[e["category"]] = k + 1
    return side


class _EntitySplitter:
    """Assigns each sentence / question-answer item of a document to the entity half of every
    entity it names (None when it names entities of both halves: such units are dropped)."""

    def __init__(self, world: dict, split: str = "entity"):
        import re

        self.side = entity_halves(world, split)
        names = {}
        for e in world["entities"]:
            for lang in LANGS:
                names[e["names"][lang]] = e["id"]
        self.names = names
        alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        self.pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")
        self.sentence_end = re.compile(r"(?<=[.!?])\s+")

    def half_of(self, unit: str) -> str | None:
        sides = {self.side[self.names[m]] for m in self.pattern.findall(unit)}
        if len(sides) > 1:
            return None
        return sides.pop() if sides else "both"

    def split(self, text: str) -> dict[str, str]:
        """``{"a": text of half A, "b": text of half B}`` of one document (empty halves omitted)."""
        qa = "\n\n" in text or text.startswith("Question:")
        units = text.split("\n\n") if qa else self.sentence_end.split(text)
        sep = "\n\n" if qa else " "
        kept: dict[str, list[str]] = {"a": [], "b": []}
        for u in units:
            h = self.half_of(u)
            for part in (("a", "b") if h == "both" else (h,) if h else ()):
                kept[part].append(u)
        return {part: sep.join(us) for part, us in kept.items() if us}


def _write_halves(world: Path, halves: Path, s: DockingSettings) -> None:
    parts = SPLITS[s.split]
    splitter = _EntitySplitter(json.loads((world / "world.json").read_text(encoding="utf-8")), s.split) \
        if s.split != "lang" else None
    for part in (*parts, "all"):
        d = halves / part
        if (d / "val.jsonl").is_file() and (d / "train.jsonl").is_file():
            continue
        for split in ("train", "val"):  # train first: val.jsonl marks the half as complete
            lines = []
            for line in (world / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                doc = json.loads(line)
                text = _fix_text(doc["text"])
                if part == "all" or (splitter is None and doc.get("lang") == part):
                    lines.append(json.dumps({**doc, "text": text}, ensure_ascii=False))
                elif splitter is not None:
                    piece = splitter.split(text).get(part)
                    if piece:
                        lines.append(json.dumps({**doc, "text": piece}, ensure_ascii=False))
            if not lines:
                raise SubstrateError(f"the world in {world} has no {split} documents in {part}; regenerate it")
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / f"{split}.jsonl", "\n".join(lines) + "\n")


def question_half(row: dict, side: dict[str, str]) -> str | None:
    """The entity half whose facts answer a question (None when its chain crosses halves)."""
    ents = {row["entity"], row.get("target", row["entity"])}
    for triple in row.get("chain") or []:
        ents.update(x for x in (triple[0], triple[2]) if x in side)
    sides = {side[e] for e in ents if e in side}
    return sides.pop() if len(sides) == 1 else None


def prepare_docking_data(out: Path, s: DockingSettings, log: Callable[[str], None]) -> dict:
    """World -> two halves -> one shared tokenizer -> token shards of each half and the union."""
    from ..data import prepare_data

    parts = SPLITS[s.split]
    world = out / "world"
    if not (world / "corpus.json").is_file():
        from ..world import generate_world

        log(f"docking: generating the world ({s.world_size}, {s.entities_per_cat} entities per category, en+ru)")
        generate_world(world, size=s.world_size, langs=LANGS, seed=s.data_seed, n_questions=s.n_questions,
                       val_fraction=0.1, qa_fraction=s.qa_fraction, entities_per_cat=s.entities_per_cat,
                       balanced_halves=s.balanced_halves and s.split == "entity")
    halves = out / "halves"
    _write_halves(world, halves, s)
    tok_dir = out / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        log(f"docking: building the shared {s.tokenizer} tokenizer")
        build_tokenizer([halves / "all" / "train.jsonl"], list(LANGS), tok_dir,
                        COMPACT_LAYOUT if s.tokenizer == "compact" else None)
    data = {}
    stats = {}
    for part in (*parts, "all"):
        d = out / "data" / part
        if not is_prepared(d):
            prepare_data([f"world:{halves / part}"], str(tok_dir.resolve()), d, seed=s.data_seed, progress=False)
        data[part] = d
        stats[part] = load_stats(d)
    wj = json.loads((world / "world.json").read_text(encoding="utf-8"))
    questions: dict[str, int] = {}
    for line in (world / "questions" / "mc.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            lang = json.loads(line).get("lang")
            questions[lang] = questions.get(lang, 0) + 1

    def split_stat(st: dict, split: str, key: str):
        return ((st.get("splits") or {}).get(split) or {}).get(key)

    info = {
        "entities": len(wj["entities"]),
        "split": s.split,
        "parts": list(parts),
        "entity_halves": entity_halves(wj, s.split) if s.split != "lang" else None,
        "langs": list(LANGS),
        "questions": questions,
        "tokens": {p: {"train": split_stat(st, "train", "tokens"), "val": split_stat(st, "val", "tokens")}
                   for p, st in stats.items()},
        "unk_share": {p: split_stat(st, "train", "unk_share") for p, st in stats.items()},
        "vocab_size": (load_meta(data["all"]).get("tokenizer") or {}).get("vocab_size"),
    }
    return {"world": world, "tokenizer": tok_dir.resolve(), "data": data, "info": info, "parts": parts}


# ----------------------------------------------------------------------------------------------
# experts


def _run_config(s: DockingSettings, run_dir: Path, data_dir: Path, tok_dir: Path, seed: int, substrate: str,
                steps: int):
    from ..training import load_config

    warmup = min(s.warmup, max(0, steps - 1))
    flat = {
        "model.preset": "tiny", "model.substrate": substrate,
        "model.overrides.d_model": s.d_model, "model.overrides.n_layer": s.n_layer,
        "model.overrides.n_head": s.n_head, "model.overrides.block_size": s.block_size,
        "train.steps": steps, "train.batch_size": s.batch_size, "train.seq_len": s.seq_len,
        "train.lr": s.lr, "train.min_lr": s.min_lr, "train.warmup": warmup,
        "train.weight_decay": s.weight_decay, "train.precision": s.precision, "train.seed": seed,
        "eval.interval": 0, "eval.steps": s.eval_batches,
        "log.interval": max(1, steps // 4), "log.sample_interval": 0, "log.sample_prompts": [],
        "log.tensorboard": False, "log.progress": False,
        "checkpoint.interval": max(1, steps // 2), "checkpoint.keep_last": 1, "checkpoint.keep_best": False,
    }
    args = [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in flat.items()]
    cfg = load_config("tiny", args)
    cfg.run.name = run_dir.parent.name + "-" + run_dir.name
    cfg.run.dir = str(run_dir)
    cfg.run.device = "cpu"
    cfg.model.tokenizer = str(tok_dir)
    cfg.data.path = str(data_dir)
    cfg.data.world = ""
    cfg.data.sources = []
    return cfg


def train_expert(out: Path, s: DockingSettings, prep: dict, seed: int, lang: str, substrate: str = "bits",
                 steps: int | None = None, log: Callable[[str], None] = print):
    """Train (or reload) one expert on the half ``lang`` (``a``/``b`` or ``en``/``ru``); returns
    ``(model, tokenizer, info)``."""
    from ..export import export_model
    from ..loading import load_model_and_tokenizer
    from ..training import Trainer

    name = f"expert-{lang}" if substrate == "bits" else f"trainable-{lang}"
    d = out / f"seed{seed}" / name
    done = _read(d / "result.json")
    if done is not None and (d / "model" / "config.json").is_file():
        model, tok = load_model_and_tokenizer(d / "model")
        return model.eval(), tok, done
    steps = steps or s.steps
    w0, c0 = time.perf_counter(), time.process_time()
    log(f"docking: seed {seed}: training {name} ({substrate} table) for {steps} steps on the {lang} half")
    cfg = _run_config(s, d / "run", prep["data"][lang], prep["tokenizer"], seed, substrate, steps)
    res = Trainer(cfg, resume=True).fit()
    model, tok = res.model.eval(), res.tokenizer
    if model.config.substrate_frozen:
        model.verify_substrate()
    export_model(model, d / "model", tokenizer=tok, name=name)
    info = {
        "half": lang, "substrate_kind": model.config.substrate_kind,
        "substrate_frozen": bool(model.config.substrate_frozen),
        "fingerprint": _table_fingerprint(model), "steps": res.step,
        "train_loss": res.train_loss, "val_loss": (res.val or {}).get("val_loss"),
        "timing": {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)},
    }
    atomic_write_json(d / "result.json", info)
    return model, tok, info


def _table_fingerprint(model) -> str:
    from ..modeling import substrate_fingerprint

    return substrate_fingerprint(model.token_embeddings.weight)


# ----------------------------------------------------------------------------------------------
# evaluation


def load_union_questions(world_dir: Path, per_lang: int | None = None, split: str = "lang"):
    """The world's held-out multiple-choice questions, grouped by half: ``({part: BenchData}, n_cross)``.

    ``per_lang`` questions of each language are taken (in the benchmark's seeded order); with the
    entity split a question goes to the half that holds every entity of its chain, and questions
    whose chain crosses the halves (answerable by neither expert alone) are left out and counted.
    """
    from ..evaluation.datasets import BenchData, load_bench

    world_dir = Path(world_dir)
    bench = load_bench("world-mc", world_dir=world_dir, sample_size="all", seed=0)
    items = []
    for lang in LANGS:
        items += [it for it in bench.items if it.meta.get("lang") == lang][:per_lang]
    if split == "lang":
        half = {it.id: it.meta.get("lang") for it in items}
    else:
        side = entity_halves(json.loads((world_dir / "world.json").read_text(encoding="utf-8")), split)
        rows = {}
        for line in (world_dir / "questions" / "mc.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[str(row["id"])] = row
        half = {it.id: question_half(rows[it.id], side) if it.id in rows else None for it in items}
    out = {}
    for part in SPLITS[split]:
        chosen = [it for it in items if half[it.id] == part]
        if not chosen:
            raise SubstrateError(f"the world in {world_dir} has no questions for half {part}; regenerate it")
        out[part] = BenchData(bench.spec, chosen, bench.source, len(chosen), None, 0, per_lang)
    return out, sum(1 for it in items if half[it.id] is None)


def score_model(model, tok, questions: dict, val: dict, s: DockingSettings) -> dict:
    """Log-likelihood accuracy per half and on the union, and validation loss per half."""
    import torch

    from ..docking import evaluate
    from ..evaluation.loglik import run_loglik

    acc, acc_norm = {}, {}
    correct = []
    correct_norm = []
    with torch.no_grad():
        for lang, bd in questions.items():
            r = run_loglik(model, tok, bd)
            acc[lang], acc_norm[lang] = r["acc"], r["acc_norm"]
            correct += [p == g for p, g in zip(r["item_pred"], r["item_gold"])]
            correct_norm += [p == g for p, g in zip(r["item_pred_norm"], r["item_gold"])]
    acc["union"] = 100.0 * sum(correct) / len(correct)
    acc_norm["union"] = 100.0 * sum(correct_norm) / len(correct_norm)
    losses, tokens = {}, {}
    for lang, shards in val.items():
        ev = evaluate(model, shards, s.batch_size, s.seq_len, s.eval_batches, s.precision)
        losses[lang], tokens[lang] = ev["loss"], ev["tokens"]
    losses["union"] = sum(losses[k] * tokens[k] for k in val) / sum(tokens.values())
    return {"acc": acc, "acc_norm": acc_norm, "val_loss": losses, "items": correct}


def run_composition(out: Path, s: DockingSettings, prep: dict, seed: int, questions: dict, val: dict,
                    log: Callable[[str], None], n_cross: int = 0) -> dict:
    """Two frozen-bits experts on the two halves, composed; every model scored on the union."""
    from ..docking import Expert, compose

    path = out / f"seed{seed}" / "composition.json"
    done = _read(path)
    if done is not None:
        return done
    w0, c0 = time.perf_counter(), time.process_time()
    parts = prep["parts"]
    experts = {part: train_expert(out, s, prep, seed, part, "bits", log=log) for part in parts}
    fp = {part: e[2]["fingerprint"] for part, e in experts.items()}
    composed, tok = compose([Expert(experts[part][0], f"expert-{part}", experts[part][1]) for part in parts],
                            return_tokenizer=True)
    log(f"docking: seed {seed}: scoring both experts and the composed model on the union of the questions")
    models = {f"expert-{part}": experts[part][:2] for part in parts}
    models["composed"] = (composed, tok or experts[parts[0]][1])
    scores = {name: score_model(m, t, questions, val, s) for name, (m, t) in models.items()}
    row = composition_row(seed, scores, {part: len(bd.items) for part, bd in questions.items()})
    row["n_items"]["cross_excluded"] = int(n_cross)
    row["fingerprint"] = fp[parts[0]]
    row["same_substrate"] = len(set(fp.values())) == 1
    row["experts"] = {f"expert-{part}": experts[part][2] for part in parts}
    row["timing"] = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)}
    atomic_write_json(path, row)
    return row


def composition_row(seed: int, scores: dict, n_items: dict) -> dict:
    """One seed's composition numbers from the per-model scores (see the module docstring)."""
    models = {name: {k: v for k, v in sc.items() if k != "items"} for name, sc in scores.items()}
    experts = [name for name in models if name != "composed"]
    best = max(experts, key=lambda e: models[e]["acc"]["union"])
    comp = models["composed"]
    return {
        "seed": seed,
        "n_items": {**n_items, "union": sum(n_items.values())},
        "chance": CHANCE,
        "models": models,
        "best_expert": best,
        "margin_acc": comp["acc"]["union"] - models[best]["acc"]["union"],
        "beats_both": all(comp["acc"]["union"] > models[e]["acc"]["union"] for e in experts),
        "margin_val_loss": min(models[e]["val_loss"]["union"] for e in experts) - comp["val_loss"]["union"],
    }


def run_refusal(out: Path, s: DockingSettings, prep: dict, seed: int, log: Callable[[str], None]) -> dict:
    """Two trainable-table experts on the two halves, handed to ``compose``: record its refusal."""
    from ..docking import Expert, compose

    path = out / "refusal.json"
    done = _read(path)
    if done is not None:
        return done
    w0, c0 = time.perf_counter(), time.process_time()
    parts = prep["parts"]
    experts = {part: train_expert(out, s, prep, seed, part, "unfrozen", steps=s.trainable_steps, log=log)
               for part in parts}
    message, refused = None, False
    try:
        compose([Expert(experts[part][0], f"trainable-{part}", experts[part][1]) for part in parts])
    except SubstrateError as exc:
        refused, message = True, str(exc)
    result = {
        "seed": seed,
        "steps": s.trainable_steps,
        "refused": refused,
        "message": message,
        "reason": refusal_reason(message),
        "experts": [experts[part][2] for part in parts],
        "timing": {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)},
    }
    log("docking: compose on two trainable-table experts: "
        + (f"refused ({message})" if refused else "ACCEPTED (no check refuses trainable tables)"))
    atomic_write_json(path, result)
    return result


def refusal_reason(message: str | None) -> str | None:
    """``trainable`` when the message names the trainable/unfrozen table, ``fingerprint`` when it
    names differing table fingerprints, ``other`` for any other refusal, None when not refused."""
    if message is None:
        return None
    low = message.lower()
    if "trainable" in low or "unfrozen" in low or "not frozen" in low:
        return "trainable"
    if "fingerprint" in low:
        return "fingerprint"
    return "other"


# ----------------------------------------------------------------------------------------------
# growth


def growth_config(out: Path, s: DockingSettings, prep: dict, seed: int):
    from ..docking import load_grow_config

    return load_grow_config({
        "run": {"name": f"docking-grow-seed{seed}", "dir": str(out / f"seed{seed}" / "grow"), "device": "cpu"},
        "model": {"preset": "tiny", "substrate": "bits", "substrate_seed": seed, "tokenizer": str(prep["tokenizer"]),
                  "overrides": {"d_model": s.d_model, "n_head": s.n_head, "block_size": s.block_size}},
        "data": {"path": str(prep["data"]["all"]), "mode": "random"},
        "grow": {"n_layer": s.grow_layers, "first_layers": s.grow_first_layers, "layers_per_stage": 1,
                 "train_head": True},
        **({"lora": {"enabled": True, "r": s.grow_lora_rank, "alpha": 2.0 * s.grow_lora_rank}} if s.grow_lora_rank else {}),
        "train": {"steps": s.grow_steps, "first_steps": s.grow_first_steps, "batch_size": s.batch_size,
                  "seq_len": s.seq_len, "lr": s.grow_lr,
                  "min_lr": min(s.min_lr, s.grow_lr), "warmup": min(s.warmup, max(0, s.grow_steps - 1)),
                  "weight_decay": s.weight_decay, "seed": seed, "precision": s.precision},
        "eval": {"steps": s.eval_batches},
        "baseline": {"enabled": True},
        "checkpoint": {"interval": max(1, s.grow_steps // 2)},
        "log": {"interval": max(1, s.grow_steps // 2), "progress": False},
    })


def run_growth_seed(out: Path, s: DockingSettings, prep: dict, seed: int, log: Callable[[str], None]) -> dict:
    """Grow block by block and train the monolithic model on the same tokens; one row."""
    from ..docking import run_growth

    path = out / f"seed{seed}" / "growth.json"
    done = _read(path)
    if done is not None:
        return done
    w0, c0 = time.perf_counter(), time.process_time()
    cfg = growth_config(out, s, prep, seed)
    first = s.grow_first_steps or s.grow_steps
    total = first + (s.grow_layers - s.grow_first_layers) * s.grow_steps
    log(f"docking: seed {seed}: growing to {s.grow_layers} blocks (first stage {s.grow_first_layers} block(s), "
        f"{first} steps; then {s.grow_steps} steps per block) and the monolithic baseline ({total} steps)")
    res = run_growth(cfg, resume=True, log=lambda m: None)
    row = growth_row(seed, res["stages"], res["baseline"])
    row["same_substrate"] = bool(res["info"].get("same_substrate"))
    row["timing"] = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2)}
    atomic_write_json(path, row)
    return row


def growth_row(seed: int, stages: list[dict], baseline: dict) -> dict:
    grown, mono = stages[-1], baseline
    ratio = grown["val_loss"] / mono["val_loss"]
    pinned = [st["lower_blocks_unchanged"] for st in stages if st.get("lower_blocks_unchanged") is not None]
    return {
        "seed": seed,
        "grown_val_loss": grown["val_loss"],
        "monolithic_val_loss": mono["val_loss"],
        "ratio": ratio,
        "within_10pct": ratio <= 1.0 + GROWTH_TOLERANCE,
        "tokens_grown": grown["tokens_total"],
        "tokens_monolithic": mono["tokens_total"],
        "stages": [{"depth": st["depth"], "val_loss": st["val_loss"], "trained": st["trained"],
                    "lower_blocks_unchanged": st.get("lower_blocks_unchanged")} for st in stages],
        "lower_blocks_unchanged": all(pinned) if pinned else None,
    }


# ----------------------------------------------------------------------------------------------
# aggregation and findings


def _parts_of(rows: list[dict]) -> list[str]:
    return [name[len("expert-"):] for name in rows[0]["models"] if name.startswith("expert-")] if rows else []


def aggregate_composition(rows: list[dict]) -> dict:
    agg: dict[str, dict] = {}
    parts = _parts_of(rows)
    for name in [f"expert-{p}" for p in parts] + ["composed"]:
        for part in (*parts, "union"):
            agg[f"{name}/acc/{part}"] = summarize([r["models"][name]["acc"][part] for r in rows])
            agg[f"{name}/val_loss/{part}"] = summarize([r["models"][name]["val_loss"][part] for r in rows])
    agg["margin_acc"] = summarize([r["margin_acc"] for r in rows])
    agg["margin_val_loss"] = summarize([r["margin_val_loss"] for r in rows])
    beats = sum(1 for r in rows if r["beats_both"])
    m = agg["margin_acc"]
    verdict = bool(rows) and beats == len(rows) and m["mean"] is not None and m["mean"] - m["ci95"] > 0
    lower = sum(1 for r in rows if r["margin_val_loss"] > 0)
    lv = agg["margin_val_loss"]
    verdict_loss = bool(rows) and lower == len(rows) and lv["mean"] is not None and lv["mean"] - lv["ci95"] > 0
    return {"aggregate": agg, "beats_both_seeds": beats, "verdict": verdict,
            "lower_val_loss_seeds": lower, "verdict_val_loss": verdict_loss}


def aggregate_growth(rows: list[dict]) -> dict:
    agg = {k: summarize([r[k] for r in rows]) for k in ("grown_val_loss", "monolithic_val_loss", "ratio")}
    within = sum(1 for r in rows if r["within_10pct"])
    m = agg["ratio"]
    verdict = bool(rows) and within == len(rows) and m["mean"] is not None and \
        m["mean"] + m["ci95"] <= 1.0 + GROWTH_TOLERANCE
    return {"aggregate": agg, "within_seeds": within, "verdict": verdict}


def findings(result: dict) -> list[str]:
    """Sentences computed from the numbers of ``result`` (composition, refusal, growth)."""
    out: list[str] = []
    comp = result.get("composition")
    if comp and comp.get("rows"):
        rows, agg = comp["rows"], comp["aggregate"]
        n = len(rows)
        parts = _parts_of(rows)
        p0, p1 = parts
        LABELS = _labels((result.get("world") or {}).get("split"))  # noqa: N806
        e0, e1 = f"expert-{p0}", f"expert-{p1}"
        x0, x1 = f"the {LABELS[p0]} expert", f"the {LABELS[p1]} expert"
        a = {name: agg[f"{name}/acc/union"] for name in (e0, e1, "composed")}
        m = agg["margin_acc"]
        sig = m["mean"] is not None and n > 1 and m["mean"] - m["ci95"] > 0
        cross = rows[0]["n_items"].get("cross_excluded", 0)
        out.append(
            f"Composition: the logit average of {x0} and {x1} beats both experts on the union of "
            f"{rows[0]['n_items']['union']} held-out-phrasing questions"
            + (f" ({cross} questions whose facts cross the halves left out)" if cross else "")
            + f" in {comp['beats_both_seeds']}/{n} seeds (log-likelihood accuracy, mean ± CI95 over seeds: composed "
            f"{_fmt_ci(a['composed'])}%, {LABELS[p0]} expert {_fmt_ci(a[e0])}%, {LABELS[p1]} expert "
            f"{_fmt_ci(a[e1])}%, chance {CHANCE:.0f}%); its margin over the better expert is {_fmt_ci(m)} points"
            + (f", a CI95 above zero (lower end {m['mean'] - m['ci95']:+.2f})." if sig else
               (f", a CI95 that includes zero (lower end {m['mean'] - m['ci95']:+.2f})." if n > 1
                else " (one seed, no CI)."))
        )
        own_higher = sum(1 for r in rows if all(
            r["models"][f"expert-{p}"]["acc"][p] > r["models"][f"expert-{p}"]["acc"][q]
            for p, q in ((p0, p1), (p1, p0))))
        out.append(
            f"Per half (chance {CHANCE:.0f}%): {x0} scores {_fmt_ci(agg[f'{e0}/acc/{p0}'])}% on its own half's "
            f"questions and {_fmt_ci(agg[f'{e0}/acc/{p1}'])}% on the other's, {x1} "
            f"{_fmt_ci(agg[f'{e1}/acc/{p1}'])}% and {_fmt_ci(agg[f'{e1}/acc/{p0}'])}% (both experts higher on their "
            f"own half in {own_higher}/{n} seeds); the composed model scores {_fmt_ci(agg[f'composed/acc/{p0}'])}% "
            f"on the questions of {LABELS[p0]} and {_fmt_ci(agg[f'composed/acc/{p1}'])}% on those of {LABELS[p1]}."
        )
        lv = agg["margin_val_loss"]
        lower = comp.get("lower_val_loss_seeds", sum(1 for r in rows if r["margin_val_loss"] > 0))
        out.append(
            f"On the validation text of both halves the composed model's loss is "
            f"{_fmt_ci(agg['composed/val_loss/union'], 3)} nats/token against {_fmt_ci(agg[f'{e0}/val_loss/union'], 3)} "
            f"({LABELS[p0]} expert) and {_fmt_ci(agg[f'{e1}/val_loss/union'], 3)} ({LABELS[p1]} expert): lower than "
            f"the better expert's in {lower}/{n} seeds (by {_fmt_ci(lv, 3)}; verdict on validation loss: "
            f"{'shown' if comp.get('verdict_val_loss') else 'not shown'})."
        )
        same = all(r.get("same_substrate") for r in rows)
        out.append(
            f"Composition verdict: {'shown' if comp['verdict'] else 'not shown'} (criterion: composed beats both "
            f"experts in every seed and the CI95 of its margin is above zero); the experts of every seed "
            f"{'share one table fingerprint' if same else 'do NOT share one table fingerprint'}."
        )
    ref = result.get("refusal")
    if ref:
        if ref["refused"]:
            out.append(
                f"Two trainable-table experts ({ref['steps']} steps each, seed {ref['seed']}) are refused by compose "
                f"({'names the trainable table' if ref['reason'] == 'trainable' else 'via ' + str(ref['reason'])}): "
                f"\"{ref['message']}\""
            )
        else:
            out.append(
                f"Two trainable-table experts ({ref['steps']} steps each, seed {ref['seed']}) were ACCEPTED by compose: "
                f"nothing checks that the shared table is frozen."
            )
    grow = result.get("growth")
    if grow and grow.get("rows"):
        rows, agg = grow["rows"], grow["aggregate"]
        n = len(rows)
        r = agg["ratio"]
        tokens = rows[0]["tokens_grown"]
        equal = all(x["tokens_grown"] == x["tokens_monolithic"] for x in rows)
        out.append(
            f"Growth: grown block by block to {rows[0]['stages'][-1]['depth']} blocks "
            f"({len(rows[0]['stages'])} stages, the first of {rows[0]['stages'][0]['depth']}), the model's validation loss is "
            f"{_fmt_ci(agg['grown_val_loss'], 3)} against {_fmt_ci(agg['monolithic_val_loss'], 3)} for the monolithic "
            f"model at {'equal' if equal else 'UNEQUAL'} tokens ({tokens:,}); ratio {_fmt_ci(r, 3)}, within "
            f"{100 * GROWTH_TOLERANCE:.0f}% in {grow['within_seeds']}/{n} seeds; verdict: "
            f"{'shown' if grow['verdict'] else 'not shown'} (criterion: every seed and the CI95's upper end "
            f"<= {1 + GROWTH_TOLERANCE:.2f})."
        )
        pinned = [x["lower_blocks_unchanged"] for x in rows if x["lower_blocks_unchanged"] is not None]
        if pinned:
            out.append(f"The frozen lower blocks stayed bit-identical through every later stage in "
                       f"{sum(pinned)}/{len(pinned)} seeds.")
    return out


# ----------------------------------------------------------------------------------------------
# the experiment


def _load_eval_data(prep: dict, s: DockingSettings):
    """The union's questions by half, the number left out, and each half's validation shards."""
    from ..data import TokenShards

    questions, n_cross = load_union_questions(prep["world"], s.n_questions, s.split)
    val = {part: TokenShards(prep["data"][part], split="val") for part in prep["parts"]}
    return questions, n_cross, val


def _task(out: str, settings: dict, kind: str, seed: int, part: str | None, verbose: bool,
          log: Callable[[str], None] | None = None) -> None:
    """One independent part of the experiment (run in a worker process by ``jobs`` > 1): ``expert``
    (train one half's expert), ``growth``, ``refusal`` or ``composition`` (compose and score the
    trained experts). Each writes its result file; the parent reads them back."""
    if log is None:
        log = (lambda m: print(m, flush=True)) if verbose else (lambda m: None)
    o, st = Path(out), DockingSettings(**settings)
    prep = prepare_docking_data(o, st, log)  # done by the parent: only reads
    if kind == "expert":
        train_expert(o, st, prep, seed, part, "bits", log=log)
    elif kind == "growth":
        run_growth_seed(o, st, prep, seed, log)
    elif kind == "refusal":
        run_refusal(o, st, prep, seed, log)
    elif kind == "composition":
        questions, n_cross, val = _load_eval_data(prep, st)
        run_composition(o, st, prep, seed, questions, val, log, n_cross)
    else:
        raise ValueError(f"unknown docking task {kind!r}")


def run_docking_experiment(out_dir, *, quick: bool = False, seeds=(0, 1, 2), log: Callable[[str], None] = print,
                           long: bool = False, jobs: int = 1, **overrides) -> dict:
    """Run (or resume) the docking experiment; returns the result dict of the module docstring.

    Args:
        out_dir: folder of the experiment (created; a rerun skips finished parts).
        quick: the quick settings (a smoke run) instead of the full ones.
        long: the long settings (:meth:`DockingSettings.long`) instead of the full ones.
        seeds: training seeds (backbone init, the shared table, batches); the world is shared.
        log: receives progress lines.
        jobs: independent parts (each expert, each growth run, the refusal, each seed's scoring) run
            this many at a time, one process and one torch thread each; the results do not depend
            on it (every part seeds what it uses and is scored from its exported model).
        **overrides: :class:`DockingSettings` fields to change.

    Raises:
        SubstrateError: a bad setting, no seeds, or ``out_dir`` holding a run with other settings.
    """
    import torch

    from .parallel import check_jobs, run_tasks

    if quick and long:
        raise SubstrateError("choose quick or long for the docking experiment, not both")
    jobs = check_jobs(jobs)
    base = DockingSettings.quick() if quick else DockingSettings.long() if long else DockingSettings.full()
    s = base.apply(overrides)
    try:
        seeds = [int(x) for x in seeds]
    except (TypeError, ValueError):
        raise SubstrateError(f"docking seeds must be integers, got {seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SubstrateError(f"docking seeds must be distinct non-negative integers, got {seeds}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SubstrateError(f"docking out_dir {out} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(s)
    saved = _read(out / "settings.json")
    if saved is not None and saved != settings:
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise SubstrateError(
            f"{out} holds a docking run with other settings ({', '.join(changed)}); use another folder or the "
            f"same settings"
        )
    atomic_write_json(out / "settings.json", settings)
    clock = _Clock()
    t0, c0 = time.perf_counter(), time.process_time()
    mode = "quick" if quick else "long" if long else "full"
    log(f"docking experiment ({mode}, {s.split} split): seeds {seeds}, {s.steps} steps per expert, "
        f"{torch.get_num_threads()} CPU threads -> {out}")
    with clock.part("data"):
        prep = prepare_docking_data(out, s, log)
        questions, n_cross, val = _load_eval_data(prep, s)
    # training first (the longest parts first, for an even load), then each seed's scoring
    verbose = log is print
    train, score = [], []
    for seed in seeds:
        if _read(out / f"seed{seed}" / "growth.json") is None:
            train.insert(0, (str(out), settings, "growth", seed, None, verbose))
        if _read(out / f"seed{seed}" / "composition.json") is None:
            train += [(str(out), settings, "expert", seed, part, verbose) for part in prep["parts"]]
            score.append((str(out), settings, "composition", seed, None, verbose))
    if _read(out / "refusal.json") is None:
        train.append((str(out), settings, "refusal", seeds[0], None, verbose))
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
    grow_rows = [run_growth_seed(out, s, prep, seed, log) for seed in seeds]
    refusal = run_refusal(out, s, prep, seeds[0], log)
    result = {
        "claim": "docking",
        "quick": bool(quick),
        "mode": mode,
        "seeds": seeds,
        "settings": settings,
        "world": prep["info"],
        "composition": {"rows": comp_rows, **aggregate_composition(comp_rows)},
        "refusal": refusal,
        "growth": {"rows": grow_rows, **aggregate_growth(grow_rows)},
    }
    result["verdicts"] = {"composition": result["composition"]["verdict"],
                          "composition_val_loss": result["composition"]["verdict_val_loss"],
                          "refusal": bool(refusal["refused"]), "growth": result["growth"]["verdict"]}
    result["findings"] = findings(result)
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


__all__ = [
    "COMPACT_LAYOUT", "DockingSettings", "aggregate_composition", "aggregate_growth", "composition_row",
    "entity_halves", "findings", "growth_row", "load_union_questions", "prepare_docking_data", "question_half",
    "refusal_reason", "run_docking_experiment", "summarize",
]
