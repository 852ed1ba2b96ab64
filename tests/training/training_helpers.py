"""Helpers shared by the training tests (imported as ``training_helpers``)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch

from substrate_lm.training import load_config

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-\n"
SUBJECTS = ("the cat", "a dog", "the old man", "my sister", "the river", "a small bird")
VERBS = ("sees", "follows", "likes", "remembers", "crosses", "paints")
OBJECTS = ("the hill", "a red house", "the moon", "an apple", "the long road", "a green door")


def make_char_tokenizer():
    """A character-level BPE without merges: one id per character, plus the usual specials."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(("<pad>", "<s>", "</s>", "<unk>"))}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    bpe.decoder = decoders.Sequence([])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   clean_up_tokenization_spaces=False)


def make_corpus(path: Path, n_docs: int = 400, seed: int = 0) -> Path:
    """JSONL documents of simple subject-verb-object sentences (learnable in a few steps)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n_docs):
            sents = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
                     for _ in range(rng.randint(2, 6))]
            fh.write(json.dumps({"text": " ".join(sents)}) + "\n")
    return path


def tiny_config(run_dir, data_dir, **overrides):
    """The checked-in tiny recipe, shrunk to a seconds-long run on the test corpus."""
    base = {
        "run.dir": str(run_dir),
        "data.path": str(data_dir),
        "data.sources": [],
        "data.world": "",
        "model.tokenizer": "",
        "train.steps": 8,
        "train.batch_size": 4,
        "train.seq_len": 32,
        "train.warmup": 2,
        "train.lr": 3e-3,
        "train.min_lr": 3e-4,
        "eval.interval": 4,
        "eval.steps": 2,
        "log.interval": 1,
        "log.tensorboard": False,
        "log.progress": False,
        "log.sample_interval": 0,
        "log.sample_prompts": [],
        "checkpoint.interval": 4,
        "checkpoint.keep_last": 3,
    }
    base.update(overrides)
    return load_config("tiny", base)


def read_log(run_dir, event: str = "train") -> list[dict]:
    """Records of one event type from ``log.jsonl``."""
    lines = (Path(run_dir) / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


# the 2-process runs: 2 ranks x batch 4 with accumulation 2 (their single-process twin: batch 8)
DIST_OVERRIDES = {"train.steps": 4, "train.grad_accum": 2, "checkpoint.interval": 2,
                  "eval.interval": 2}


def digest(state: dict) -> str:
    """sha256 over names and fp32 bytes; DTensor shards are gathered first (a collective)."""
    h = hashlib.sha256()
    for key, value in state.items():
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        h.update(key.encode())
        h.update(value.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
