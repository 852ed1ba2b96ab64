"""Fixtures for the evaluation tests (builders live in eval_helpers.py)."""

from __future__ import annotations

import pytest
import torch

from eval_helpers import arc_rows, make_char_tokenizer, make_tiny_neox, mmlu_rows, write_jsonl


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; with the CPUs shared (load above the core count),
    two OpenMP threads made these tests up to 50x slower. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def char_tok():
    return make_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(char_tok):
    return make_tiny_neox(len(char_tok))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tok, tiny_model):
    d = tmp_path_factory.mktemp("tiny_neox")
    tiny_model.save_pretrained(d)
    char_tok.save_pretrained(d)
    return d


@pytest.fixture()
def bench_dir(tmp_path):
    """A data dir with small files for every benchmark, in the hub schemas."""
    d = tmp_path / "bench"
    write_jsonl(d / "ai2_arc/ARC-Easy/validation.jsonl", arc_rows(8))
    write_jsonl(d / "ai2_arc/ARC-Challenge/validation.jsonl", arc_rows(6, "Chal_"))
    write_jsonl(d / "commonsense_qa/validation.jsonl", [
        {**r, "choices": {"label": list("ABCDE"), "text": r["choices"]["text"] + ["none"]},
         "question_concept": "x"} for r in arc_rows(5, "csqa_")
    ])
    # MMLU: one folder per subject (the hub's config-per-subject layout, lukaemon schema)
    write_jsonl(d / "mmlu/anatomy/test.jsonl", mmlu_rows(4))
    write_jsonl(d / "mmlu/virology/test.jsonl", mmlu_rows(6, "BBBA"))
    write_jsonl(d / "boolq/validation.jsonl", [
        {"question": f"is {i} even", "passage": f"The number {i}.", "answer": i % 2 == 0} for i in range(6)
    ])
    write_jsonl(d / "squad_v2/validation.jsonl", [
        {"id": f"sq{i}", "title": "t", "context": f"The cat is called Tom{i}.", "question": "What is the cat called?",
         "answers": {"text": [f"Tom{i}"], "answer_start": [18]}} for i in range(5)
    ] + [
        {"id": "sq_long", "title": "t", "context": "c", "question": "q",
         "answers": {"text": ["much too long answer"], "answer_start": [0]}},
        {"id": "sq_unanswerable", "title": "t", "context": "c", "question": "q",
         "answers": {"text": [], "answer_start": []}},
    ])
    write_jsonl(d / "opus-100/en-ru/validation.jsonl", [
        {"translation": {"en": f"cat {i}", "ru": f"кот {i}"}} for i in range(4)
    ])
    write_jsonl(d / "opus-100/en-zh/validation.jsonl", [
        {"translation": {"en": f"you {i}", "zh": f"你 {i}"}} for i in range(4)
    ])
    write_jsonl(d / "questions/mc.jsonl", [
        {**r, "lang": "en" if i % 2 else "ru", "kind": "fact" if i < 3 else "two_hop", "entity": f"e{i}"}
        for i, r in enumerate(arc_rows(6, "world-mc-"))
    ])
    write_jsonl(d / "questions/short.jsonl", [
        {"id": f"world-short-{i}", "question": f"Where does zorp{i} live?", "answers": {"text": [f"Vel{i}", "Velm"]},
         "lang": "en", "kind": "fact", "entity": f"e{i}"} for i in range(4)
    ])
    return d
