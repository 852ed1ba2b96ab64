"""Held-out questions: schema, answers re-derived from the table, unique two-hop chains."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from substrate_lm.world import generate_world, verify_world
from substrate_lm.world.languages import LANGUAGES
from substrate_lm.world.ontology import ATTRIBUTES, CATEGORIES
from substrate_lm.world.render import template_regex


def read_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def mc(world_dir):
    return read_jsonl(world_dir / "questions" / "mc.jsonl")


@pytest.fixture(scope="module")
def short(world_dir):
    return read_jsonl(world_dir / "questions" / "short.jsonl")


def _surface(lang, key, value, ents):
    if key in ("lives_in", "grows_in", "made_by", "friend_of", "made_from"):
        return [ents[value]["names"][lang]]
    forms = LANGUAGES[lang].VALUES[key][value]
    return [forms[""]] + [f for k, f in forms.items() if k]


def _derive(question: str, lang: str, world: dict):
    """Answer a question from the table alone: find the held-out template that reads it, look the
    facts up. Returns ``(attribute, value, n_candidates)`` where n_candidates counts the entities
    the question could be about (must be 1)."""
    mod = LANGUAGES[lang]
    ents = {e["id"]: e for e in world["entities"]}
    by_name = {e["names"][lang]: e for e in world["entities"]}
    found = []
    for key, templates in mod.QUESTIONS.items():
        attr, _, cat = key.partition("/")
        for t in templates:
            m = template_regex(t).fullmatch(question)
            if m and m["name"] in by_name:
                e = by_name[m["name"]]
                if cat and e["category"] != cat:
                    continue
                facts = {"isa": e["category"], **e["attributes"], **e["relations"]}
                if attr in facts:
                    found.append((attr, facts[attr], 1))
    for key, templates in mod.TWO_HOP.items():
        parts = key.split(":")
        for t in templates:
            m = template_regex(t).fullmatch(question)
            if not (m and m["name"] in by_name):
                continue
            g = by_name[m["name"]]
            if parts[0] == "fwd":
                subj_cat, rel, attr = parts[1:]
                if g["category"] == subj_cat:
                    found.append((attr, ents[g["relations"][rel]]["attributes"][attr], 1))
            else:
                given_cat, rel, subj_cat, attr = parts[1:]
                if g["category"] != given_cat:
                    continue
                subjects = [e for e in world["entities"]
                            if e["category"] == subj_cat and e["relations"].get(rel) == g["id"]]
                found.append((attr, subjects[0]["attributes"][attr] if subjects else None, len(subjects)))
    assert len(found) == 1, (question, found)
    return found[0]


def test_counts_kinds_and_schema(mc, short, world):
    assert len(mc) == len(short) == 3 * 300
    for lang in ("en", "ru", "zh"):
        kinds = Counter(r["kind"] for r in mc if r["lang"] == lang)
        assert kinds["fact"] == 210 and kinds["two_hop"] == 90
    ids = [r["id"] for r in mc]
    assert len(set(ids)) == len(ids) and ids == [r["id"] for r in short]
    ent_ids = {e["id"] for e in world["entities"]}
    for r in mc:
        assert {"id", "question", "choices", "answerKey", "lang", "kind", "entity"} <= set(r)
        assert r["choices"]["label"] == ["A", "B", "C", "D"] and r["answerKey"] in "ABCD"
        assert len(set(r["choices"]["text"])) == 4 and r["entity"] in ent_ids
    for r in short:
        assert {"id", "question", "answers", "lang", "kind", "entity"} <= set(r)
        assert r["answers"]["text"] and all(isinstance(a, str) and a for a in r["answers"]["text"])
    # the same fact is not asked twice while unasked ones remain
    facts = Counter((r["lang"], json.dumps(r["chain"])) for r in mc if r["kind"] == "fact")
    assert max(facts.values()) <= 2


def test_answers_follow_from_the_table(mc, short, world):
    ents = {e["id"]: e for e in world["entities"]}
    for r, s in zip(mc, short):
        attr, value, n = _derive(r["question"], r["lang"], world)
        assert n == 1 and value is not None
        gold = r["choices"]["text"]["ABCD".index(r["answerKey"])]
        forms = _surface(r["lang"], attr, value, ents)
        assert gold == forms[0], (r["question"], gold, forms)
        assert s["answers"]["text"][0] == forms[0] and set(s["answers"]["text"]) <= set(forms)
        # distractors: other members of the same value set, never the answer again
        if attr in ATTRIBUTES or attr == "isa":
            pool = ATTRIBUTES.get(attr, CATEGORIES)
            allowed = {_surface(r["lang"], attr, v, ents)[0] for v in pool}
        else:
            obj_cat = ents[value]["category"]
            allowed = {e["names"][r["lang"]] for e in world["entities"] if e["category"] == obj_cat}
        assert set(r["choices"]["text"]) <= allowed and r["choices"]["text"].count(gold) == 1


def test_two_hop_chains_are_unique_and_use_two_facts(mc, world):
    ents = {e["id"]: e for e in world["entities"]}
    two = [r for r in mc if r["kind"] == "two_hop"]
    assert {r["lang"] for r in two} == {"en", "ru", "zh"}
    shapes = Counter()
    for r in two:
        (s1, rel, o1), (s2, attr, value) = r["chain"]
        assert ents[s1]["relations"][rel] == o1 and r["entity"] in (s1, o1)
        holder = s2
        assert ents[holder]["attributes"][attr] == value == r["answer"]
        if r["entity"] == s1:  # forward: X -rel-> Y, attribute of Y
            shapes["forward"] += 1
            assert holder == o1
        else:  # inverse: the unique subject of rel pointing at the named entity
            shapes["inverse"] += 1
            cands = [e for e in world["entities"]
                     if e["category"] == ents[s1]["category"] and e["relations"].get(rel) == o1]
            assert [e["id"] for e in cands] == [s1] and holder == s1
    assert shapes["forward"] > 0 and shapes["inverse"] > 0


def test_questions_ask_only_facts_stated_in_training(mc, world_dir, world):
    report = verify_world(world_dir, splits=("train",))
    assert all(c["stated"] == c["facts"] for c in report["coverage"].values())
    table = {(e["id"], k, v) for e in world["entities"]
             for k, v in [("isa", e["category"]), *e["attributes"].items(), *e["relations"].items()]}
    for r in mc:
        for fact in r["chain"]:
            assert tuple(fact) in table


def test_questions_deterministic_and_size_configurable(tmp_path, world_dir):
    generate_world(tmp_path / "a", size="100KB", seed=0, n_questions=40)
    a = read_jsonl(tmp_path / "a" / "questions" / "mc.jsonl")
    assert len(a) == 120
    generate_world(tmp_path / "b", size="100KB", seed=0, n_questions=40)
    mc_a, mc_b = (tmp_path / d / "questions" / "mc.jsonl" for d in ("a", "b"))
    assert mc_a.read_bytes() == mc_b.read_bytes()
    generate_world(tmp_path / "c", size="100KB", seed=0, n_questions=0)
    assert (tmp_path / "c" / "questions" / "mc.jsonl").read_bytes() == b""


def test_evaluation_prompt_renders(mc, short):
    """The papers' ARC prompt (one option per line) and the short-answer prompt are well formed."""
    r = next(x for x in mc if x["lang"] == "ru")
    options = "\n".join(f"{lab}) {t}" for lab, t in zip(r["choices"]["label"], r["choices"]["text"]))
    prompt = f"Question: {r['question']}\nOptions:\n{options}\nAnswer:"
    assert prompt.count("\n") == 6 and "\n\n" not in prompt
    s = next(x for x in short if x["lang"] == "zh")
    assert "\n" not in s["question"] and all("\n" not in a for a in s["answers"]["text"])
