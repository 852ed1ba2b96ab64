"""Fixtures for the analysis tests: a tiny trained-from-scratch BPE tokenizer, tiny causal LMs and
synthetic probe items (invented names, categories), all built locally in milliseconds."""

from __future__ import annotations

import random

import pytest

from substrate_lm.analysis.wordgroups import TEMPLATES as WG_TEMPLATES, WORD_GROUPS

CATEGORIES = ["animal", "plant", "city", "tool"]
TEMPLATES = [
    "Yesterday {n} was seen near the river.",
    "Everyone knows that {n} is old.",
    "{n} appeared in the story again.",
    "The tale of {n} ends here.",
]


def invented_names(n: int, seed: int = 0) -> list[str]:
    """Distinct pronounceable invented names (several BPE tokens each)."""
    rng = random.Random(seed)
    syl = ["zor", "bla", "kin", "tef", "mu", "rax", "quo", "lin", "dre", "vak", "spo", "hul", "nie", "gat"]
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(syl) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in out:
            out.append(name)
    return out


def make_items(n_entities: int = 24, per_entity: int = 4, seed: int = 0) -> list[dict]:
    """World-like probe items: each entity has one category and appears in several sentences."""
    rng = random.Random(seed)
    names = invented_names(n_entities, seed)
    items = []
    for e, name in enumerate(names):
        label = CATEGORIES[e % len(CATEGORIES)]
        for t in rng.sample(TEMPLATES, per_entity):
            start = t.index("{n}")
            items.append(
                {"text": t.replace("{n}", name), "start": start, "end": start + len(name), "label": label, "entity": f"e{e}"}
            )
    return items


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE PreTrainedTokenizerFast with a BOS template (offsets include the space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [t.replace("{n}", n) for t in TEMPLATES for n in invented_names(60, 1)]
    corpus += [t.replace("{w}", w) for t in WG_TEMPLATES for ws in WORD_GROUPS.values() for w in ws]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_neox(vocab_size: int, n_layer: int = 2, hidden: int = 32, seed: int = 0):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_neox(bpe_tokenizer):
    return make_neox(len(bpe_tokenizer), n_layer=2)


@pytest.fixture(scope="session")
def neox_factory():
    """``make_neox(vocab_size, n_layer=2, hidden=32, seed=0)``: a fresh tiny GPT-NeoX."""
    return make_neox


@pytest.fixture(scope="session")
def items_factory():
    """``make_items(n_entities=24, per_entity=4, seed=0)``: synthetic world-like items."""
    return make_items


@pytest.fixture()
def items():
    return make_items()
