"""The ground truth: entities, their categories, attributes and relations, drawn from a seed.

The world is small on purpose: a tiny model trained for minutes on a few megabytes has to see
every entity many times, in varied sentences, to learn what it is. :func:`entities_per_category`
therefore grows slowly with the text per language (about 8 * MB**(1/3), 4..32, always even).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ..errors import SubstrateError
from ..fsutil import read_json
from .languages import get_lang
from .names import make_names
from .ontology import ATTRIBUTES, CATEGORIES, CATEGORY_ATTRIBUTES, CATEGORY_RELATIONS, RELATIONS

WORLD_VERSION = 1
MIN_PER_CATEGORY = 6


def rng_for(seed: int, *keys) -> np.random.Generator:
    """An independent generator for one purpose of one seed (keys: ints or strings).

    Strings are hashed with CRC-32 (stable across runs, unlike ``hash``), so adding a purpose never
    shifts the random stream of another one.
    """
    words = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        words.append(zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(words))


def entities_per_category(size_bytes: int, n_langs: int) -> int:
    """How many entities each category gets for a corpus of ``size_bytes`` over ``n_langs`` languages.

    About 8 * (MB per language) ** (1/3): 6 at 100 KB in three languages, 10 at 5 MB, 16 at 20 MB,
    26 at 100 MB. Always even (``friend_of`` pairs persons) and at least 6 ("Who is the friend of
    X?" needs three distractors that are neither the answer nor X).
    """
    mb = max(size_bytes, 1) / 1e6 / max(n_langs, 1)
    n = int(round(8.0 * mb ** (1.0 / 3.0)))
    n = min(max(n, MIN_PER_CATEGORY), 32)
    return n + (n % 2)


def build_world(seed: int, langs, per_category: int, balanced_halves: bool = False) -> dict:
    """Draw a world: ``per_category`` entities in each category, with names in ``langs``.

    Args:
        seed: world seed.
        langs: language codes (each needs a template module).
        per_category: entities per category (even, >= 6).
        balanced_halves: give the two alternating halves of every category (its entities 0, 2, 4..
            and 1, 3, 5.., the docking experiment's entity split) the same attribute values: each
            half draws its own permutation of the same ``per_category / 2`` values. A model that
            learned one half then knows the values of the other half's entities but not which
            entity has which, so its ignorance is not a bias against the other half's answers.
            False (the default) balances values over the whole category, as older worlds did.

    Returns:
        The ground-truth dict written to ``world.json`` (schema in the developer brief), plus
        ``"surface"``: per language the main surface form of every category and value.
    """
    if per_category < MIN_PER_CATEGORY or per_category % 2:
        raise SubstrateError(f"entities per category must be even and >= {MIN_PER_CATEGORY}, got {per_category}")
    langs = tuple(langs)
    rng = rng_for(seed, "world")
    n_total = per_category * len(CATEGORIES)
    names = make_names(n_total, rng_for(seed, "names"), langs)

    entities: list[dict] = []
    by_cat: dict[str, list[int]] = {}
    for ci, cat in enumerate(CATEGORIES):
        for j in range(per_category):
            idx = ci * per_category + j
            entities.append({"id": f"e{idx:03d}", "names": names[idx], "category": cat,
                             "attributes": {}, "relations": {}})
            by_cat.setdefault(cat, []).append(idx)

    # attributes: balanced (every value used about equally often within a category), then shuffled;
    # with balanced_halves each alternating half of the category gets the same values
    for cat in CATEGORIES:
        members = by_cat[cat]
        groups = [members[0::2], members[1::2]] if balanced_halves else [members]
        for attr in CATEGORY_ATTRIBUTES[cat]:
            values = list(ATTRIBUTES[attr])
            order = rng.permutation(len(values))
            tiled = [values[order[i % len(values)]] for i in range(len(groups[0]))]
            for group in groups:
                for k, m in enumerate(rng.permutation(len(group))):
                    entities[group[m]]["attributes"][attr] = tiled[k]

    # relations: bijections between categories, friend_of a perfect matching
    for cat in CATEGORIES:
        for rel, obj_cat in CATEGORY_RELATIONS[cat].items():
            subj, objs = by_cat[cat], by_cat[obj_cat]
            if rel == "friend_of":
                perm = rng.permutation(len(subj))
                for a, b in zip(perm[0::2], perm[1::2]):
                    entities[subj[a]]["relations"][rel] = entities[subj[b]]["id"]
                    entities[subj[b]]["relations"][rel] = entities[subj[a]]["id"]
            else:
                perm = rng.permutation(len(objs))
                for i, s in enumerate(subj):
                    entities[s]["relations"][rel] = entities[objs[perm[i]]]["id"]

    surface = {}
    for code in langs:
        lang = get_lang(code)
        surface[code] = {attr: {v: forms[""] for v, forms in table.items()} for attr, table in lang.VALUES.items()}
    extra = {"balanced_halves": True} if balanced_halves else {}  # older world.json files stay identical
    return {
        "version": WORLD_VERSION,
        "seed": int(seed),
        **extra,
        "langs": list(langs),
        "entities_per_category": per_category,
        "categories": list(CATEGORIES),
        "attributes": {a: list(v) for a, v in ATTRIBUTES.items()},
        "category_attributes": {c: list(a) for c, a in CATEGORY_ATTRIBUTES.items()},
        "relations": {r: [list(p) for p in pairs] for r, pairs in RELATIONS.items()},
        "entities": entities,
        "surface": surface,
    }


def load_world(world_dir) -> dict:
    """Read the ground truth (``world.json``) of a generated world folder.

    Raises:
        SubstrateError: when the folder has no readable ``world.json``.
    """
    path = Path(world_dir) / "world.json"
    if not path.is_file():
        raise SubstrateError(
            f"{world_dir} is not a semantic world (no world.json); create one with "
            "`substrate-lm corpus world --out DIR`"
        )
    world = read_json(path, fix="regenerate the world with `substrate-lm corpus world`")
    if not isinstance(world, dict) or "entities" not in world:
        raise SubstrateError(f"{path} has no entities; regenerate the world with `substrate-lm corpus world`")
    return world


def entity_index(world: dict) -> dict[str, dict]:
    """``{entity id: entity}``."""
    return {e["id"]: e for e in world["entities"]}


def subject_facts(entity: dict) -> list[tuple[str, str]]:
    """The facts whose subject is ``entity``: ``[("isa", category), (attr, value), (rel, id)...]``."""
    facts = [("isa", entity["category"])]
    facts += [(a, v) for a, v in entity["attributes"].items()]
    facts += [(r, o) for r, o in entity["relations"].items()]
    return facts


def is_relation(key: str) -> bool:
    """True for a relation key (its value is an entity id), False for ``isa`` and attributes."""
    return key in RELATIONS
