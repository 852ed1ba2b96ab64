"""Fixtures for the docking tests: tiny experts on one token-id substrate, a small local tokenizer,
prepared token shards, and an in-memory token stream for toy fusion tasks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

V = 96


def token_id_table(vocab: int = V, width: int = 16) -> torch.Tensor:
    """The papers' 16-bit token-id code (msb first): identical for every expert of a vocabulary."""
    return torch.tensor([[(i >> (width - 1 - b)) & 1 for b in range(width)] for i in range(vocab)], dtype=torch.float32)


def make_expert(seed: int = 0, vocab: int = V, n_layer: int = 2, d_model: int = 32, n_head: int = 4,
                n_embed: int = 16, table: torch.Tensor | None = None, jitter: float = 0.05, meta: dict | None = None,
                **kw):
    """A tiny SubstrateForCausalLM with every weight moved off its init (so mixing is visible);
    ``table``/``meta``: a bits table and its recorded recipe (default: the token-id table)."""
    from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM

    torch.manual_seed(seed)
    cfg = SubstrateConfig(vocab_size=vocab, n_embed=n_embed, d_model=d_model, n_layer=n_layer, n_head=n_head,
                          block_size=64, substrate_kind="token-id" if table is None else "bits", **kw)
    model = SubstrateForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("token_embeddings"):
                p.add_(torch.randn_like(p) * jitter)
    model.set_substrate(token_id_table(vocab, n_embed) if table is None else table,
                        kind="token-id" if table is None else "bits", meta=meta)
    return model.eval()


class ArrayTokens:
    """A token stream in memory with the TokenShards batch contract (pure function of seed, step)."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = np.asarray(tokens, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.tokens)

    def get_batch(self, step, batch_size, seq_len, seed=0, mode="random", rank=0, world_size=1):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step])))
        starts = rng.integers(0, len(self.tokens) - seq_len - 1, size=batch_size)
        win = np.stack([self.tokens[s : s + seq_len + 1] for s in starts])
        data = torch.from_numpy(win)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()


@pytest.fixture(scope="session")
def expert_factory():
    return make_expert


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    """A small patterned corpus: enough structure for the loss to fall within a few dozen steps."""
    rng = random.Random(0)
    names = ["Ada", "Bo", "Cyr", "Dee", "Eli", "Fay", "Gus", "Hal"]
    things = ["red apple", "blue stone", "old map", "green cup", "small key"]
    places = ["garden", "river", "tower", "market"]
    docs = []
    for _ in range(400):
        n, t, p = rng.choice(names), rng.choice(things), rng.choice(places)
        docs.append(f"{n} took the {t} to the {p}. The {t} stayed in the {p} with {n}.")
    return docs


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_texts):
    """A byte-level BPE tokenizer (about 300 ids, eos </s>) saved as an HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    out = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus_texts, tokenizer_dir):
    """Token shards of the corpus prepared by the data pipeline (train + val)."""
    import json

    from substrate_lm.data import prepare_data

    src = tmp_path_factory.mktemp("corpus")
    with open(src / "docs.jsonl", "w", encoding="utf-8") as f:
        for t in corpus_texts:
            f.write(json.dumps({"text": t}) + "\n")
    out = tmp_path_factory.mktemp("shards")
    prepare_data([str(src / "docs.jsonl")], str(tokenizer_dir), out, val_fraction=0.1, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def array_tokens():
    """``ArrayTokens(np.ndarray)``: an in-memory stream with the ``get_batch`` contract."""
    return ArrayTokens


@pytest.fixture(scope="session")
def table_factory():
    """``token_id_table(vocab, width)``."""
    return token_id_table


def fit_model(model, data, run_dir, *, steps: int, batch_size: int = 4, seq_len: int = 16, lr: float = 1e-3,
              min_lr: float | None = None, warmup: int = 1, seed: int = 0) -> list[float]:
    """Train ``model``'s trainable parameters on ``data`` with the Trainer (CPU, fp32, a log record
    every step); returns the training loss of every step."""
    from substrate_lm.docking import fusion_run_config
    from substrate_lm.training import RunData, Trainer

    cfg = fusion_run_config(run_dir, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, min_lr=min_lr,
                            warmup=warmup, seed=seed, device="cpu")
    losses: list[float] = []
    Trainer(cfg, model=model, data=RunData(train=data),
            callbacks=[lambda r: losses.append(r["loss"]) if r["event"] == "train" else None]).fit()
    return losses


@pytest.fixture(scope="session")
def fit():
    """``fit(model, data, run_dir, steps=..., ...)``: :func:`fit_model`."""
    return fit_model
