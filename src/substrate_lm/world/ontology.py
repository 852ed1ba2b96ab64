"""The world's schema: categories, attributes with their value sets, and relations.

Values are canonical English keys (``"red"``, ``"forest"``); each language module maps them to its
surface forms. Every category owns category-specific attributes whose values and verbs only occur
with that category, so a reader can tell an entity's category from the words around it, while the
universal ``size`` attribute is category-neutral (a second, non-category label for probes).

Relations are bijections between two categories of equal size (``friend_of`` is a perfect matching
inside ``person``), so every relation is a function in both directions: "the animal that lives in
<city>" names exactly one entity, which keeps two-hop questions unambiguous.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = ("animal", "plant", "tool", "city", "person", "food")

# attribute -> values (canonical keys; order is part of the world's determinism)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": ("tiny", "small", "large", "huge"),
    "colour": ("red", "blue", "green", "yellow", "white", "black", "grey", "brown"),
    "habitat": ("forest", "desert", "river", "mountains", "swamp", "meadow"),
    "diet": ("grass", "fish", "insects", "seeds", "berries", "nuts"),
    "season": ("spring", "summer", "autumn", "winter"),
    "material": ("iron", "wood", "stone", "bronze", "glass", "bone", "copper", "clay"),
    "use": ("cutting", "digging", "fishing", "sewing", "carving", "hammering"),
    "region": ("north", "south", "east", "west", "coast", "highlands"),
    "landmark": ("bridge", "tower", "market", "harbour", "temple", "library", "garden", "fountain"),
    "profession": ("baker", "smith", "farmer", "teacher", "sailor", "healer", "weaver", "hunter"),
    "hobby": ("singing", "dancing", "chess", "swimming", "reading", "painting"),
    "taste": ("sweet", "sour", "salty", "bitter", "spicy"),
    "meal": ("breakfast", "lunch", "dinner", "holidays"),
}

# category -> its attributes, in the order facts are listed
CATEGORY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "animal": ("size", "colour", "habitat", "diet"),
    "plant": ("size", "colour", "season"),
    "tool": ("size", "material", "use"),
    "city": ("size", "region", "landmark"),
    "person": ("size", "profession", "hobby"),
    "food": ("size", "taste", "meal"),
}

# category -> {relation: object category}; each is a bijection (see module docstring)
CATEGORY_RELATIONS: dict[str, dict[str, str]] = {
    "animal": {"lives_in": "city"},
    "plant": {"grows_in": "city"},
    "tool": {"made_by": "person"},
    "city": {},
    "person": {"lives_in": "city", "friend_of": "person"},
    "food": {"made_from": "plant"},
}

# relation -> [(subject category, object category), ...] (``lives_in`` serves animals and persons)
RELATIONS: dict[str, list[tuple[str, str]]] = {}
for _cat, _rels in CATEGORY_RELATIONS.items():
    for _rel, _obj in _rels.items():
        RELATIONS.setdefault(_rel, []).append((_cat, _obj))

# Two-hop chains. Forward: (subject category, relation, attribute of the object).
# Inverse: (given object category, relation, subject category, attribute of the subject): "the
# <subject category> that <relation> <given>" is unique because every relation is a bijection.
TWO_HOP_FORWARD: tuple[tuple[str, str, str], ...] = (
    ("animal", "lives_in", "landmark"),
    ("person", "lives_in", "region"),
    ("plant", "grows_in", "region"),
    ("tool", "made_by", "profession"),
    ("food", "made_from", "colour"),
    ("person", "friend_of", "hobby"),
)
TWO_HOP_INVERSE: tuple[tuple[str, str, str, str], ...] = (
    ("city", "lives_in", "animal", "colour"),
    ("city", "lives_in", "person", "profession"),
    ("person", "made_by", "tool", "material"),
    ("plant", "made_from", "food", "taste"),
)


def template_key(table: dict, attr: str, category: str) -> str:
    """Key of ``attr`` for a subject of ``category`` in a template table.

    Language modules key templates by ``"attr/category"`` where the phrasing depends on the
    category (an animal's colour is its fur, a plant's its flowers) and by plain ``attr`` otherwise.
    """
    specific = f"{attr}/{category}"
    if specific in table:
        return specific
    if attr in table:
        return attr
    raise KeyError(f"no template for {attr!r} ({category})")


def chain_key_forward(subject_cat: str, rel: str, attr: str) -> str:
    return f"fwd:{subject_cat}:{rel}:{attr}"


def chain_key_inverse(given_cat: str, rel: str, subject_cat: str, attr: str) -> str:
    return f"inv:{given_cat}:{rel}:{subject_cat}:{attr}"


def schema_facts() -> list[tuple[str, str]]:
    """Every (category, attribute-or-relation) pair; ``isa`` first for each category."""
    out = []
    for cat in CATEGORIES:
        out.append((cat, "isa"))
        out.extend((cat, a) for a in CATEGORY_ATTRIBUTES[cat])
        out.extend((cat, r) for r in CATEGORY_RELATIONS[cat])
    return out


def all_chain_keys() -> list[str]:
    return [chain_key_forward(*c) for c in TWO_HOP_FORWARD] + [chain_key_inverse(*c) for c in TWO_HOP_INVERSE]
