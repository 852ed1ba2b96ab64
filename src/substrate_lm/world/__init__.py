"""The built-in semantic world: a seeded synthetic corpus with ground truth and held-out questions.

Entities with invented names (Latin, Cyrillic and CJK spellings of the same syllables) belong to
categories (animal, plant, tool, city, person, food), have category-specific attributes and are
linked by relations; many templates per fact and language render them as varied sentences in
English, Russian and Chinese. Questions use phrasings never seen in training.

    from substrate_lm.world import generate_world, load_world, probe_items
    summary = generate_world("out/world", size="5MB", langs=("en", "ru", "zh"), seed=0)
    world = load_world("out/world")            # the ground truth (world.json)
    items = probe_items("out/world", lang="en", per_entity=4, seed=0)

CLI: ``substrate-lm corpus world --size 20MB --langs en,ru,zh --seed 0 --out DIR``.
"""

from .generator import CORPUS_MANIFEST, check_world_out, generate_world, parse_size
from .languages import LANGUAGES, parse_langs
from .ontology import ATTRIBUTES, CATEGORIES, CATEGORY_ATTRIBUTES, CATEGORY_RELATIONS
from .probe import probe_items
from .questions import make_questions
from .truth import build_world, entities_per_category, load_world
from .verify import verify_world

__all__ = [
    "generate_world", "check_world_out", "CORPUS_MANIFEST", "parse_size", "load_world", "probe_items", "verify_world", "build_world",
    "make_questions", "entities_per_category", "parse_langs", "LANGUAGES", "CATEGORIES", "ATTRIBUTES",
    "CATEGORY_ATTRIBUTES", "CATEGORY_RELATIONS",
]
