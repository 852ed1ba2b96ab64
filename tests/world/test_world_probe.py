"""Probe items: spans, labels, styles, determinism."""

from __future__ import annotations

from collections import Counter

import pytest

from substrate_lm.analysis.items import world_items
from substrate_lm.errors import SubstrateError
from substrate_lm.world import probe_items
from substrate_lm.world.verify import _Reader


@pytest.mark.parametrize("lang", ["en", "ru", "zh"])
def test_spans_labels_and_counts(world_dir, world, lang):
    items = probe_items(world_dir, lang=lang, per_entity=4, seed=0)
    ents = {e["id"]: e for e in world["entities"]}
    assert len(items) == 4 * len(ents)
    assert Counter(it["entity"] for it in items) == Counter({e: 4 for e in ents})
    for it in items:
        e = ents[it["entity"]]
        assert it["text"][it["start"]:it["end"]] == e["names"][lang]
        assert it["label"] == e["category"] and it["attribute"] == e["attributes"]["size"]
        assert it["attributes"] == e["attributes"] and it["lang"] == lang and it["style"] == "train"
    per_entity = {}
    for it in items:
        per_entity.setdefault(it["entity"], set()).add(it["text"])
    assert all(len(v) == 4 for v in per_entity.values())  # distinct sentences


@pytest.mark.parametrize("lang", ["en", "ru", "zh"])
def test_training_style_sentences_are_true_training_sentences(world_dir, train_docs, world, lang):
    reader = _Reader(world, lang)
    text = "\n".join(d["text"] for d in train_docs if d["lang"] == lang)
    items = probe_items(world_dir, lang=lang, per_entity=2, seed=3)
    for it in items:
        err, fact = reader.check_sentence(it["text"])
        assert err is None and list(fact) == [it["entity"], *it["fact"]], (it, err)
    # a 100 KB world states each fact a few times, so many of these exact sentences occur in it
    assert sum(it["text"] in text for it in items) >= 0.4 * len(items)


def test_neutral_style_has_no_category_cue_and_never_occurs_in_training(world_dir, train_docs, world):
    text = "\n".join(d["text"] for d in train_docs if d["lang"] == "en")
    items = probe_items(world_dir, lang="en", per_entity=4, seed=0, style="neutral")
    frames = {it["text"][:it["start"]] + "{name}" + it["text"][it["end"]:] for it in items}
    assert len(frames) >= 6
    cue_words = {w for forms in world["surface"]["en"].values() for w in forms.values()}
    for it in items:
        assert it["style"] == "neutral" and it["fact"] is None
        assert it["text"] not in text
        words = set(it["text"].lower().replace(".", "").replace(",", "").split())
        assert not words & cue_words, it["text"]
    mixed = probe_items(world_dir, lang="zh", per_entity=4, seed=0, style="mixed")
    assert Counter(it["style"] for it in mixed) == Counter({"train": len(mixed) // 2, "neutral": len(mixed) // 2})


def test_deterministic_and_seeded(world_dir):
    a = probe_items(world_dir, lang="ru", per_entity=3, seed=0)
    assert a == probe_items(world_dir, lang="ru", per_entity=3, seed=0)
    assert a != probe_items(world_dir, lang="ru", per_entity=3, seed=1)


def test_errors(world_dir, tmp_path):
    with pytest.raises(SubstrateError):
        probe_items(tmp_path, lang="en")
    with pytest.raises(SubstrateError):
        probe_items(world_dir, lang="de")
    with pytest.raises(SubstrateError):
        probe_items(world_dir, lang="en", style="weird")


def test_analysis_accepts_the_items(world_dir):
    """The analysis package reads world items through this function."""
    items = world_items(world_dir, lang="en", per_entity=2, seed=0)
    assert len(items) == 2 * 36 and {it["label"] for it in items} == {
        "animal", "plant", "tool", "city", "person", "food"}
