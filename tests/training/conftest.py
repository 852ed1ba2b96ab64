"""Fixtures for the training tests: a character tokenizer, a small prepared corpus, tiny configs."""

from __future__ import annotations

import pytest
from training_helpers import make_char_tokenizer, make_corpus


@pytest.fixture(scope="session")
def char_tok_dir(tmp_path_factory):
    """A saved character-level fast tokenizer (about 100 ids, eos ``</s>``)."""
    path = tmp_path_factory.mktemp("char_tok")
    make_char_tokenizer().save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, char_tok_dir):
    """A prepared data folder (train + val token shards) of a small patterned corpus."""
    from substrate_lm.data import prepare_data

    root = tmp_path_factory.mktemp("prepared")
    corpus = make_corpus(root / "corpus.jsonl", n_docs=400, seed=0)
    out = root / "data"
    prepare_data(str(corpus), str(char_tok_dir), out, val_fraction=0.1, seed=0, progress=False)
    return out
