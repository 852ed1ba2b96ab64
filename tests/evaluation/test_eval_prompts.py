"""Prompt strings byte-identical to the published formats (spec section 5, written out literally)."""

from __future__ import annotations

import pytest

from substrate_lm.evaluation import load_bench
from substrate_lm.evaluation.datasets import Item
from substrate_lm.evaluation.prompts import (
    boolq_prompt,
    lang_name,
    loglik_request,
    mc_lines_prompt,
    mmlu_prompt,
    paper_prompt,
    short_answer_prompt,
    squad_prompt,
    translation_prompt,
)


def test_mmlu_prompt_options_on_one_line():
    got = mmlu_prompt("What is 2+2?", ["3", "4", "5", "6"])
    assert got == "Question: What is 2+2?\nOptions: A) 3 B) 4 C) 5 D) 6\nAnswer:"


def test_arc_and_csqa_prompt_one_option_per_line_with_dataset_labels():
    got = mc_lines_prompt("Which gas do plants give off?", list("ABCD"), ["oxygen", "nitrogen", "helium", "argon"])
    assert got == (
        "Question: Which gas do plants give off?\nOptions:\nA) oxygen\nB) nitrogen\nC) helium\nD) argon\nAnswer:"
    )
    # ARC items with numeric labels keep them
    got = mc_lines_prompt("Pick one.", ["1", "2", "3"], ["x", "y", "z"])
    assert got == "Question: Pick one.\nOptions:\n1) x\n2) y\n3) z\nAnswer:"


def test_boolq_squad_and_translation_prompts():
    assert boolq_prompt("Water boils at 100 C.", "does water boil at 100 c") == (
        "Context: Water boils at 100 C.\nQuestion: does water boil at 100 c\nAnswer (True/False):"
    )
    assert squad_prompt("The cat is Tom.", "What is the cat called?") == (
        "Context: The cat is Tom.\nQuestion: What is the cat called?\nAnswer:"
    )
    assert translation_prompt("The cat.", "en", "ru") == "Translate from English to Russian:\nThe cat.\nAnswer:"
    assert translation_prompt("Кот.", "ru", "en") == "Translate from Russian to English:\nКот.\nAnswer:"
    assert translation_prompt("猫", "zh", "en") == "Translate from Chinese to English:\n猫\nAnswer:"
    assert translation_prompt("cat", "en", "zh") == "Translate from English to Chinese:\ncat\nAnswer:"
    # the published chained replace, kept for codes outside en/ru/zh
    assert lang_name("de") == "de"
    assert short_answer_prompt("Where is X?") == "Question: Where is X?\nAnswer:"
    assert short_answer_prompt("Where is X?", "X is in Y.") == "Context: X is in Y.\nQuestion: Where is X?\nAnswer:"


def test_paper_prompt_from_loaded_items(bench_dir):
    arc = load_bench("arc-e", bench_dir, seed=0)
    it = next(i for i in arc.items if i.id == "Mercury_3")
    assert paper_prompt(it) == (
        "Question: Which item number 3 is right?\nOptions:\nA) red 3\nB) blue 3\nC) green 3\nD) gold 3\nAnswer:"
    )
    mmlu = load_bench("mmlu", bench_dir)
    it = next(i for i in mmlu.items if i.id == "mmlu/anatomy/2")
    assert paper_prompt(it) == "Question: What is 2 plus one?\nOptions: A) 3 B) 2 C) 4 D) none\nAnswer:"
    opus = load_bench("bleu-ru-en", bench_dir)
    it = next(i for i in opus.items if i.id.endswith("/1"))
    assert paper_prompt(it) == "Translate from Russian to English:\nкот 1\nAnswer:"
    assert it.answer == "cat 1"


def test_loglik_requests_text_and_letter_modes():
    it = Item(id="x", task="mc", question="Q?", answer="C", choices=["a", "b", "c"], labels=["A", "B", "C"])
    assert loglik_request(it, "text") == ("Question: Q?\nAnswer:", ["a", "b", "c"], 2)
    assert loglik_request(it, "letter") == ("Question: Q?\nOptions:\nA) a\nB) b\nC) c\nAnswer:", ["A", "B", "C"], 2)
    b = Item(id="b", task="boolq", question="q", answer="F", context="p")
    assert loglik_request(b) == ("Context: p\nQuestion: q\nAnswer (True/False):", ["True", "False"], 1)
    with pytest.raises(ValueError):
        loglik_request(it, "bogus")
