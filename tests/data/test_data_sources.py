"""Source specs, file discovery and document streams."""

from __future__ import annotations

import gzip
import json

import pytest
from data_helpers import random_docs, write_jsonl

from substrate_lm.data import DataSource, parse_sources
from substrate_lm.data import sources as S
from substrate_lm.errors import SubstrateError


def texts(src, **kw):
    return [t for t, _, _ in src.iter_items(**kw)]


def test_parse_kinds_aliases_and_detection(tmp_path, corpus):
    assert DataSource.parse(f"text:{corpus['dir'] / 'a.txt'}").kind == "text"
    assert DataSource.parse(f"file:{corpus['dir'] / 'a.txt'}").kind == "text"
    assert DataSource.parse(f"folder:{corpus['dir']}").kind == "dir"
    assert DataSource.parse(f"json:{corpus['jsonl']}").kind == "jsonl"
    # bare paths
    assert DataSource.parse(str(corpus["dir"])).kind == "dir"
    assert DataSource.parse(str(corpus["jsonl"])).kind == "jsonl"
    assert DataSource.parse(str(corpus["parquet"])).kind == "parquet"
    assert DataSource.parse(str(corpus["dir"] / "a.txt")).kind == "text"
    assert DataSource.parse(str(tmp_path / "corpus" / "*.txt")).kind == "glob"
    world = tmp_path / "w"
    world.mkdir()
    (world / "train.jsonl").write_text("", encoding="utf-8")
    (world / "val.jsonl").write_text("", encoding="utf-8")
    assert DataSource.parse(str(world)).kind == "world"
    # spec round trip
    for spec in (f"dir:{corpus['dir']}", "hf:wikitext:wikitext-2-raw-v1?split=validation"):
        src = DataSource.parse(spec)
        assert DataSource.parse(src.spec) == src


def test_parse_hf_options():
    src = DataSource.parse("hf:org/name:cfg?data_files=a.jsonl,b.jsonl&revision=main")
    opts = dict(src.options)
    assert src.kind == "hf" and src.location == "org/name"
    assert opts == {"config": "cfg", "split": "train", "data_files": "a.jsonl,b.jsonl",
                    "revision": "main"}
    with pytest.raises(SubstrateError, match="unknown hf: option 'streaming'"):
        DataSource.parse("hf:x?streaming=0")
    with pytest.raises(SubstrateError, match="names no dataset"):
        DataSource.parse("hf:")


def test_unknown_kind_and_missing_corpus(tmp_path):
    with pytest.raises(SubstrateError, match="unknown source kind 'ftp'"):
        DataSource.parse("ftp://example.org/x.txt")
    with pytest.raises(SubstrateError, match="unknown source kind 's3'"):
        parse_sources(["s3:bucket/key"])
    missing = tmp_path / "nope.txt"
    with pytest.raises(SubstrateError, match=f"corpus not found: {missing}"):
        DataSource.parse(str(missing))
    with pytest.raises(SubstrateError, match="corpus not found: .*nope.jsonl"):
        DataSource.parse(f"jsonl:{tmp_path / 'nope.jsonl'}").check()
    with pytest.raises(SubstrateError, match="no files match"):
        DataSource.parse(f"glob:{tmp_path}/*.zzz").check()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SubstrateError, match="no .txt/.md/.jsonl"):
        DataSource.parse(str(empty)).check()
    with pytest.raises(SubstrateError, match="no sources given"):
        parse_sources([])
    w = tmp_path / "w"
    w.mkdir()
    (w / "train.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(SubstrateError, match="world corpus .* has no val.jsonl"):
        DataSource.parse(f"world:{w}").check()


def test_dir_walk_is_sorted_recursive_and_skips_hidden_and_unknown(corpus):
    src = DataSource.parse(str(corpus["dir"]))
    names = [p.relative_to(corpus["dir"]).as_posix() for p, _ in src.files()]
    assert names == ["a.txt", "b.md", "sub/c.txt"]
    assert texts(src) == corpus["docs_txt"]


def test_glob_sorted_and_recursive(corpus):
    src = DataSource.parse(f"glob:{corpus['dir']}/**/*.txt")
    assert texts(src) == [corpus["docs_txt"][0], corpus["docs_txt"][2]]


def test_text_units(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("para one\nline two\n\n\npara two\r\n\nlast", encoding="utf-8")
    assert texts(DataSource.parse(str(p))) == [p.read_bytes().decode("utf-8")]
    assert texts(DataSource.parse(str(p), text_unit="line")) == [
        "para one", "line two", "para two", "last"]
    assert texts(DataSource.parse(str(p), text_unit="paragraph")) == [
        "para one\nline two", "para two", "last"]
    with pytest.raises(SubstrateError, match="unknown text unit"):
        DataSource.parse(str(p), text_unit="sentence")


def test_large_text_file_is_read_in_pieces_that_rebuild_it(tmp_path):
    body = "\n".join(random_docs(300, seed=5))
    p = tmp_path / "big.txt"
    p.write_text(body, encoding="utf-8")
    items = list(DataSource.parse(str(p)).iter_items(piece_chars=500))
    assert len(items) > 10
    assert [c for _, _, c in items] == [False] + [True] * (len(items) - 1)
    assert "".join(t for t, _, _ in items) == body
    assert all(len(t) <= 500 for t, _, _ in items)
    # cuts fall right after a newline that starts a non-space character
    for t, _, _ in items[:-1]:
        assert t.endswith("\n")


def test_find_cut_prefers_newline_then_space_then_hard():
    text = "aaaa bbbb\ncccc dddd eeee"
    assert text[: S.find_cut(text, 16)] == "aaaa bbbb\n"
    text = "aaaa bbbb cccc dddd"
    assert text[: S.find_cut(text, 12)] == "aaaa bbbb"
    text = "x" * 40
    assert S.find_cut(text, 16) == 16
    pieces = S.split_long_text("word " * 1000, 64)
    assert "".join(pieces) == "word " * 1000 and max(map(len, pieces)) <= 64


def test_jsonl_fields_nulls_arrays_and_gzip(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"content": "a"}\n\n{"content": null}\n{"content": "b"}\n', encoding="utf-8")
    assert texts(DataSource.parse(str(p), text_field="content")) == ["a", "", "b"]
    with pytest.raises(SubstrateError, match=r"x.jsonl:1 has no text field 'text' \(fields: content\)"):
        texts(DataSource.parse(str(p)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(SubstrateError, match="bad.jsonl:2: field 'text' holds int"):
        texts(DataSource.parse(str(bad)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(SubstrateError, match="broken.jsonl:2: invalid JSON"):
        texts(DataSource.parse(str(broken)))
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"text": "one"}, {"text": "two"}]), encoding="utf-8")
    assert texts(DataSource.parse(str(arr))) == ["one", "two"]
    gz = tmp_path / "z.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write('{"text": "zipped"}\n')
    assert texts(DataSource.parse(str(gz))) == ["zipped"]


def test_parquet_field(corpus):
    assert texts(DataSource.parse(str(corpus["parquet"]), text_field="body")) == corpus["docs_pq"]
    with pytest.raises(SubstrateError, match="has no text field 'text' .*body"):
        texts(DataSource.parse(str(corpus["parquet"])))


def test_world_source_keeps_its_split(tmp_path):
    w = tmp_path / "world"
    w.mkdir()
    write_jsonl(w / "train.jsonl", ["t1", "t2"])
    write_jsonl(w / "val.jsonl", ["v1"])
    items = list(DataSource.parse(f"world:{w}").iter_items())
    assert items == [("t1", "train", False), ("t2", "train", False), ("v1", "val", False)]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"ok \xff\xfe end")
    before = S.INVALID_UTF8[0]
    assert texts(DataSource.parse(str(p))) == ["ok \ufffd\ufffd end"]
    assert S.INVALID_UTF8[0] - before == 2


def test_hf_datasets_streaming_json_loader(tmp_path):
    pytest.importorskip("datasets", reason="the datasets package (the optional train extra) is not installed")
    docs = random_docs(7, seed=9)
    write_jsonl(tmp_path / "d.jsonl", docs)
    src = DataSource.parse(f"hf:json?data_files={tmp_path / 'd.jsonl'}")
    assert texts(src) == docs
    with pytest.raises(SubstrateError, match="has no text field 'body'"):
        texts(DataSource.parse(f"hf:json?data_files={tmp_path / 'd.jsonl'}", text_field="body"))
    with pytest.raises(SubstrateError, match="cannot load Hugging Face dataset"):
        texts(DataSource.parse(f"hf:json?data_files={tmp_path / 'missing.jsonl'}"))
