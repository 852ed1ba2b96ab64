"""The docking experiment's data: one world in English and Russian, halved, one shared tokenizer,
token shards of each half and of the union, and the held-out questions grouped by half.

The default split (``split="entity"``) gives alternate entities of each category to half A and
half B; every sentence and question-answer item of a document goes to the half of the entities it
names (an item naming entities of both halves, e.g. a relation across them, is dropped; one naming
none goes to both), so both experts read both languages and differ in which entities they know.
``split="category"`` halves by category (:data:`CATEGORY_HALF_A` vs the rest) and ``split="lang"``
by language (there each expert has never seen the other script, and logit averaging with it costs
accuracy on every question: ``benchmarks/2026-11-30-docking-demo-configs.md``).
The default tokenizer is a *compact* bvv241-style layout (:data:`COMPACT_LAYOUT`: ``id == code
point`` for U+0000-U+04FF, which holds Latin and Cyrillic, the special tokens after it, and 736
bigram/trigram ids); the em dash of the Russian templates is written as ``-`` so that every
character has an id (``unk_share`` is reported).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from ...data import prepare_data
from ...data.folder import is_prepared, load_meta, load_stats
from ...errors import SubstrateError
from ...evaluation.datasets import BenchData, load_bench
from ...fsutil import atomic_write_text
from ...world import generate_world
from ...world.ontology import CATEGORIES
from ..compact import build_tokenizer, compact_layout
from .settings import DockingSection

LANGS = ("en", "ru")
SPLITS = {"entity": ("a", "b"), "category": ("a", "b"), "lang": ("en", "ru")}
#: the categories of half A under the category split (B holds the others); relations inside a half:
#: animal/plant -> city (A), tool -> person, person -> person (B); person -> city and food -> plant cross
CATEGORY_HALF_A = ("animal", "plant", "city")
LABELS = {"a": "entity half A", "b": "entity half B", "en": "English", "ru": "Russian"}
# characters of the world's templates outside the compact layout, and what they are written as
TEXT_FIXES = {"\u2014": "-", "\u2013": "-", "\u2026": "...", "\u2019": "'", "\u201c": '"', "\u201d": '"'}

#: the compact bvv241-style layout of the docking experiment (see the module docstring)
COMPACT_LAYOUT = compact_layout(0x04FF, top_k=150, ngram_ids=0x800 - 0x0500 - 32, name="bvv241-compact-en-ru")


def part_labels(split: str | None) -> dict[str, str]:
    """The halves' names in sentences: :data:`LABELS`, with the category split's halves named by
    their categories."""
    if split == "category":
        rest = [c for c in CATEGORIES if c not in CATEGORY_HALF_A]
        return {**LABELS, "a": f"category half A ({', '.join(CATEGORY_HALF_A)})", "b": f"category half B ({', '.join(rest)})"}
    return LABELS



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


def _write_halves(world: Path, halves: Path, s: DockingSection) -> None:
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


def prepare_docking_data(out: Path, s: DockingSection, log: Callable[[str], None]) -> dict:
    """World -> two halves -> one shared tokenizer -> token shards of each half and the union."""
    parts = SPLITS[s.split]
    world = out / "world"
    if not (world / "corpus.json").is_file():
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
        "labels": {p: part_labels(s.split)[p] for p in parts},
        "langs": list(LANGS),
        "questions": questions,
        "tokens": {p: {"train": split_stat(st, "train", "tokens"), "val": split_stat(st, "val", "tokens")}
                   for p, st in stats.items()},
        "unk_share": {p: split_stat(st, "train", "unk_share") for p, st in stats.items()},
        "vocab_size": (load_meta(data["all"]).get("tokenizer") or {}).get("vocab_size"),
    }
    return {"world": world, "tokenizer": tok_dir.resolve(), "data": data, "info": info, "parts": parts}


def load_union_questions(world_dir: Path, per_lang: int | None = None, split: str = "lang"):
    """The world's held-out multiple-choice questions, grouped by half: ``({part: BenchData}, n_cross)``.

    ``per_lang`` questions of each language are taken (in the benchmark's seeded order); with the
    entity split a question goes to the half that holds every entity of its chain, and questions
    whose chain crosses the halves (answerable by neither expert alone) are left out and counted.
    """
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
