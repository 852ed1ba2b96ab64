"""prepare_data: exact token streams, eos placement, splits, stats, directory safety."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_helpers import encode, expected_stream, fallback_tokenizer, random_docs, read_split, write_jsonl

import substrate_lm.world as world
from substrate_lm.data import DataSource, document_split, prepare_data
from substrate_lm.data.encoding import batch_encoder, cut_is_exact
from substrate_lm.data.prepare import EXACT_PIECE_CHARS
from substrate_lm.data.sources import PIECE_CHARS
from substrate_lm.errors import SubstrateError


def sources_of(corpus):
    return [str(corpus["dir"]), str(corpus["jsonl"]),
            DataSource.parse(str(corpus["parquet"]), text_field="body")]


def all_docs(corpus):
    return corpus["docs_txt"] + corpus["docs_jsonl"] + corpus["docs_pq"]


def test_stream_is_every_document_then_eos_in_source_order(tok, corpus, tmp_path):
    out = tmp_path / "out"
    stats = prepare_data(sources_of(corpus), tok, out, val_fraction=0.0, shard_tokens=97,
                         progress=False)
    got = read_split(out, "train")
    want = expected_stream(tok, all_docs(corpus))
    np.testing.assert_array_equal(got, want)
    # eos exactly at the end of each document (the test docs hold no "</s>" text)
    ends = np.cumsum([len(encode(tok, d)) + 1 for d in all_docs(corpus)]) - 1
    np.testing.assert_array_equal(np.flatnonzero(got == tok.eos_token_id), ends)
    # every shard is shard_tokens long except the last one
    sizes = [f.stat().st_size // 2 for f in sorted(out.glob("train-*.bin"))]
    assert sizes[:-1] == [97] * (len(sizes) - 1) and 0 < sizes[-1] <= 97
    assert stats["tokens"] == len(want) and stats["splits"]["val"]["tokens"] == 0
    assert stats["documents"] == len(all_docs(corpus))
    assert not list(out.glob("val-*.bin"))
    assert not list(out.glob(".tmp-*")) and not list(out.glob("*.tail-*"))


def test_split_by_document_hash_is_exact_and_deterministic(tok, corpus, tmp_path):
    docs = all_docs(corpus)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sa = prepare_data(sources_of(corpus), tok, a, val_fraction=0.3, seed=7, shard_tokens=200,
                      progress=False)
    prepare_data(sources_of(corpus), tok, b, val_fraction=0.3, seed=7, shard_tokens=200,
                 progress=False)
    prepare_data(sources_of(corpus), tok, c, val_fraction=0.3, seed=8, shard_tokens=200,
                 progress=False)
    for split in ("train", "val"):
        want = expected_stream(tok, [d for d in docs if document_split(d, 7, 0.3) == split])
        np.testing.assert_array_equal(read_split(a, split), want)
        np.testing.assert_array_equal(read_split(b, split), want)
        assert sa["splits"][split]["documents"] == sum(
            document_split(d, 7, 0.3) == split for d in docs)
    # byte-identical re-run
    for f in sorted(a.glob("*.bin")):
        assert f.read_bytes() == (b / f.name).read_bytes()
    # another seed, another split of the same 68 documents
    assert [document_split(d, 7, 0.3) for d in docs] != [document_split(d, 8, 0.3) for d in docs]
    assert 0 < sa["splits"]["val"]["documents"] < len(docs)


def test_split_is_order_independent_and_near_the_fraction():
    docs = random_docs(4000, seed=11)
    splits = {d: document_split(d, 3, 0.1) for d in docs}
    assert {d: document_split(d, 3, 0.1) for d in reversed(docs)} == splits
    n_val = sum(s == "val" for s in splits.values())
    assert 300 < n_val < 500  # binomial(4000, 0.1): mean 400, sd 19
    assert all(document_split(d, 3, 0.0) == "train" for d in docs[:50])


def test_hand_checked_stats(tok, tmp_path):
    # bvv241 layout: one id per character, "the" and "he" are n-grams, emoji -> one <unk>
    docs = ["the cat", "hello 😀", "", "Привет мир"]
    assert [len(encode(tok, d)) for d in docs] == [5, 6, 0, 10]
    write_jsonl(tmp_path / "d.jsonl", docs)
    stats = prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "out", val_fraction=0.0,
                         progress=False)
    assert stats["documents"] == 3 and stats["empty_documents"] == 1
    assert stats["characters"] == 7 + 7 + 10
    assert stats["text_tokens"] == 21 and stats["eos_tokens"] == 3 and stats["tokens"] == 24
    assert stats["chars_per_token"] == pytest.approx(24 / 21)
    assert stats["unk_tokens"] == 1 and stats["unk_share"] == pytest.approx(1 / 21)
    assert stats["unknown_chars"] == [{"char": "😀", "codepoint": "U+1F600", "count": 1}]
    assert stats["splits"]["train"]["tokens"] == 24 and stats["splits"]["train"]["shards"] == 1
    assert stats["sources"][0]["documents"] == 3
    assert stats["tokenizer"]["eos_id"] == tok.eos_token_id
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == stats


def test_meta_records_the_tokenizer(tok, tok_dir, corpus, tmp_path):
    import hashlib

    prepare_data(str(corpus["jsonl"]), str(tok_dir), tmp_path / "out", progress=False)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text(encoding="utf-8"))
    t = meta["tokenizer"]
    assert t["name"] == str(tok_dir) and t["vocab_size"] == len(tok) == 65536
    assert t["eos_id"] == tok.eos_token_id and t["unk_id"] == tok.unk_token_id
    assert t["tokenizer_json_sha256"] == "sha256:" + hashlib.sha256(
        (tok_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["dtype"] == "uint16" and meta["config"]["sources"][0]["spec"].startswith("jsonl:")


def test_long_documents_are_cut_without_changing_ids(tok, tmp_path):
    doc = "\n".join(random_docs(200, seed=4))
    (tmp_path / "big.txt").write_text(doc, encoding="utf-8")
    write_jsonl(tmp_path / "big.jsonl", [doc, "short one"])
    out = tmp_path / "out"
    stats = prepare_data([str(tmp_path / "big.txt"), str(tmp_path / "big.jsonl")], tok, out,
                         val_fraction=0.0, shard_tokens=1000, piece_chars=300, progress=False)
    np.testing.assert_array_equal(read_split(out, "train"),
                                  expected_stream(tok, [doc, doc, "short one"]))
    assert stats["documents"] == 3 and stats["characters"] == 2 * len(doc) + 9


def test_piece_size_follows_whether_cutting_is_exact(tok, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    write_jsonl(tmp_path / "d.jsonl", ["hello there", "the end"])
    prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "a", progress=False)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text(encoding="utf-8"))
    assert cut_is_exact(batch_encoder(tok)[0])
    assert meta["config"]["piece_chars"] == EXACT_PIECE_CHARS
    # a SentencePiece-style tokenizer marks the start of every input: cutting would add ids
    chars = sorted({chr(i) for i in range(32, 0x500)} | set("\n\u2581") | set("你好世界再见朋友，。"))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({"<unk>": len(vocab), "</s>": len(vocab) + 1})
    sp = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    sp = PreTrainedTokenizerFast(tokenizer_object=sp, eos_token="</s>", unk_token="<unk>")
    assert not cut_is_exact(batch_encoder(sp)[0])
    prepare_data(str(tmp_path / "d.jsonl"), sp, tmp_path / "b", progress=False)
    meta = json.loads((tmp_path / "b" / "meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["piece_chars"] == PIECE_CHARS


def test_world_corpus_keeps_its_split(tok, tmp_path):
    w = tmp_path / "world"
    w.mkdir()
    train, val = random_docs(30, seed=1), random_docs(6, seed=2)
    write_jsonl(w / "train.jsonl", train)
    write_jsonl(w / "val.jsonl", val)
    (w / "world.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "out"
    stats = prepare_data(str(w), tok, out, val_fraction=0.5, progress=False)
    np.testing.assert_array_equal(read_split(out, "train"), expected_stream(tok, train))
    np.testing.assert_array_equal(read_split(out, "val"), expected_stream(tok, val))
    assert stats["sources"][0]["spec"] == f"world:{w}"


def test_generated_world_corpus(tok, tmp_path):
    world.generate_world(tmp_path / "w", size="60KB", seed=0)

    def docs(name):
        lines = (tmp_path / "w" / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["text"] for line in lines if line.strip()]

    out = tmp_path / "out"
    stats = prepare_data(str(tmp_path / "w"), tok, out, progress=False)
    for split, name in (("train", "train.jsonl"), ("val", "val.jsonl")):
        want = docs(name)
        assert stats["splits"][split]["documents"] == len(want) > 0
        np.testing.assert_array_equal(read_split(out, split), expected_stream(tok, want))
    assert stats["unk_tokens"] == 0 and 0.9 < stats["chars_per_token"] < 2.0


def test_hf_datasets_source(tok, tmp_path):
    pytest.importorskip("datasets", reason="the datasets package (the optional train extra) is not installed")
    docs = random_docs(20, seed=6)
    write_jsonl(tmp_path / "d.jsonl", docs)
    out = tmp_path / "out"
    prepare_data(f"hf:json?data_files={tmp_path / 'd.jsonl'}", tok, out, val_fraction=0.0,
                 progress=False)
    np.testing.assert_array_equal(read_split(out, "train"), expected_stream(tok, docs))


def test_lone_surrogates_and_bad_utf8_never_crash(tok, tmp_path):
    (tmp_path / "s.jsonl").write_text('{"text": "a\\ud800b"}\n{"text": "ok"}\n', encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"x\xffy")
    stats = prepare_data([str(tmp_path / "s.jsonl"), str(tmp_path / "b.txt")], tok,
                         tmp_path / "out", val_fraction=0.0, progress=False)
    assert stats["lone_surrogates"] == 1 and stats["invalid_utf8"] == 1
    assert stats["documents"] == 3 and stats["unk_tokens"] >= 1
    got = read_split(tmp_path / "out", "train")
    assert got[0] == ord("a") and got[2] == ord("b") and got[1] == tok.unk_token_id


def test_empty_input_is_an_error_and_leaves_nothing(tok, tmp_path):
    write_jsonl(tmp_path / "e.jsonl", ["", ""])
    out = tmp_path / "out"
    with pytest.raises(SubstrateError, match="no documents"):
        prepare_data(str(tmp_path / "e.jsonl"), tok, out, progress=False)
    assert not out.exists()


def test_errors_missing_corpus_unknown_kind_bad_args(tok, tmp_path):
    with pytest.raises(SubstrateError, match=f"corpus not found: {tmp_path / 'missing'}"):
        prepare_data(str(tmp_path / "missing"), tok, tmp_path / "out", progress=False)
    with pytest.raises(SubstrateError, match="unknown source kind 'gopher'"):
        prepare_data("gopher:x", tok, tmp_path / "out", progress=False)
    write_jsonl(tmp_path / "d.jsonl", ["a"])
    with pytest.raises(SubstrateError, match="val-fraction"):
        prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "out", val_fraction=1.0)
    with pytest.raises(SubstrateError, match="tokenizer not found"):
        prepare_data(str(tmp_path / "d.jsonl"), str(tmp_path / "no_tok"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_vocab_over_65536_is_refused(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(70_000)}
    vocab["</s>"] = 70_000
    vocab["<unk>"] = 70_001
    big = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>")),
        eos_token="</s>", unk_token="<unk>")
    write_jsonl(tmp_path / "d.jsonl", ["t1 t2"])
    with pytest.raises(SubstrateError, match="70,002 ids but uint16 shards hold at most 65,536"):
        prepare_data(str(tmp_path / "d.jsonl"), big, tmp_path / "out", progress=False)


def test_other_tokenizer_or_settings_refused_unless_overwrite(tok, corpus, tmp_path):
    other = fallback_tokenizer()
    other.add_tokens(["<extra>"])  # a different tokenizer identity for sure
    out = tmp_path / "out"
    stats = prepare_data(str(corpus["jsonl"]), tok, out, progress=False)
    before = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    with pytest.raises(SubstrateError, match="prepared with another tokenizer.*--overwrite"):
        prepare_data(str(corpus["jsonl"]), other, out, progress=False)
    with pytest.raises(SubstrateError, match=r"other settings \(differ: seed\)"):
        prepare_data(str(corpus["jsonl"]), tok, out, seed=5, progress=False)
    # nothing was touched
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == before
    # the same command again: already prepared, nothing rewritten
    assert prepare_data(str(corpus["jsonl"]), tok, out, progress=False) == stats
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == before
    # --overwrite replaces it
    prepare_data(str(corpus["jsonl"]), other, out, overwrite=True, val_fraction=0.0,
                 progress=False)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["tokenizer"]["vocab_size"] == max(other.get_vocab().values()) + 1
    np.testing.assert_array_equal(read_split(out, "train"),
                                  expected_stream(other, corpus["docs_jsonl"]))
    assert not list(out.glob("val-*.bin"))


def test_foreign_files_in_out_dir_are_kept(tok, corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    # a folder with the user's files is not taken over silently ...
    with pytest.raises(SubstrateError, match="notes.txt.*--overwrite") as exc:
        prepare_data(str(corpus["jsonl"]), tok, out, progress=False)
    assert "\n" not in str(exc.value)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # ... only with --overwrite, and then its files are kept
    prepare_data(str(corpus["jsonl"]), tok, out, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert os.path.exists(out / "train-00000.bin")


def test_truncation_or_padding_in_the_tokenizer_never_cuts_documents(tmp_path):
    clean = fallback_tokenizer()
    t = fallback_tokenizer()
    t.backend_tokenizer.enable_truncation(max_length=3)
    t.backend_tokenizer.enable_padding(length=40, pad_id=57344)
    docs = ["a long document that is longer than three tokens", "short"]
    write_jsonl(tmp_path / "d.jsonl", docs)
    prepare_data(str(tmp_path / "d.jsonl"), t, tmp_path / "out", val_fraction=0.0, progress=False)
    np.testing.assert_array_equal(read_split(tmp_path / "out", "train"),
                                  expected_stream(clean, docs))
    assert t.backend_tokenizer.truncation is not None  # the caller's tokenizer is untouched
