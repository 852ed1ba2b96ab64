"""Loading model directories and refusing mismatched vocabularies."""

from __future__ import annotations

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.evaluation import check_vocab, load_model
from substrate_lm.evaluation.models import model_vocab_size, resolve_device
from substrate_lm.export import export_model

from eval_helpers import make_char_tokenizer, make_tiny_neox, substrate_model


def test_mismatched_vocabularies_are_refused(char_tok):
    with pytest.raises(SubstrateError, match=r"64 token rows, the tokenizer 176 ids"):
        check_vocab(make_tiny_neox(64), char_tok)  # tokenizer ids the model has no row for
    with pytest.raises(SubstrateError, match="disagree"):
        check_vocab(make_tiny_neox(4096), char_tok)  # far more rows than a padded table
    check_vocab(make_tiny_neox(len(char_tok)), char_tok, strict=True)
    check_vocab(make_tiny_neox(192), char_tok)  # padded to a multiple of 64: accepted
    with pytest.raises(SubstrateError):
        check_vocab(make_tiny_neox(192), char_tok, strict=True)


def test_load_model_directory_round_trip(tiny_model_dir, char_tok):
    model, tok = load_model(tiny_model_dir, device="cpu")
    assert not model.training
    assert model_vocab_size(model) == len(tok) == len(char_tok)
    assert tok.encode("Ab") == char_tok.encode("Ab")


def test_load_model_refuses_a_directory_with_a_foreign_tokenizer(tmp_path):
    make_tiny_neox(4096).save_pretrained(tmp_path / "m")
    make_char_tokenizer().save_pretrained(tmp_path / "m")
    with pytest.raises(SubstrateError, match="disagree"):
        load_model(tmp_path / "m")


def test_load_model_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubstrateError, match="no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(SubstrateError, match="CUDA"):
        import torch

        if torch.cuda.is_available():
            raise SubstrateError("CUDA present: nothing to refuse")
        resolve_device("cuda")


def test_load_exported_substrate_model(tmp_path, char_tok):
    model = substrate_model(char_tok)
    export_model(model, tmp_path / "sub", tokenizer=char_tok)
    loaded, tok = load_model(tmp_path / "sub", device="auto")
    assert type(loaded).__name__ == "SubstrateForCausalLM"
    assert len(tok) == loaded.config.vocab_size
