"""Per-source ranges of the validation stream (what `eval ppl --data` reports per source)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import expected_stream, random_docs, read_split, write_jsonl

from substrate_lm.data import DataSource, TokenShards, document_split, prepare_data
from substrate_lm.errors import SubstrateError


def _sources(corpus):
    return [str(corpus["dir"]), str(corpus["jsonl"]),
            DataSource.parse(str(corpus["parquet"]), text_field="body")]


def _check_partition(out, stats):
    ranges = TokenShards(out, "val").source_ranges()
    val = stats["splits"]["val"]
    assert ranges[0]["start"] == 0 and ranges[-1]["end"] == val["tokens"]
    assert all(a["end"] == b["start"] for a, b in zip(ranges, ranges[1:]))
    assert sum(r["characters"] for r in ranges) == val["characters"]
    assert sum(r["documents"] for r in ranges) == val["documents"]
    assert stats["splits"]["val"]["sources"] == [
        {k: r[k] for k in ("spec", "tokens", "characters", "documents")} for r in ranges]
    return ranges


def test_each_source_is_its_own_range_of_the_val_stream(tok, corpus, tmp_path):
    out = tmp_path / "out"
    stats = prepare_data(_sources(corpus), tok, out, val_fraction=0.3, seed=7, shard_tokens=50,
                         progress=False)
    ranges = _check_partition(out, stats)
    val = read_split(out, "val")
    groups = [corpus["docs_txt"], corpus["docs_jsonl"], corpus["docs_pq"]]
    assert len(ranges) == 3
    for r, docs in zip(ranges, groups):
        mine = [d for d in docs if document_split(d, 7, 0.3) == "val"]
        np.testing.assert_array_equal(val[r["start"]:r["end"]], expected_stream(tok, mine))
        assert r["characters"] == sum(map(len, mine)) and r["documents"] == len(mine)


def test_long_documents_changing_split_between_pieces(tok, tmp_path):
    (tmp_path / "book.txt").write_text("\n".join(random_docs(80, seed=5)), encoding="utf-8")
    write_jsonl(tmp_path / "b.jsonl", random_docs(30, seed=6))
    (tmp_path / "c.txt").write_text("\n".join(random_docs(60, seed=7)), encoding="utf-8")
    srcs = [str(tmp_path / n) for n in ("book.txt", "b.jsonl", "c.txt")]
    out = tmp_path / "out"
    stats = prepare_data(srcs, tok, out, val_fraction=0.3, seed=3, shard_tokens=64, piece_chars=200,
                         batch_chars=500, progress=False)
    ranges = _check_partition(out, stats)
    assert all(r["tokens"] > 0 for r in ranges)
    val = read_split(out, "val")
    # every range ends a document: its last token is eos
    assert all(val[r["end"] - 1] == tok.eos_token_id for r in ranges)


def test_val_taken_from_the_train_tail_is_attributed_to_its_sources(tok, tmp_path):
    # three short documents at 1%: no hash picks one, the end of the train stream moves to val
    write_jsonl(tmp_path / "a.jsonl", ["first one", "second one"])
    write_jsonl(tmp_path / "b.jsonl", ["third and last"])
    out = tmp_path / "out"
    stats = prepare_data([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], tok, out,
                         val_fraction=0.01, progress=False)
    assert stats["val_from_train_tail"] >= 1
    ranges = _check_partition(out, stats)
    assert ranges[0]["tokens"] == 0 and ranges[1]["characters"] == len("third and last")
    np.testing.assert_array_equal(read_split(out, "val"), expected_stream(tok, ["third and last"]))


def test_folder_without_the_record_reads_but_refuses_per_source(tok, corpus, tmp_path):
    out = tmp_path / "out"
    prepare_data(_sources(corpus), tok, out, val_fraction=0.3, progress=False)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    del m["splits"]["val"]["sources"]  # what an older substrate-lm wrote
    (out / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    shards = TokenShards(out, "val")  # training still reads it
    assert len(shards) > 0
    with pytest.raises(SubstrateError, match="older substrate-lm.*--overwrite") as exc:
        shards.source_ranges()
    assert "\n" not in str(exc.value)
    # re-running the same prepare command leaves a finished folder alone
    prepare_data(_sources(corpus), tok, out, val_fraction=0.3, progress=False)
    m["splits"]["val"]["sources"] = [{"spec": "x", "tokens": 1, "characters": 1, "documents": 1}] * 3
    (out / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(SubstrateError, match="damaged"):
        TokenShards(out, "val").source_ranges()
