"""Training multiple-choice items (``mc_variants``, ``mc_share``): the papers' format, training
phrasings only, answers right, letters shuffled; default worlds unchanged."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.world import generate_world
from substrate_lm.world.verify import heldout_leaks, read_docs

MC = re.compile(r"Question: (?P<q>[^\n]*)\nOptions:\n(?P<opts>(?:[ABCD]\) [^\n]*\n){4})Answer: (?P<letter>[ABCD])")
SHORT = re.compile(r"Question: (?P<q>[^\n]*)\nAnswer: (?P<a>[^\n]*)")


@pytest.fixture(scope="module")
def mc_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("mcworld") / "w"
    generate_world(out, size="60KB", langs=("en", "ru"), seed=0, entities_per_cat=6, qa_fraction=0.5,
                   mc_variants=8, mc_share=0.5)
    return out


def _items(text: str):
    mc = [(m["q"], [o[3:] for o in m["opts"].splitlines()], m["letter"]) for m in MC.finditer(text)]
    short = {m["q"]: m["a"] for m in SHORT.finditer(text)}
    return mc, short


def test_default_world_is_unchanged(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_world(a, size="20KB", langs=("en",), seed=1)
    generate_world(b, size="20KB", langs=("en",), seed=1, mc_variants=2, mc_share=None)
    for name in ("train.jsonl", "val.jsonl", "questions/mc.jsonl", "corpus.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert "mc_variants" not in json.loads((a / "corpus.json").read_text(encoding="utf-8"))


def test_mc_items_use_training_phrasings_right_answers_and_shuffled_letters(mc_world):
    world = json.loads((mc_world / "world.json").read_text(encoding="utf-8"))
    docs = read_docs(mc_world, "train")
    text = "\n\n".join(d["text"] for d in docs)
    mc, short = _items(text)
    assert len(mc) > 100 and len(short) > 50
    # share of multiple-choice items among the question-answer items is about mc_share
    n_short = sum(1 for _ in SHORT.finditer(text))  # an MC item has its Options between question and answer
    assert 0.35 < len(mc) / (len(mc) + n_short) < 0.65
    # the option at the answer letter is the answer the same question gets in short form
    checked = 0
    for q, options, letter in mc:
        assert len(set(options)) == 4
        if q in short:
            assert options["ABCD".index(letter)] == short[q], (q, options, letter)
            checked += 1
    assert checked > 30
    letters = Counter(letter for _, _, letter in mc)
    assert min(letters.values()) / len(mc) > 0.15  # every letter is the answer about a quarter of the time
    # many renderings of the same question: the letter cannot be memorised per question
    orders = Counter(q for q, _, _ in mc)
    assert max(orders.values()) >= 2
    # no held-out question (or its phrasing) reaches the training text, MC items included
    heldout = [json.loads(line)["question"] for line in
               (mc_world / "questions" / "mc.jsonl").read_text(encoding="utf-8").splitlines()]
    assert not [q for q in heldout if q in text]
    assert not {q for q, _, _ in mc} & set(heldout)
    by_lang = {lang: "\n".join(d["text"] for d in docs if d["lang"] == lang) for lang in ("en", "ru")}
    assert heldout_leaks(world, by_lang) == []


def test_mc_share_extremes_and_bad_values(tmp_path):
    generate_world(tmp_path / "all", size="20KB", langs=("en",), seed=0, qa_fraction=0.5, mc_share=1.0)
    text = (tmp_path / "all" / "train.jsonl").read_text(encoding="utf-8")
    assert "\\nOptions:" in text and not re.search(r"\?\\nAnswer:", text)
    generate_world(tmp_path / "none", size="20KB", langs=("en",), seed=0, qa_fraction=0.5, mc_share=0.0)
    text = (tmp_path / "none" / "train.jsonl").read_text(encoding="utf-8")
    assert "Options:" not in text and "\\nAnswer:" in text
    for kw in ({"mc_share": 1.5}, {"mc_variants": 0}, {"mc_variants": 2.5}):
        with pytest.raises(SubstrateError, match="mc_"):
            generate_world(tmp_path / "bad", size="20KB", langs=("en",), **kw)
