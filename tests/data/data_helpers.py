"""Helpers shared by the data pipeline tests (imported as ``data_helpers``)."""

from __future__ import annotations

import json
import random

import numpy as np


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def expected_stream(tok, docs) -> np.ndarray:
    """Each document's ids followed by eos, in order."""
    out = []
    for d in docs:
        out.extend(encode(tok, d))
        out.append(tok.eos_token_id)
    return np.array(out, dtype=np.uint16)


def read_split(out_dir, split: str) -> np.ndarray:
    """Concatenated shards of a split, by file name order."""
    files = sorted(out_dir.glob(f"{split}-*.bin"))
    if not files:
        return np.zeros(0, dtype=np.uint16)
    return np.concatenate([np.fromfile(f, dtype="<u2") for f in files])


WORDS = ("the cat sat on a mat", "hello world", "Привет, мир", "你好世界", "Γειά σου",
         "the quick brown fox", "numbers 12345", "tab\there", "emoji 😀 here")


def random_docs(n: int, seed: int = 0, max_words: int = 12) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        k = rng.randint(1, max_words)
        docs.append(f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(k)))
    return docs


def write_jsonl(path, docs, field: str = "text") -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({field: d, "id": len(d)}, ensure_ascii=False) + "\n")


def fallback_tokenizer():
    """A second bvv241-layout BPE (id == code point, </s> 57346, <unk> 57347) built by hand, not by
    the project's builder: the "other tokenizer" of the mismatch tests."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i): i for i in range(0xD800)}
    vocab.update({chr(i): i for i in range(0xF900, 0xFFFF)})
    for k, s in enumerate(("<pad>", "<s>", "</s>", "<unk>")):
        vocab[s] = 0xE000 + k
    vocab.update({"the": 0xD800, "he": 0xD801, "th": 0xD802})
    merges = [("t", "h"), ("th", "e"), ("h", "e")]
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    bpe.decoder = decoders.Sequence([])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   clean_up_tokenization_spaces=False)
