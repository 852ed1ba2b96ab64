"""``balanced_halves``: both alternating entity halves of a category carry the same attribute
values (the docking experiment's entity split), verified sentences, default worlds unchanged."""

from __future__ import annotations

import json
from collections import Counter

from substrate_lm.world import build_world, generate_world, verify_world
from substrate_lm.world.ontology import CATEGORIES, CATEGORY_ATTRIBUTES


def _halves(world: dict, cat: str):
    members = [e for e in world["entities"] if e["category"] == cat]
    return members[0::2], members[1::2]


def test_each_half_has_the_same_values_balanced_within_it():
    for per_cat in (6, 8, 12):
        world = build_world(3, ("en",), per_cat, balanced_halves=True)
        assert world["balanced_halves"] is True
        for cat in CATEGORIES:
            a, b = _halves(world, cat)
            for attr in CATEGORY_ATTRIBUTES[cat]:
                ca = Counter(e["attributes"][attr] for e in a)
                cb = Counter(e["attributes"][attr] for e in b)
                assert ca == cb, (per_cat, cat, attr)
                # balanced inside a half: counts differ by at most one
                assert max(ca.values()) - min(ca.values()) <= 1
                # and the halves are not the same assignment in the same order every time
        orders = [[e["attributes"]["size"] for e in _halves(world, c)[0]] for c in CATEGORIES]
        assert len({tuple(o) for o in orders}) > 1


def test_unbalanced_world_splits_values_between_halves():
    # the older draw (and the default) balances over the whole category: with 6 entities and a
    # 6-value attribute the two halves hold disjoint values, the bias the option removes
    world = build_world(0, ("en",), 6)
    assert "balanced_halves" not in world
    a, b = _halves(world, "animal")
    assert not {e["attributes"]["habitat"] for e in a} & {e["attributes"]["habitat"] for e in b}


def test_generated_balanced_world_verifies_and_default_is_unchanged(tmp_path):
    generate_world(tmp_path / "bal", size="40KB", langs=("en", "ru"), seed=0, entities_per_cat=6,
                   balanced_halves=True)
    assert verify_world(tmp_path / "bal")["ok"]
    assert json.loads((tmp_path / "bal" / "corpus.json").read_text(encoding="utf-8"))["balanced_halves"] is True
    generate_world(tmp_path / "a", size="20KB", langs=("en",), seed=1)
    generate_world(tmp_path / "b", size="20KB", langs=("en",), seed=1, balanced_halves=False)
    for name in ("train.jsonl", "world.json", "corpus.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "world.json").read_bytes() != (tmp_path / "bal" / "world.json").read_bytes()
