"""Benchmark loading: local files in the hub schemas, the published sampling, the hub path."""

from __future__ import annotations

import json

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.evaluation import datasets as ds
from substrate_lm.evaluation.datasets import load_bench, parse_benches
from substrate_lm.world import generate_world

from eval_helpers import arc_rows, write_jsonl


def test_every_benchmark_loads_from_local_files(bench_dir):
    sizes = {}
    for name in ds.BENCHES:
        d = load_bench(name, bench_dir)
        sizes[name] = len(d.items)
        assert d.source.startswith(str(bench_dir))
        assert len({it.id for it in d.items}) == len(d.items)
    assert sizes == {"mmlu": 10, "arc-e": 8, "arc-c": 6, "csqa": 5, "squad": 5, "boolq": 6, "bleu-en-ru": 4,
                     "bleu-ru-en": 4, "bleu-en-zh": 4, "bleu-zh-en": 4, "world-mc": 6, "world-short": 4}


def test_squad_keeps_answerable_items_with_short_first_answer(bench_dir):
    d = load_bench("squad", bench_dir)
    ids = {it.id for it in d.items}
    assert ids == {f"sq{i}" for i in range(5)}  # the long and the unanswerable ones are dropped
    assert d.n_available == 5
    assert all(len(it.answer) <= 8 for it in d.items)


def test_mmlu_subject_folders_and_gold_letters(bench_dir):
    d = load_bench("mmlu", bench_dir)
    subjects = {it.meta["subject"] for it in d.items}
    assert subjects == {"anatomy", "virology"}
    vir = sorted((it for it in d.items if it.meta["subject"] == "virology"), key=lambda i: i.id)
    assert [it.answer for it in vir] == list("BBBABB")
    assert vir[0].choices == ["1", "0", "2", "none"]


def test_mmlu_single_file_in_cais_schema(tmp_path):
    write_jsonl(tmp_path / "mmlu/test.jsonl", [
        {"question": "q1", "choices": ["a", "b", "c", "d"], "answer": 2, "subject": "anatomy"},
        {"question": "q2", "choices": ["a", "b", "c", "d"], "answer": 0, "subject": "virology"},
    ])
    d = load_bench("mmlu", tmp_path, seed=3)
    assert sorted((it.meta["subject"], it.answer) for it in d.items) == [("anatomy", "C"), ("virology", "A")]


def test_sampling_is_seeded_limited_and_recorded(tmp_path):
    write_jsonl(tmp_path / "ai2_arc/ARC-Easy/validation.jsonl", arc_rows(40))
    a = load_bench("arc-e", tmp_path, seed=0)
    b = load_bench("arc-e", tmp_path, seed=0)
    c = load_bench("arc-e", tmp_path, seed=1)
    assert [i.id for i in a.items] == [i.id for i in b.items]
    assert [i.id for i in a.items] != [i.id for i in c.items]
    assert sorted(i.id for i in a.items) == sorted(i.id for i in c.items)  # published size 570 > 40: all
    s = load_bench("arc-e", tmp_path, seed=0, sample_size=10, limit=4)
    assert [i.id for i in s.items] == [i.id for i in a.items][:4]  # shuffle, first n, then limit
    desc = s.describe()
    assert desc["item_ids"] == [i.id for i in s.items]
    assert (desc["shuffle_seed"], desc["sample_size"], desc["limit"], desc["n_available"]) == (0, 10, 4, 40)
    json.dumps(desc)


def test_json_and_parquet_files_read_like_jsonl(tmp_path):
    rows = arc_rows(5)
    (tmp_path / "j/ai2_arc/ARC-Easy").mkdir(parents=True)
    (tmp_path / "j/ai2_arc/ARC-Easy/validation.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p/ai2_arc/ARC-Easy").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p/ai2_arc/ARC-Easy/validation.parquet")
    write_jsonl(tmp_path / "l/ai2_arc/ARC-Easy/validation.jsonl", rows)
    loaded = [load_bench("arc-e", tmp_path / k).items for k in "jpl"]
    assert [it.to_dict() for it in loaded[0]] == [it.to_dict() for it in loaded[1]] == [it.to_dict() for it in loaded[2]]


def test_missing_local_file_names_the_file_expected(tmp_path):
    with pytest.raises(SubstrateError) as e:
        load_bench("arc-c", tmp_path)
    assert str(tmp_path / "ai2_arc/ARC-Challenge/validation.jsonl") in str(e.value)
    with pytest.raises(SubstrateError) as e:
        load_bench("world-short", tmp_path)
    assert str(tmp_path / "questions/short.jsonl") in str(e.value)
    with pytest.raises(SubstrateError) as e:
        load_bench("mmlu", tmp_path)
    assert str(tmp_path / "mmlu/test.jsonl") in str(e.value)
    with pytest.raises(SubstrateError, match="no hub copy"):
        load_bench("world-mc")


def test_bad_rows_are_reported(tmp_path):
    write_jsonl(tmp_path / "ai2_arc/ARC-Easy/validation.jsonl", [{"question": "q", "answerKey": "A"}])
    with pytest.raises(SubstrateError, match="choices"):
        load_bench("arc-e", tmp_path)
    rows = arc_rows(1)
    rows[0]["answerKey"] = "Z"
    write_jsonl(tmp_path / "ai2_arc/ARC-Easy/validation.jsonl", rows)
    with pytest.raises(SubstrateError, match="answerKey"):
        load_bench("arc-e", tmp_path)


def test_parse_benches_aliases_and_unknown():
    assert parse_benches("mmlu, ARC-Easy,bleu,arc-e") == ["mmlu", "arc-e", "bleu-en-ru", "bleu-ru-en", "bleu-en-zh", "bleu-zh-en"]
    assert parse_benches("world") == ["world-mc", "world-short"]
    assert "boolq" not in parse_benches("paper")
    with pytest.raises(SubstrateError, match="unknown benchmark 'hellaswag'"):
        parse_benches("mmlu,hellaswag")


class FakeHub:
    """Stands in for ``datasets.load_dataset``: records the calls, serves rows or raises."""

    def __init__(self, tables: dict, fail: set = frozenset()):
        self.tables, self.fail, self.calls = tables, fail, []

    def __call__(self, path, name=None, split=None, **kwargs):
        import datasets

        self.calls.append((path, name, split, kwargs.get("revision")))
        if (path, kwargs.get("revision")) in self.fail:
            raise RuntimeError(f"Dataset scripts are no longer supported ({path})")
        return datasets.Dataset.from_list(self.tables[(path, name, split)])


def test_hub_path_uses_the_published_ids(monkeypatch):
    import datasets

    rows = arc_rows(7)
    opus = [{"translation": {"en": f"e{i}", "ru": f"r{i}"}} for i in range(200)]
    fake = FakeHub({("allenai/ai2_arc", "ARC-Challenge", "validation"): rows,
                    ("Helsinki-NLP/opus-100", "en-ru", "validation"): opus})
    monkeypatch.setattr(datasets, "load_dataset", fake)
    d = load_bench("arc-c")
    assert fake.calls[-1] == ("allenai/ai2_arc", "ARC-Challenge", "validation", None)
    assert d.source == "hub:allenai/ai2_arc/ARC-Challenge[validation]" and len(d.items) == 7
    d = load_bench("bleu-ru-en", seed=5)
    assert fake.calls[-1][:3] == ("Helsinki-NLP/opus-100", "en-ru", "validation")
    assert len(d.items) == 128  # published: 128 pairs per direction
    assert d.items[0].question.startswith("r") and d.items[0].answer.startswith("e")


def test_hub_mmlu_falls_back_from_the_script_dataset(monkeypatch):
    import datasets

    cais = [{"question": f"q{i}", "choices": list("abcd"), "answer": i % 4, "subject": s}
            for i, s in enumerate(["anatomy", "virology", "anatomy"])]
    fake = FakeHub({("cais/mmlu", "all", "test"): cais},
                   fail={("lukaemon/mmlu", None), ("lukaemon/mmlu", "refs/convert/parquet")})
    monkeypatch.setattr(datasets, "load_dataset", fake)
    d = load_bench("mmlu")
    assert [c[0] for c in fake.calls] == ["lukaemon/mmlu", "lukaemon/mmlu", "cais/mmlu"]
    assert fake.calls[0][1] == "high_school_european_history"  # per-subject configs, published order
    assert "cais/mmlu" in d.source and len(d.items) == 3


def test_hub_failure_says_how_to_go_offline(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", FakeHub({}, fail={("google/boolq", None)}))
    with pytest.raises(SubstrateError, match="boolq/validation.jsonl"):
        load_bench("boolq")


def test_generated_world_questions_load(tmp_path):
    generate_world(tmp_path, size="100KB", langs=("en", "ru"), seed=0)
    for bench, fname in (("world-mc", "mc.jsonl"), ("world-short", "short.jsonl")):
        n_rows = sum(1 for line in (tmp_path / "questions" / fname).read_text().splitlines() if line.strip())
        d = load_bench(bench, world_dir=tmp_path, limit=None)
        assert len(d.items) == n_rows and len({i.id for i in d.items}) == n_rows
        assert {i.meta["lang"] for i in d.items} == {"en", "ru"}
        assert {i.meta["kind"] for i in d.items} <= {"fact", "two_hop"}
    mc = load_bench("world-mc", tmp_path)
    assert all(it.answer in it.labels and len(it.choices) == len(it.labels) for it in mc.items)
