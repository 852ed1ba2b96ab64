"""One loading path for tokenizer folders, tokenizer.json files, hub ids and loaded objects."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from substrate_lm.errors import SubstrateError
from substrate_lm.tokenizer import load_tokenizer, save_tokenizer, vocab_strings


def test_load_folder_file_and_object(small_tok, tmp_path):
    out = save_tokenizer(small_tok, tmp_path / "tok")
    text = "the thing in her ост"
    expected = small_tok.encode(text)
    for source in (out, str(out), out / "tokenizer.json"):
        tok = load_tokenizer(source)
        assert tok.encode(text) == expected and tok.eos_token == "</s>" and tok.vocab_size == 65536
    bare = tmp_path / "bare.json"
    shutil.copy(out / "tokenizer.json", bare)
    from_file = load_tokenizer(bare)  # a bare bvv241 tokenizer.json gets its roles from the layout
    assert from_file.encode(text) == expected
    assert (from_file.bos_token_id, from_file.eos_token_id, from_file.unk_token_id, from_file.pad_token_id) == (
        57345, 57346, 57347, 57344
    )
    assert len(from_file) == 65536
    assert load_tokenizer(small_tok) is small_tok


def test_save_refuses_to_overwrite(small_tok, tmp_path):
    out = save_tokenizer(small_tok, tmp_path / "tok")
    with pytest.raises(SubstrateError, match="already holds a tokenizer"):
        save_tokenizer(small_tok, out)
    save_tokenizer(small_tok, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SubstrateError, match="is a file"):
        save_tokenizer(small_tok, tmp_path / "file")


def test_config_naming_gpt2_class_does_not_break_encoding(small_tok, tmp_path):
    # transformers 5 rebuilds GPT2Tokenizer with a byte-level pre-tokenizer; tokenizer.json wins.
    from transformers import AutoTokenizer

    out = save_tokenizer(small_tok, tmp_path / "tok")
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    raw = AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
    text = "the thing, in her"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = load_tokenizer(out)
    assert raw.encode(text) != small_tok.encode(text)  # what the guard protects against
    assert tok.encode(text) == small_tok.encode(text)
    assert tok.decode(tok.encode(text)) == text
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<s>", "</s>", "<unk>", "<pad>")
    assert any("using tokenizer.json as saved" in str(w.message) for w in caught)


def test_other_hf_tokenizers_load_unchanged(tmp_path):
    # A byte-level BPE (GPT-2 style) saved locally loads through the same path, without the guard.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate("abcĠ")} | {"ab": 4}, merges=[("a", "b")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="c")
    hf.save_pretrained(tmp_path / "bl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = load_tokenizer(tmp_path / "bl")
    assert tok.encode("ab c") == [4, 3, 2]
    assert vocab_strings(tok) == ["a", "b", "c", "Ġ", "ab"]


@pytest.mark.parametrize("source", ["/nonexistent/tokenizer-dir", "not a valid//hub id"])
def test_nothing_there_is_a_one_line_error(source):
    with pytest.raises(SubstrateError) as info:
        load_tokenizer(source)
    assert "\n" not in str(info.value) and "cannot load tokenizer" in str(info.value)


def test_folder_without_tokenizer_files(tmp_path):
    with pytest.raises(SubstrateError, match="holds no tokenizer files"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(SubstrateError, match="cannot load tokenizer file"):
        load_tokenizer(bad)
