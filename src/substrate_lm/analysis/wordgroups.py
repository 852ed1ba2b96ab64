"""The papers' seven word groups, as probe items for natural-language models.

The t-SNE figure of the Emergent-Semantics work shows ~40 words in seven groups (animals, fruits,
cities, colours, professions, emotions, digits): trained input embeddings cluster by group, frozen
glyph codes do not. Here every word is placed in a few neutral sentence templates so a causal LM
reads it in context; its representation is the mean over the word's tokens (and over templates
for the maps). Probes hold whole words out (the group of an item is the word), so a probe must
generalise to unseen words of a group, not recognise the word.

The templates are deliberately group-neutral ("The word is ___.") so the context cannot reveal
the group; at the substrate layer the context plays no role at all.
"""

from __future__ import annotations

from ..errors import SubstrateError

WORD_GROUPS: dict[str, list[str]] = {
    "animals": ["dog", "cat", "horse", "cow", "lion", "tiger", "elephant", "rabbit", "wolf", "bear"],
    "fruits": ["apple", "banana", "grape", "pear", "cherry", "lemon", "peach", "mango", "plum", "melon"],
    "cities": ["London", "Paris", "Berlin", "Tokyo", "Moscow", "Rome", "Madrid", "Beijing", "Cairo", "Sydney"],
    "colours": ["red", "blue", "green", "yellow", "purple", "black", "white", "pink", "brown", "grey"],
    "professions": ["doctor", "teacher", "lawyer", "engineer", "farmer", "nurse", "pilot", "baker", "chef", "writer"],
    "emotions": ["joy", "sadness", "anger", "fear", "love", "hate", "surprise", "disgust", "pride", "shame"],
    "digits": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
}
"""Seven groups of ten English words each ("orange" is left out: it is both a fruit and a colour)."""

TEMPLATES: list[str] = [
    "{w}",
    "The word is {w}.",
    "I wrote {w} on the page.",
    "She said {w} and then stopped.",
    "Next on the list: {w}, then the rest.",
    "We talked about {w} for a while.",
]
"""Group-neutral contexts; ``{w}`` marks the word."""


def word_group_items(
    groups: dict[str, list[str]] | None = None,
    templates: list[str] | None = None,
    lang: str = "en",
) -> list[dict]:
    """Probe items for the word groups: every word in every template.

    Args:
        groups: group -> words (default :data:`WORD_GROUPS`).
        templates: contexts containing ``{w}`` once (default :data:`TEMPLATES`).
        lang: only ``"en"`` ships; other languages need ``groups`` and ``templates``.

    Returns:
        Items ``{"text", "start", "end", "label" (group), "entity" (word), "template"}``.
    """
    if groups is None and lang != "en":
        raise SubstrateError(
            f"built-in word groups are English only (got lang={lang!r}); pass groups and templates for "
            "other languages or analyse a world with --world"
        )
    groups = groups or WORD_GROUPS
    templates = templates or TEMPLATES
    items = []
    for t_index, template in enumerate(templates):
        if template.count("{w}") != 1:
            raise SubstrateError(f"template {template!r} must contain '{{w}}' exactly once")
        prefix, suffix = template.split("{w}")
        for label, words in groups.items():
            for word in words:
                items.append(
                    {
                        "text": prefix + word + suffix,
                        "start": len(prefix),
                        "end": len(prefix) + len(word),
                        "label": label,
                        "entity": word,
                        "template": t_index,
                    }
                )
    return items
