"""Held-out question sets over the world's facts, in the papers' two formats.

* ``questions/mc.jsonl``: ARC schema ``{"id", "question", "choices": {"label", "text"},
  "answerKey", "lang", "kind", "entity"}``; the three distractors come from the same attribute's
  value set (or, for a relation, other entities of the object's category).
* ``questions/short.jsonl``: ``{"id", "question", "answers": {"text": [...]}, "lang", "kind",
  "entity"}``; the accepted answers are every surface form of the value (scored by containment).

``kind`` is ``"fact"`` (one fact) or ``"two_hop"`` (two facts: a relation, then an attribute of
its other end). Phrasings come from each language's ``QUESTIONS``/``TWO_HOP`` tables, which never
occur in the training text (training question-answer documents use ``QA_TRAIN``). Extra keys:
``attribute`` (the attribute asked), ``answer`` (its canonical value or entity id), ``target``
(the entity that holds it) and ``chain`` (the facts used, as ``[subject, key, object]`` triples).
"""

from __future__ import annotations

import numpy as np

from .languages import get_lang
from .ontology import ATTRIBUTES, CATEGORIES, TWO_HOP_FORWARD, TWO_HOP_INVERSE, chain_key_forward, chain_key_inverse
from .render import fact_templates, value_forms
from .truth import entity_index, is_relation, rng_for, subject_facts

LETTERS = ("A", "B", "C", "D")
DEFAULT_QUESTIONS = 300  # per language and file
TWO_HOP_SHARE = 0.3


class AnswerBook:
    """Answer surface forms and candidate sets of one world in one language (lookups precomputed)."""

    def __init__(self, world: dict, lang: str):
        self.world, self.lang = world, lang
        self.mod = get_lang(lang)
        self.name = {e["id"]: e["names"][lang] for e in world["entities"]}
        self.category = {e["id"]: e["category"] for e in world["entities"]}
        self.members: dict[str, list[str]] = {}
        for e in world["entities"]:
            self.members.setdefault(e["category"], []).append(e["id"])
        self._forms: dict[tuple[str, str], list[str]] = {}

    def forms(self, key: str, value: str) -> list[str]:
        """Accepted surface forms of a fact's value (an entity's name for a relation)."""
        if is_relation(key):
            return [self.name[value]]
        got = self._forms.get((key, value))
        if got is None:
            got = self._forms[(key, value)] = value_forms(self.mod, key, value)
        return got

    def main(self, key: str, value: str) -> str:
        """The main surface form (the multiple-choice option text)."""
        return self.name[value] if is_relation(key) else self.forms(key, value)[0]

    def pool(self, key: str, value: str) -> list[str]:
        """Every candidate answer of the fact kind ``key`` whose answer is ``value`` (world order);
        for a relation, the entities of the object's category."""
        if key == "isa":
            return list(self.world.get("categories", CATEGORIES))
        if is_relation(key):
            return self.members[self.category[value]]
        return list(self.world["attributes"].get(key, ATTRIBUTES[key]))

    def mc_options(self, key: str, value: str, rng: np.random.Generator,
                   subject: str | None = None) -> tuple[list[str], str]:
        """Four option texts (main surface forms) and the letter of the correct one.

        ``subject`` (an entity id) is never a distractor: "Who is the friend of X?" does not offer X.
        """
        others = [v for v in self.pool(key, value) if v != value and v != subject]
        picks = [others[i] for i in rng.permutation(len(others))[: len(LETTERS) - 1]]
        pos = int(rng.integers(len(LETTERS)))
        values = picks[:pos] + [value] + picks[pos:]
        return [self.main(key, v) for v in values], LETTERS[pos]


def answer_forms(world: dict, lang: str, key: str, value: str) -> list[str]:
    """Accepted surface forms of a fact's value in ``lang`` (an entity's name for a relation)."""
    return AnswerBook(world, lang).forms(key, value)


def format_mc(question: str, options: list[str], letter: str | None = None) -> str:
    """The papers' ARC prompt (options one per line); with ``letter`` the answer follows."""
    body = "\n".join(f"{lab}) {text}" for lab, text in zip(LETTERS, options))
    text = f"Question: {question}\nOptions:\n{body}\nAnswer:"
    return text if letter is None else f"{text} {letter}"


def format_short(question: str, answer: str | None = None) -> str:
    """``Question: {q}\\nAnswer:`` (with `` {answer}`` appended when given)."""
    text = f"Question: {question}\nAnswer:"
    return text if answer is None else f"{text} {answer}"


def candidates(world: dict, lang: str) -> tuple[list[list[dict]], list[list[dict]]]:
    """All askable held-out questions of one language.

    Returns:
        ``(facts, chains)``: each a list of groups, one group per fact (or chain) holding one
        candidate per phrasing. A candidate is ``{"kind", "question", "entity", "target",
        "attribute", "answer", "chain"}``.
    """
    mod = get_lang(lang)
    ents = entity_index(world)
    facts: list[list[dict]] = []
    for e in world["entities"]:
        name = e["names"][lang]
        for key, value in subject_facts(e):
            group = [{"kind": "fact", "question": t.format(name=name), "entity": e["id"], "target": e["id"],
                      "attribute": key, "answer": value, "chain": [[e["id"], key, value]]}
                     for t in fact_templates(mod.QUESTIONS, key, e["category"])]
            facts.append(group)
    chains: list[list[dict]] = []
    for subj_cat, rel, attr in TWO_HOP_FORWARD:
        templates = mod.TWO_HOP[chain_key_forward(subj_cat, rel, attr)]
        for e in world["entities"]:
            if e["category"] != subj_cat or rel not in e["relations"]:
                continue
            obj = ents[e["relations"][rel]]
            value = obj["attributes"][attr]
            chains.append([{"kind": "two_hop", "question": t.format(name=e["names"][lang]), "entity": e["id"],
                            "target": obj["id"], "attribute": attr, "answer": value,
                            "chain": [[e["id"], rel, obj["id"]], [obj["id"], attr, value]]} for t in templates])
    for given_cat, rel, subj_cat, attr in TWO_HOP_INVERSE:
        templates = mod.TWO_HOP[chain_key_inverse(given_cat, rel, subj_cat, attr)]
        for g in world["entities"]:
            if g["category"] != given_cat:
                continue
            subjects = [e for e in world["entities"]
                        if e["category"] == subj_cat and e["relations"].get(rel) == g["id"]]
            if len(subjects) != 1:  # never with bijections; kept as a guard for edited worlds
                continue
            s = subjects[0]
            value = s["attributes"][attr]
            chains.append([{"kind": "two_hop", "question": t.format(name=g["names"][lang]), "entity": g["id"],
                            "target": s["id"], "attribute": attr, "answer": value,
                            "chain": [[s["id"], rel, g["id"]], [s["id"], attr, value]]} for t in templates])
    return facts, chains


def _pick(groups: list[list[dict]], n: int, rng: np.random.Generator) -> list[dict]:
    """Up to ``n`` candidates, covering as many distinct facts as possible before reusing one with
    another phrasing."""
    order = rng.permutation(len(groups))
    phr = [rng.permutation(len(g)) for g in groups]
    out: list[dict] = []
    rounds = max((len(g) for g in groups), default=0)
    for r in range(rounds):
        for gi in order:
            if len(out) >= n:
                return out
            if r < len(groups[gi]):
                out.append(groups[gi][phr[gi][r]])
    return out


def make_questions(world: dict, langs=None, n_per_lang: int = DEFAULT_QUESTIONS, seed: int = 0,
                   two_hop_share: float = TWO_HOP_SHARE) -> tuple[list[dict], list[dict]]:
    """Held-out multiple-choice and short-answer questions (the same questions in both files).

    Args:
        world: the ground truth (:func:`~substrate_lm.world.truth.build_world`).
        langs: languages (default: the world's).
        n_per_lang: questions per language and file (fewer when the world has fewer).
        seed: selection and option-order seed.
        two_hop_share: fraction of two-hop questions.

    Returns:
        ``(mc_rows, short_rows)``.
    """
    mc, short = [], []
    for lang in langs or world["langs"]:
        rng = rng_for(seed, "questions", lang)
        facts, chains = candidates(world, lang)
        book = AnswerBook(world, lang)
        n_two = min(int(round(n_per_lang * two_hop_share)), sum(len(g) for g in chains))
        chosen = _pick(facts, n_per_lang - n_two, rng) + _pick(chains, n_two, rng)
        for i, c in enumerate(chosen):
            options, letter = book.mc_options(c["attribute"], c["answer"], rng, subject=c["target"])
            extra = {"attribute": c["attribute"], "answer": c["answer"], "target": c["target"], "chain": c["chain"]}
            mc.append({"id": f"world-{lang}-{i:04d}", "question": c["question"],
                       "choices": {"label": list(LETTERS), "text": options}, "answerKey": letter,
                       "lang": lang, "kind": c["kind"], "entity": c["entity"], **extra})
            short.append({"id": f"world-{lang}-{i:04d}", "question": c["question"],
                          "answers": {"text": list(book.forms(c["attribute"], c["answer"]))},
                          "lang": lang, "kind": c["kind"], "entity": c["entity"], **extra})
    return mc, short
