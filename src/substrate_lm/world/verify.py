"""Check a generated world against its ground truth by reading the text back.

Independent of the generator's index arithmetic: documents are split into sentences, each sentence
is matched against every sentence template of its language (one regex per template), names and
value words are looked up in ``world.json``, and the stated fact is compared with the table. A
sentence passes when at least one template reads it as a fact about known names and values and
every such reading is true. Question-answer documents are read the same way with the training
question templates, and their answers (and, for multiple choice, the options) are checked.

Also checks that no held-out phrasing (question, two-hop and neutral probe templates) occurs in
the training text, and which facts the training text states (every fact must be stated).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from .languages import get_lang
from .questions import LETTERS, AnswerBook
from .render import fixed_segments, template_regex
from .truth import entity_index, is_relation, load_world, subject_facts

_SPLIT = {"zh": re.compile(r"(?<=[。！？])")}
_SPLIT_DEFAULT = re.compile(r"(?<=[.!?]) ")
_QA_SHORT = re.compile(r"Question: (?P<q>.+)\nAnswer: (?P<a>.+)")
_QA_MC = re.compile(r"Question: (?P<q>.+)\nOptions:\n(?P<opts>(?:[A-D]\) .+\n){4})Answer: (?P<a>[A-D])")


def split_sentences(text: str, lang: str) -> list[str]:
    """Sentences of a prose document (they end in . ! ? or 。 and are joined by the language's
    separator)."""
    return [s for s in (_SPLIT.get(lang, _SPLIT_DEFAULT).split(text)) if s]


class _Reader:
    """Template regexes and reverse lexicons of one language of one world."""

    def __init__(self, world: dict, lang: str):
        self.world, self.lang = world, lang
        self.mod = get_lang(lang)
        self.ents = entity_index(world)
        self.by_name = {e["names"][lang]: e for e in world["entities"]}
        # attr -> placeholder ("v", "v_in", ...) -> surface -> value
        self.forms: dict[str, dict[str, dict[str, str]]] = {}
        for attr, table in self.mod.VALUES.items():
            per: dict[str, dict[str, str]] = {}
            for value, forms in table.items():
                for k, f in forms.items():
                    per.setdefault("v" if k == "" else f"v_{k}", {})[f] = value
            self.forms[attr] = per
        self.sentence_parsers = self._parsers(self.mod.SENTENCES)
        self.qa_parsers = self._parsers(self.mod.QA_TRAIN)
        self.book = AnswerBook(world, lang)

    @staticmethod
    def _parsers(table: dict) -> list[tuple[re.Pattern, str, str | None]]:
        out = []
        for key, templates in table.items():
            attr, _, cat = key.partition("/")
            for t in templates:
                out.append((template_regex(t), attr, cat or None))
        return out

    def readings(self, text: str, parsers) -> list[tuple[dict, str, str, str | None]]:
        """Readings ``(entity, attr, value, category restriction)`` of ``text`` with known words."""
        out = []
        for rx, attr, cat in parsers:
            m = rx.fullmatch(text)
            if not m:
                continue
            g = m.groupdict()
            ent = self.by_name.get(g.pop("name", None))
            if ent is None:
                continue
            if "obj" in g:
                obj = self.by_name.get(g.pop("obj"))
                if obj is None:
                    continue
                out.append((ent, attr, obj["id"], cat))
                continue
            if not g:  # a question: names the entity and the attribute only
                out.append((ent, attr, None, cat))
                continue
            values = {self.forms.get(attr, {}).get(k, {}).get(s) for k, s in g.items()}
            if len(values) == 1 and None not in values:
                out.append((ent, attr, values.pop(), cat))
        return out

    @staticmethod
    def true(ent: dict, attr: str, value: str, cat: str | None) -> bool:
        if cat is not None and ent["category"] != cat:
            return False
        if attr == "isa":
            return ent["category"] == value
        if is_relation(attr):
            return ent["relations"].get(attr) == value
        return ent["attributes"].get(attr) == value

    def check_sentence(self, s: str) -> tuple[str | None, tuple | None]:
        """``(error or None, (entity id, attr, value) of the fact read)``."""
        rs = self.readings(s, self.sentence_parsers)
        if not rs:
            return f"[{self.lang}] no template reads {s!r}", None
        # a template written for another category (an animal's "lives in" for a person) is not a
        # reading of this sentence; but some template of the subject's own category must read it
        fitting = [r for r in rs if r[3] is None or r[3] == r[0]["category"]]
        if not fitting:
            return f"[{self.lang}] {s!r} uses a {rs[0][3]} template for a {rs[0][0]['category']}", None
        rs = fitting
        bad = [r for r in rs if not self.true(*r)]
        if bad:
            ent, attr, value, _ = bad[0]
            return f"[{self.lang}] {s!r} states {attr}={value} of {ent['id']}, the table disagrees", None
        ent, attr, value, _ = rs[0]
        return None, (ent["id"], attr, value)

    def check_qa(self, item: str) -> str | None:
        m = _QA_MC.fullmatch(item) or _QA_SHORT.fullmatch(item)
        if not m:
            return f"[{self.lang}] unreadable question-answer item {item[:80]!r}"
        rs = self.readings(m.group("q"), self.qa_parsers)
        if not rs:
            return f"[{self.lang}] no training question template reads {m.group('q')!r}"
        fitting = [r for r in rs if r[3] is None or r[3] == r[0]["category"]]
        if not fitting:
            return f"[{self.lang}] question {m.group('q')!r} uses a {rs[0][3]} template for a {rs[0][0]['category']}"
        ent, attr = fitting[0][0], fitting[0][1]
        truth = dict(subject_facts(ent)).get(attr)
        if truth is None:
            return f"[{self.lang}] question {m.group('q')!r} asks {attr} of {ent['id']}, which has none"
        gold = self.book.main(attr, truth)
        if "opts" in m.groupdict() and m.groupdict().get("opts"):
            opts = [line[3:] for line in m.group("opts").rstrip("\n").split("\n")]
            pool = {self.book.main(attr, v) for v in self.book.pool(attr, truth) if v != ent["id"]}
            if opts.count(gold) != 1 or not set(opts) <= pool or len(set(opts)) != 4:
                return f"[{self.lang}] bad options {opts} for {m.group('q')!r} (gold {gold!r})"
            if opts[LETTERS.index(m.group("a"))] != gold:
                return f"[{self.lang}] {m.group('q')!r} answered {m.group('a')}, gold is {gold!r}"
        elif m.group("a") != gold:
            return f"[{self.lang}] {m.group('q')!r} answered {m.group('a')!r}, gold is {gold!r}"
        return None


def read_docs(world_dir, split: str = "train") -> list[dict]:
    """The documents of ``train.jsonl`` / ``val.jsonl``."""
    path = Path(world_dir) / f"{split}.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def heldout_templates(lang: str) -> list[str]:
    """Every phrasing that must never occur in training text: held-out questions (one- and
    two-hop) and the neutral probe frames."""
    mod = get_lang(lang)
    out = [t for ts in mod.QUESTIONS.values() for t in ts]
    out += [t for ts in mod.TWO_HOP.values() for t in ts]
    out += list(mod.NEUTRAL)
    return out


def core_segment(template: str) -> str:
    """The longest fixed piece of a template, whitespace-stripped (its distinctive wording)."""
    return max((s.strip() for s in fixed_segments(template)), key=len)


def heldout_leaks(world: dict, text_by_lang: dict[str, str]) -> list[str]:
    """Held-out phrasings found in training text: a template whose longest fixed piece occurs, or
    which matches in full (with any of the world's names in its slots)."""
    leaks = []
    for lang, text in text_by_lang.items():
        names = sorted((e["names"][lang] for e in world["entities"]), key=len, reverse=True)
        name_rx = "(?:" + "|".join(re.escape(n) for n in names) + ")"
        for t in heldout_templates(lang):
            core = core_segment(t)
            if core and core in text:
                leaks.append(f"[{lang}] held-out piece {core!r} (of {t!r}) occurs in training text")
                continue
            rx = "".join(re.escape(lit) + (name_rx if field else "")
                         for lit, field in _literal_fields(t))
            if re.search(rx, text):
                leaks.append(f"[{lang}] held-out phrasing {t!r} occurs in training text")
    return leaks


def _literal_fields(template: str):
    for lit, field, _, _ in string.Formatter().parse(template):
        yield lit, field


def verify_world(world_dir, splits=("train", "val"), max_errors: int = 20) -> dict:
    """Read a world's text back and check it against ``world.json``.

    Returns:
        ``{"ok", "documents", "sentences", "unique_sentences", "qa_items", "n_errors",
        "errors" (first ``max_errors``), "coverage": {lang: {"facts", "stated"}},
        "missing_facts" (first few), "leaks"}``. ``ok`` is True when every sentence and answer is
        true, every fact is stated in the training split and no held-out phrasing leaked.
    """
    world = load_world(world_dir)
    readers = {lang: _Reader(world, lang) for lang in world["langs"]}
    cache: dict[tuple[str, str], tuple] = {}
    errors: list[str] = []
    n_err = n_docs = n_sent = n_qa = 0
    stated: dict[str, set] = {lang: set() for lang in world["langs"]}
    train_text: dict[str, list[str]] = {lang: [] for lang in world["langs"]}
    for split in splits:
        for doc in read_docs(world_dir, split):
            n_docs += 1
            lang, text = doc["lang"], doc["text"]
            reader = readers[lang]
            if split == "train":
                train_text[lang].append(text)
            if text.startswith("Question: "):
                parts, qa = text.split("\n\n"), True
            else:
                parts, qa = split_sentences(text, lang), False
            for part in parts:
                key = (lang, part)
                if key not in cache:
                    cache[key] = (reader.check_qa(part), None) if qa else reader.check_sentence(part)
                err, fact = cache[key]
                n_qa += qa
                n_sent += not qa
                if err:
                    n_err += 1
                    if len(errors) < max_errors:
                        errors.append(err)
                elif fact is not None and split == "train":
                    stated[lang].add(fact)
    coverage, missing = {}, []
    for lang in world["langs"]:
        facts = {(e["id"], k, v) for e in world["entities"] for k, v in subject_facts(e)}
        coverage[lang] = {"facts": len(facts), "stated": len(facts & stated[lang])}
        missing += [f"[{lang}] {f}" for f in sorted(facts - stated[lang])[:5]]
    leaks = heldout_leaks(world, {lang: "\n".join(t) for lang, t in train_text.items()})
    return {
        "ok": n_err == 0 and not missing and not leaks,
        "documents": n_docs, "sentences": n_sent, "qa_items": n_qa,
        "unique_sentences": len(cache), "n_errors": n_err, "errors": errors,
        "coverage": coverage, "missing_facts": missing, "leaks": leaks,
    }

