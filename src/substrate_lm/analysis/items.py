"""Probe items: validation, grouping and seeded subsampling.

An item is one occurrence of a word or entity name in context::

    {"text": "Yesterday Zorblax ate a pear.", "start": 10, "end": 17,
     "label": "animal", "entity": "e17"}

``start``/``end`` are the character span of the name inside ``text`` (end exclusive), ``label`` is
the ground-truth class a probe must recover (the entity's category) and ``entity`` identifies the
entity, so cross-validation can hold whole entities out (see :mod:`.probes`). ``entity`` is
optional: without it the surface form ``text[start:end]`` is the group. Extra keys (for example
``attribute`` from :func:`substrate_lm.world.probe_items`) are kept untouched.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

from ..errors import SubstrateError
from ..world import probe_items


def normalize_items(items: Iterable[dict]) -> list[dict]:
    """Check items and return shallow copies with ``entity`` filled in and ``label`` as a string.

    Args:
        items: dicts with ``text``, ``start``, ``end``, ``label`` and optionally ``entity``.

    Returns:
        A new list of dicts (inputs are not modified).

    Raises:
        SubstrateError: on a missing key or a span outside its text.
    """
    out = []
    for i, item in enumerate(items):
        try:
            text, start, end, label = item["text"], int(item["start"]), int(item["end"]), item["label"]
        except (KeyError, TypeError, ValueError) as exc:
            raise SubstrateError(
                f"probe item {i} lacks a valid text/start/end/label ({exc!s}); every item needs "
                "{'text', 'start', 'end', 'label'}"
            ) from None
        if not isinstance(text, str) or not 0 <= start < end <= len(text):
            raise SubstrateError(
                f"probe item {i} has span [{start}, {end}) outside its text of length "
                f"{len(text) if isinstance(text, str) else '?'}; fix the item's start/end"
            )
        new = dict(item)
        new["start"], new["end"], new["label"] = start, end, str(label)
        entity = item.get("entity")
        new["entity"] = str(entity) if entity is not None else text[start:end]
        out.append(new)
    if not out:
        raise SubstrateError("no probe items: give a world folder with entities or a non-empty item list")
    return out


def subsample_items(items: list[dict], max_items: int | None, seed: int = 0) -> list[dict]:
    """Keep at most ``max_items`` items, dropping whole entities so every kept entity stays complete.

    Entities are visited class by class in round-robin order (seeded shuffle inside each class), so
    the class balance survives the cut and every class keeps as many entities as the budget allows.

    Args:
        items: normalised items.
        max_items: the budget; ``None`` or ``<= 0`` keeps everything.
        seed: shuffling seed.

    Returns:
        The kept items in their original order.
    """
    if not max_items or max_items <= 0 or len(items) <= max_items:
        return list(items)
    rng = random.Random(seed)
    by_entity: dict[str, list[int]] = {}
    entity_label: dict[str, str] = {}
    for i, item in enumerate(items):
        by_entity.setdefault(item["entity"], []).append(i)
        entity_label.setdefault(item["entity"], item["label"])
    by_class: dict[str, list[str]] = {}
    for entity, label in entity_label.items():
        by_class.setdefault(label, []).append(entity)
    queues = []
    for label in sorted(by_class):
        ents = sorted(by_class[label])
        rng.shuffle(ents)
        queues.append(ents)
    keep: list[int] = []
    while any(queues):
        progressed = False
        for queue in queues:
            if not queue:
                continue
            idx = by_entity[queue[0]]
            if len(keep) + len(idx) <= max_items:
                keep.extend(idx)
                progressed = True
            queue.pop(0)
        if not progressed and len(keep) >= max_items:
            break
    if not keep:  # one entity alone exceeds the budget: take its first occurrences
        keep = list(range(max_items))
    return [items[i] for i in sorted(keep)]


def load_items_jsonl(path: str | Path) -> list[dict]:
    """Read probe items from a JSON-lines file (one item dict per line)."""
    path = Path(path)
    if not path.is_file():
        raise SubstrateError(f"items file {path} does not exist; give a JSON-lines file of probe items")
    items = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SubstrateError(f"{path}:{n} is not valid JSON ({exc.msg}); one item dict per line") from None
    return normalize_items(items)


def world_items(
    world_dir: str | Path, lang: str = "en", per_entity: int = 4, seed: int = 0, style: str | None = "neutral"
) -> list[dict]:
    """Probe items from a generated semantic world via :func:`substrate_lm.world.probe_items`.

    Args:
        world_dir: folder with ``world.json``.
        lang: language of the sentences.
        per_entity: sentences per entity.
        seed: sampling seed.
        style: the world's probe sentence style when it offers one. ``"neutral"`` (default):
            carrier sentences with no category cue, so only what the model stores about the name
            can reveal the category (in training-style sentences a category word may precede the
            name, and attention could copy it into the name's states even in an untrained model).
            ``"train"`` / ``"mixed"``: the world's other styles. ``None``: the world's default.

    Raises:
        SubstrateError: when the folder is not a world (or :func:`~substrate_lm.world.probe_items`
            refuses the language or style).
    """
    world_dir = Path(world_dir)
    if not (world_dir / "world.json").is_file():
        raise SubstrateError(
            f"{world_dir} is not a semantic world (no world.json); create one with "
            "`substrate-lm corpus world --out DIR`"
        )
    kwargs = {"lang": lang, "per_entity": per_entity, "seed": seed}
    if style is not None:
        kwargs["style"] = style
    return normalize_items(probe_items(world_dir, **kwargs))
