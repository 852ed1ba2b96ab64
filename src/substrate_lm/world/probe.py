"""Probe items: an entity's name inside a sentence, with its character span and ground-truth labels.

The analysis pools a model's hidden states over the span and trains probes to recover the label
(the entity's category). Items of one entity share its name, so cross-validation must hold whole
entities out (``entity`` is the group); otherwise a probe can memorise the name's substrate rows
and layer 0 would not sit at chance.
"""

from __future__ import annotations

from ..errors import SubstrateError
from .languages import get_lang
from .render import fact_templates, fill, value_kwargs
from .truth import entity_index, is_relation, load_world, rng_for, subject_facts

STYLES = ("train", "neutral", "mixed")


def probe_items(world_dir, lang: str = "en", per_entity: int = 4, seed: int = 0, style: str = "train",
                world: dict | None = None) -> list[dict]:
    """Sentences that contain an entity's name, labelled with the entity's category.

    Args:
        world_dir: a folder written by :func:`~substrate_lm.world.generate_world` (its ``world.json``).
        lang: language of the sentences (one of the world's).
        per_entity: items per entity (distinct sentences while the templates last).
        seed: sampling seed.
        style: ``"train"``: sentences of the training templates stating the entity's own facts
            (some of them put category words before the name); ``"neutral"``: held-out carrier
            sentences with no category cue ("The old story begins with {name}."), so only what a
            model stores about the name itself can reveal the category; ``"mixed"``: alternate.
        world: an already loaded ground truth (skips reading ``world_dir``).

    Returns:
        One dict per item: ``text``, ``start``, ``end`` (the name is ``text[start:end]``),
        ``label`` (category), ``entity`` (id), ``attribute`` (the entity's ``size``, a
        category-independent second label), ``attributes`` (all attribute values), ``lang``,
        ``style`` (of this item) and ``fact`` (the fact the sentence states, ``None`` if neutral).

    Raises:
        SubstrateError: for a missing world, a language it was not written in, or a bad style.
    """
    if style not in STYLES:
        raise SubstrateError(f"probe style {style!r} is unknown; use one of {', '.join(STYLES)}")
    if per_entity < 1:
        raise SubstrateError(f"per_entity must be >= 1, got {per_entity}")
    world = world if world is not None else load_world(world_dir)
    if lang not in world.get("langs", []):
        raise SubstrateError(
            f"the world in {world_dir} has no language {lang!r} (it has {', '.join(world.get('langs', []))}); "
            "regenerate it with that language in --langs"
        )
    mod = get_lang(lang)
    ents = entity_index(world)
    rng = rng_for(seed, "probe", lang, style)
    items: list[dict] = []
    for e in world["entities"]:
        name = e["names"][lang]
        train_pool = []
        for key, value in subject_facts(e):
            kw = {"obj": ents[value]["names"][lang]} if is_relation(key) else value_kwargs(mod, key, value)
            for t in fact_templates(mod.SENTENCES, key, e["category"]):
                train_pool.append((t, kw, [key, value]))
        neutral_pool = [(t, {}, None) for t in mod.NEUTRAL]
        tr = rng.permutation(len(train_pool))
        ne = rng.permutation(len(neutral_pool))
        for i in range(per_entity):
            use_neutral = style == "neutral" or (style == "mixed" and i % 2 == 1)
            if use_neutral:
                t, kw, fact = neutral_pool[ne[i % len(ne)]]
            else:
                t, kw, fact = train_pool[tr[i % len(tr)]]
            text, start, end = fill(t, name, **kw)
            items.append({
                "text": text, "start": start, "end": end, "label": e["category"], "entity": e["id"],
                "attribute": e["attributes"].get("size"), "attributes": dict(e["attributes"]),
                "lang": lang, "style": "neutral" if use_neutral else "train", "fact": fact,
            })
    return items
