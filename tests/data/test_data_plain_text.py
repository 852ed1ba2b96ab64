"""Text is text: control-token strings in documents, and a validation split that is never empty."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from data_helpers import read_split, write_jsonl

from substrate_lm.data import prepare as P, prepare_data
from substrate_lm.data.encoding import batch_encoder
from substrate_lm.tokenizer.build import build_from_ngram_file

CONTROL = ["</s>", "<s>", "[INST]", "[/INST]", "<unk>", "<pad>", "<think>"]


def special_ids(tok) -> set[int]:
    return {i for i, t in tok.backend_tokenizer.get_added_tokens_decoder().items() if t.special}


def chars_ids(tok, text: str) -> list[int]:
    """Ids of ``text`` character by character (bvv241: each plane-0 character is its code point)."""
    return [tok.backend_tokenizer.token_to_id(ch) for ch in text]


def check_plain(tok, tmp_path):
    docs = [f"before {c} after" for c in CONTROL] + ["[INST] say hi [/INST] hi</s><s>again"]
    write_jsonl(tmp_path / "d.jsonl", docs)
    prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "out", val_fraction=0.0,
                 progress=False)
    stream = read_split(tmp_path / "out", "train")
    eos = tok.eos_token_id
    # the only special ids are the eos the preparer placed after each document
    assert [i for i, t in enumerate(stream.tolist()) if t in special_ids(tok)] == \
        list(np.flatnonzero(stream == eos))
    assert int((stream == eos).sum()) == len(docs)
    encode, _ = batch_encoder(tok)
    for c in CONTROL:
        ids = encode([c])[0]
        assert not set(ids) & special_ids(tok), c
    return encode


def test_control_strings_in_text_never_become_control_tokens(tok, tmp_path):
    encode = check_plain(tok, tmp_path)
    # id level: "</s>" is the four characters '<', '/', 's', '>' (code-point ids in bvv241)
    assert encode(["</s>"])[0] == chars_ids(tok, "</s>") == [60, 47, 115, 62]
    # the caller's tokenizer is untouched: it still maps the string to the control token
    assert tok("</s>", add_special_tokens=False)["input_ids"] == [tok.eos_token_id]


def test_exact_bvv241_2_3_encodes_control_strings_as_text(shared_file, tmp_path):
    tok = build_from_ngram_file(shared_file("data", "bvv241", "ngrams-2-3.txt"))
    encode = check_plain(tok, tmp_path)
    assert encode(["<s>x"])[0] == [60, 115, 62, 120]
    assert tok.convert_tokens_to_ids("[INST]") in special_ids(tok)
    assert tok.convert_tokens_to_ids("[INST]") not in encode(["[INST] hi"])[0]


def _books(n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    return [" ".join(rng.choice(vocab) for _ in range(words)) + f" book{i}" for i in range(n)]


def test_few_long_documents_split_by_characters(tok, tmp_path):
    books = _books(3, 20000)
    write_jsonl(tmp_path / "b.jsonl", books)
    stats = prepare_data(str(tmp_path / "b.jsonl"), tok, tmp_path / "out", val_fraction=0.05,
                         piece_chars=2000, progress=False)
    tr, va = stats["splits"]["train"], stats["splits"]["val"]
    share = va["characters"] / (tr["characters"] + va["characters"])
    assert 0.01 < share < 0.12  # about val_fraction of the characters, not a whole book (33%)
    assert stats["val_from_train_tail"] == 0  # the hash alone found validation text
    # the streams hold every token exactly once: the splits are cuts of the books' pieces
    train, val = read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "val")
    assert int((train == tok.eos_token_id).sum()) == tr["eos_tokens"] == tr["documents"]
    assert int((val == tok.eos_token_id).sum()) == va["eos_tokens"] == va["documents"]
    assert train.size + val.size == stats["tokens"]


@pytest.mark.parametrize("case", ["three-short", "one-long"])
def test_validation_split_is_never_empty(tok, tmp_path, case):
    if case == "three-short":
        docs = ["first doc here", "second document", "third and last one"]
    else:
        docs = _books(1, 3000, seed=5)
    write_jsonl(tmp_path / "d.jsonl", docs)
    stats = prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "out", val_fraction=0.01,
                         piece_chars=500, progress=False)
    tr, va = stats["splits"]["train"], stats["splits"]["val"]
    assert va["documents"] >= 1 and va["characters"] > 0 and tr["characters"] > 0
    train, val = read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "val")
    eos = tok.eos_token_id
    assert val.size > 0 and val[-1] == eos and train[-1] == eos
    assert int((val == eos).sum()) == va["eos_tokens"] and int((train == eos).sum()) == tr["eos_tokens"]
    assert train.size + val.size == stats["tokens"]
    encode, _ = batch_encoder(tok)
    if case == "three-short":
        # the last document moved whole: validation is exactly its ids and eos
        assert val.tolist() == encode([docs[-1]])[0] + [eos]
        assert stats["val_from_train_tail"] == 1
    else:
        # a cut inside the one document: both sides end with eos, and together they are its text
        whole = [t for t in np.concatenate([train, val]).tolist() if t != eos]
        assert len(whole) == tr["text_tokens"] + va["text_tokens"]
        assert va["characters"] <= 0.5 * (tr["characters"] + va["characters"])


class Boom(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("stop_at", [2, 3])
def test_the_guarantee_survives_an_interrupt(tok, tmp_path, monkeypatch, stop_at):
    docs = ["alpha one two", "beta two three", "gamma three four", "delta four five"] * 3
    write_jsonl(tmp_path / "d.jsonl", docs)
    kw = dict(val_fraction=0.001, seed=3, shard_tokens=30, progress=False, batch_chars=20)
    a = prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "a", **kw)
    assert a["splits"]["val"]["documents"] >= 1
    real, calls = P._Preparer.process, {"n": 0}

    def process(self, batch):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise Boom()
        return real(self, batch)

    monkeypatch.setattr(P._Preparer, "process", process)
    monkeypatch.setattr(P, "COMMIT_SECONDS", 0.0)  # commit after every batch
    with pytest.raises(Boom):
        prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "b", **kw)
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["train_segments"]
    monkeypatch.undo()
    b = prepare_data(str(tmp_path / "d.jsonl"), tok, tmp_path / "b", **kw)
    assert b["splits"] == a["splits"]
    for split in ("train", "val"):
        assert read_split(tmp_path / "b", split).tolist() == read_split(tmp_path / "a", split).tolist()
