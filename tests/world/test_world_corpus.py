"""Generator: determinism, sizes, scripts, split, ground-truth consistency, held-out phrasings."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.world import (
    CATEGORIES, entities_per_category, generate_world, load_world, parse_size, probe_items, verify_world
)
from substrate_lm.world.languages import LANGUAGES
from substrate_lm.world.ontology import ATTRIBUTES, all_chain_keys, schema_facts, template_key
from substrate_lm.world.render import fixed_segments, placeholders
from substrate_lm.world.verify import core_segment, heldout_leaks, heldout_templates, split_sentences

FILES = ("train.jsonl", "val.jsonl", "world.json", "questions/mc.jsonl", "questions/short.jsonl", "corpus.json")
CYRILLIC = re.compile(r"[\u0400-\u04FF]")
CJK = re.compile(r"[\u4E00-\u9FFF]")
LATIN = re.compile(r"[A-Za-z]")


def _bytes(d):
    return {f: (d / f).read_bytes() for f in FILES}


def test_same_seed_same_bytes_other_seed_differs(tmp_path, world_dir):
    a = tmp_path / "a"
    generate_world(a, size="100KB", langs=("en", "ru", "zh"), seed=0)
    assert _bytes(a) == _bytes(world_dir)
    b = tmp_path / "b"
    generate_world(b, size="100KB", langs=("en", "ru", "zh"), seed=1)
    other = _bytes(b)
    for f in ("train.jsonl", "val.jsonl", "world.json", "questions/mc.jsonl"):
        assert other[f] != _bytes(world_dir)[f], f
    # the language list is part of the identity too
    c = tmp_path / "c"
    generate_world(c, size="100KB", langs=("en", "ru"), seed=0)
    assert (c / "train.jsonl").read_bytes() != (world_dir / "train.jsonl").read_bytes()


def test_size_target_and_language_balance(world_dir, train_docs):
    stats = json.loads((world_dir / "corpus.json").read_text())
    per_lang = {k: v["train"] + v["val"] for k, v in stats["text_bytes"].items()}
    total = sum(per_lang.values())
    assert 100_000 <= total <= 101_500, total  # overshoot is at most one document per language
    for lang, n in per_lang.items():
        assert 33_333 <= n <= 34_000, (lang, n)
    # counted bytes are the documents' text bytes
    counted = sum(len(d["text"].encode("utf-8")) for d in train_docs)
    assert counted == sum(v["train"] for v in stats["text_bytes"].values())
    jsonl = (world_dir / "train.jsonl").stat().st_size + (world_dir / "val.jsonl").stat().st_size
    assert total < jsonl < 1.25 * total


def test_larger_size_scales_text_and_entities(tmp_path):
    s = generate_world(tmp_path / "w", size="600KB", langs=("en",), seed=3, n_questions=20)
    assert 600_000 <= s["text_bytes_total"] <= 601_000
    assert s["entities_per_category"] == entities_per_category(600_000, 1)
    assert s["langs"] == ["en"]


def test_jsonl_lines_and_scripts(world_dir, train_docs):
    for line in (world_dir / "train.jsonl").read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        assert set(doc) == {"text", "lang"} and doc["text"]
    by_lang = {}
    for d in train_docs:
        by_lang.setdefault(d["lang"], []).append(d["text"])
    assert set(by_lang) == {"en", "ru", "zh"}
    prose = {k: [t for t in v if not t.startswith("Question: ")] for k, v in by_lang.items()}
    en, ru, zh = ("\n".join(prose[k]) for k in ("en", "ru", "zh"))
    assert LATIN.search(en) and not CYRILLIC.search(en) and not CJK.search(en)
    assert CYRILLIC.search(ru) and not LATIN.search(ru) and not CJK.search(ru)
    assert CJK.search(zh) and not LATIN.search(zh) and not CYRILLIC.search(zh)
    assert " " not in zh  # Chinese sentences are joined without spaces


def test_languages_interleaved_and_documents_varied(train_docs):
    langs = [d["lang"] for d in train_docs[:60]]
    assert len(set(langs)) == 3  # shuffled across languages, not in blocks
    prose = [d for d in train_docs if not d["text"].startswith("Question: ")]
    n_sent = [len(split_sentences(d["text"], d["lang"])) for d in prose]
    assert min(n_sent) >= 2 and max(n_sent) >= 6
    qa = [d for d in train_docs if d["text"].startswith("Question: ")]
    assert 0.03 < len(qa) / len(train_docs) < 0.2
    assert any("\nOptions:\nA) " in d["text"] for d in qa)
    texts = [d["text"] for d in train_docs]
    assert len(set(texts)) > 0.9 * len(texts)


def test_every_entity_recurs_many_times(tmp_path, world, train_docs):
    for lang in ("en", "ru", "zh"):  # even the smallest world names every entity several times
        text = "\n".join(d["text"] for d in train_docs if d["lang"] == lang)
        assert min(text.count(e["names"][lang]) for e in world["entities"]) >= 5
    # at the demo's scale (MBs) each entity recurs in many documents
    generate_world(tmp_path / "w", size="1MB", langs=("en", "ru", "zh"), seed=2, n_questions=5)
    w = load_world(tmp_path / "w")
    docs = [json.loads(x) for x in (tmp_path / "w" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    for lang in ("en", "ru", "zh"):
        texts = [d["text"] for d in docs if d["lang"] == lang]
        n_docs = [sum(e["names"][lang] in t for t in texts) for e in w["entities"]]
        assert min(n_docs) >= 30, (lang, min(n_docs))


def test_val_split(tmp_path):
    s = generate_world(tmp_path / "w", size="400KB", langs=("en", "ru", "zh"), seed=0, n_questions=10)
    docs = s["documents"]
    share = docs["val"] / (docs["train"] + docs["val"] - docs["profiles"])
    assert 0.015 < share < 0.05
    val = [json.loads(x) for x in (tmp_path / "w" / "val.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(val) == docs["val"] and {d["lang"] for d in val} == {"en", "ru", "zh"}
    s0 = generate_world(tmp_path / "z", size="100KB", langs=("en",), seed=0, n_questions=10, val_fraction=0.0)
    assert s0["documents"]["val"] == 0 and (tmp_path / "z" / "val.jsonl").read_bytes() == b""


def test_read_back_every_sentence_matches_the_table(world_dir):
    report = verify_world(world_dir)
    assert report["ok"], report
    assert report["n_errors"] == 0 and report["sentences"] > 1000 and report["qa_items"] > 50
    for lang, cov in report["coverage"].items():
        assert cov["stated"] == cov["facts"] > 0, lang  # every fact is stated in training text


def test_read_back_catches_a_wrong_table_and_a_wrong_sentence(tmp_path, world_dir, world):
    bad = tmp_path / "bad"
    shutil.copytree(world_dir, bad)
    w = json.loads(json.dumps(world))
    animal = next(e for e in w["entities"] if e["category"] == "animal")
    colours = w["attributes"]["colour"]
    animal["attributes"]["colour"] = colours[(colours.index(animal["attributes"]["colour"]) + 1) % len(colours)]
    (bad / "world.json").write_text(json.dumps(w, ensure_ascii=False), encoding="utf-8")
    report = verify_world(bad)
    assert not report["ok"] and report["n_errors"] > 0
    assert any("colour" in e for e in report["errors"])

    bad2 = tmp_path / "bad2"
    shutil.copytree(world_dir, bad2)
    name = world["entities"][0]["names"]["en"]  # an animal
    lines = (bad2 / "train.jsonl").read_text(encoding="utf-8").splitlines()
    lines.append(json.dumps({"text": f"{name} is a kind of tool.", "lang": "en"}))
    (bad2 / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = verify_world(bad2)
    assert report["n_errors"] == 1 and "isa=tool" in report["errors"][0]


def test_no_heldout_phrasing_in_training_text(world, train_docs):
    for lang, mod in LANGUAGES.items():
        text = "\n".join(d["text"] for d in train_docs if d["lang"] == lang)
        train_templates = {t for table in (mod.SENTENCES, mod.QA_TRAIN) for ts in table.values() for t in ts}
        for t in heldout_templates(lang):
            assert t not in train_templates
            core = core_segment(t)
            assert len(core.strip(" ?.,？。，")) >= (2 if lang == "zh" else 4), t
            assert core not in text, (lang, t)
    assert heldout_leaks(world, {lang: "\n".join(d["text"] for d in train_docs if d["lang"] == lang)
                                 for lang in ("en", "ru", "zh")}) == []


def test_leak_check_finds_a_planted_leak(world):
    name = world["entities"][3]["names"]["en"]
    q = LANGUAGES["en"].QUESTIONS["size"][0].format(name=name)
    leaks = heldout_leaks(world, {"en": f"Some text. Question: {q}\nAnswer: small"})
    assert len(leaks) == 1 and "How big is" in leaks[0]


def test_templates_cover_the_schema_and_render():
    for lang, mod in LANGUAGES.items():
        for cat, attr in schema_facts():
            for table in (mod.SENTENCES, mod.QA_TRAIN, mod.QUESTIONS):
                key = template_key(table, attr, cat)
                assert table[key], (lang, key)
            assert len(mod.SENTENCES[template_key(mod.SENTENCES, attr, cat)]) >= 6
        assert set(mod.TWO_HOP) == set(all_chain_keys()), lang
        assert len(mod.NEUTRAL) >= 8
        for attr in list(ATTRIBUTES) + ["isa"]:
            assert set(mod.VALUES[attr]) == set(ATTRIBUTES.get(attr, CATEGORIES)), (lang, attr)
        for key, templates in mod.SENTENCES.items():
            attr = key.split("/")[0]
            for t in templates:
                fields = placeholders(t)
                assert fields.count("name") == 1, t
                for value, forms in mod.VALUES.get(attr, {}).items():
                    kw = {("v" if k == "" else f"v_{k}"): f for k, f in forms.items()}
                    t.format(name="X", obj="Y", **kw)  # every form a template needs exists
                # no two placeholders side by side: a sentence must parse back unambiguously
                assert all(seg for seg in fixed_segments(t)[1:len(fields)]), (lang, t)


def test_names_distinct_and_in_script(world):
    for lang in ("en", "ru", "zh"):
        names = [e["names"][lang] for e in world["entities"]]
        assert len(set(names)) == len(names)
        for a in names:
            assert not any(a != b and a.lower() in b.lower() for b in names)
            for mod_t in (LANGUAGES[lang].SENTENCES, LANGUAGES[lang].QUESTIONS):
                for ts in mod_t.values():
                    assert all(a not in t for t in ts)
    for e in world["entities"]:
        assert re.fullmatch(r"[A-Z][a-z]+", e["names"]["en"])
        assert re.fullmatch(r"[А-Я][а-я]+", e["names"]["ru"]) and e["names"]["ru"][-1] in "оеиу"
        assert re.fullmatch(r"[\u4E00-\u9FFF]{2,3}", e["names"]["zh"])


def test_ground_truth_schema_and_bijections(world):
    assert world["seed"] == 0 and world["langs"] == ["en", "ru", "zh"]
    assert world["categories"] == list(CATEGORIES)
    ents = {e["id"]: e for e in world["entities"]}
    per_cat = {c: [e for e in world["entities"] if e["category"] == c] for c in CATEGORIES}
    assert len({len(v) for v in per_cat.values()}) == 1
    for e in world["entities"]:
        assert set(e) == {"id", "names", "category", "attributes", "relations"}
        for attr, value in e["attributes"].items():
            assert value in world["attributes"][attr]
    for rel, pairs in world["relations"].items():
        for subj_cat, obj_cat in pairs:
            objs = [e["relations"][rel] for e in per_cat[subj_cat]]
            assert all(ents[o]["category"] == obj_cat for o in objs)
            assert len(set(objs)) == len(objs)  # injective, hence "the X that ... <obj>" is unique
    for p in per_cat["person"]:
        friend = ents[p["relations"]["friend_of"]]
        assert friend["id"] != p["id"] and friend["relations"]["friend_of"] == p["id"]


def test_attribute_values_balanced(tmp_path):
    s = generate_world(tmp_path / "w", size="100KB", langs=("en",), seed=5, n_questions=5,
                       entities_per_cat=16)
    w = load_world(tmp_path / "w")
    colours = [e["attributes"]["colour"] for e in w["entities"] if e["category"] == "animal"]
    assert len(colours) == 16 and max(colours.count(c) for c in set(colours)) == 2
    assert s["entities"] == 96


def test_parse_size_and_entity_scaling():
    assert parse_size("100KB") == 100_000
    assert parse_size("1.5MB") == 1_500_000
    assert parse_size("2MiB") == 2 * 1024 * 1024
    assert parse_size(250_000) == 250_000
    for bad in ("12XB", "", "-3MB", "5KB", "9GB"):
        with pytest.raises(SubstrateError):
            parse_size(bad)
    ns = [entities_per_category(int(mb * 1e6), 3) for mb in (0.1, 1, 5, 20, 100)]
    assert ns == sorted(ns) and all(n % 2 == 0 and 6 <= n <= 32 for n in ns)
    assert ns[0] == 6 and ns[-1] > ns[2]


def test_bad_arguments_raise_substrate_error(tmp_path):
    with pytest.raises(SubstrateError):
        generate_world(tmp_path / "w", size="100KB", langs=("en", "xx"))
    with pytest.raises(SubstrateError):
        generate_world(tmp_path / "w", size="100KB", val_fraction=0.7)
    with pytest.raises(SubstrateError):
        generate_world(tmp_path / "w", size="100KB", entities_per_cat=5)
    with pytest.raises(SubstrateError):
        load_world(tmp_path / "nothing")


def test_category_predictable_from_context_not_from_names(tmp_path):
    """Naive Bayes on the words around the name (name masked) recovers the category of entities
    it never saw; on the names' characters alone it does no better than chance (1/6)."""
    generate_world(tmp_path / "w", size="100KB", seed=0, n_questions=5, entities_per_cat=16)
    for lang in ("en", "ru", "zh"):
        items = [it for it in probe_items(tmp_path / "w", lang=lang, per_entity=30, seed=1)
                 if it["fact"][0] != "size"]

        def ctx(it):
            text = it["text"][: it["start"]] + " " + it["text"][it["end"]:]
            return list(text.replace(" ", "")) if lang == "zh" else re.findall(r"\w+", text.lower())

        def name(it):
            return list(it["text"][it["start"]: it["end"]].lower())

        ents = sorted({it["entity"] for it in items})
        test_ents = set(ents[1::2])
        for feats, lo, hi in ((ctx, 0.9, 1.01), (name, 0.0, 0.45)):
            acc = _naive_bayes([(feats(i), i["label"]) for i in items if i["entity"] not in test_ents],
                               [(feats(i), i["label"]) for i in items if i["entity"] in test_ents])
            assert lo <= acc <= hi, (lang, feats.__name__, acc)


def _naive_bayes(train, test):
    labels = sorted({y for _, y in train})
    counts = {y: {} for y in labels}
    for toks, y in train:
        for t in toks:
            counts[y][t] = counts[y].get(t, 0) + 1
    vocab = {t for c in counts.values() for t in c}
    totals = {y: sum(c.values()) for y, c in counts.items()}
    right = 0
    for toks, y in test:
        scores = [sum(np.log((counts[c].get(t, 0) + 1) / (totals[c] + len(vocab))) for t in toks) for c in labels]
        right += labels[int(np.argmax(scores))] == y
    return right / len(test)
