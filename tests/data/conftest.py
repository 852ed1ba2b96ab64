"""Fixtures for the data pipeline tests: a bvv241-layout tokenizer and small corpora."""

from __future__ import annotations

import pytest
from data_helpers import random_docs, write_jsonl

from substrate_lm.tokenizer import build_from_stats

# n-gram statistics of a tiny bvv241 vocabulary: "the" is one token, "he" and "th" too.
TINY_STATS = [
    {"lang": "en", "language_name": "English",
     "top_ngrams": {2: [("th", 10), ("he", 5)], 3: [("the", 3)]}}
]


@pytest.fixture(scope="session")
def tok():
    """The real bvv241 builder on tiny statistics."""
    return build_from_stats(TINY_STATS)


@pytest.fixture(scope="session")
def tok_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


@pytest.fixture
def corpus(tmp_path):
    """A folder of .txt files, a JSONL and a Parquet file; returns (paths, docs in stream order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    docs_txt = random_docs(3, seed=1)
    # folder order is sorted: a.txt, b.md, sub/c.txt
    (root / "a.txt").write_text(docs_txt[0], encoding="utf-8")
    (root / "b.md").write_text(docs_txt[1], encoding="utf-8")
    (root / "sub" / "c.txt").write_text(docs_txt[2], encoding="utf-8")
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    (root / ".hidden.txt").write_text("hidden", encoding="utf-8")
    docs_jsonl = random_docs(40, seed=2)
    write_jsonl(tmp_path / "docs.jsonl", docs_jsonl)
    docs_pq = random_docs(25, seed=3)
    pq.write_table(pa.table({"body": docs_pq, "n": list(range(len(docs_pq)))}),
                   tmp_path / "docs.parquet")
    return {
        "dir": root, "jsonl": tmp_path / "docs.jsonl", "parquet": tmp_path / "docs.parquet",
        "docs_txt": docs_txt, "docs_jsonl": docs_jsonl, "docs_pq": docs_pq,
    }
