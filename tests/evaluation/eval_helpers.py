"""Builders shared by the evaluation tests: a char-level tokenizer, tiny causal LMs, benchmark rows.

The tokenizer is built here with ``tokenizers`` (one token per character, ``<s>`` prepended by
``encode`` like the bvv241 tokenizers, a decoder that concatenates) so the published decode-and-slice
extraction round-trips exactly. The tiny model is a ``GPTNeoXForCausalLM`` (any HF causal LM must
work); the substrate model is exercised where noted.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from substrate_lm.modeling import SubstrateForCausalLM
from substrate_lm.presets import get_preset
from substrate_lm.substrates import build_substrate

CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c")) + list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ") + list("我你他的是不了人在有中")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def make_char_tokenizer(extra_chars: str = ""):
    """PreTrainedTokenizerFast: ids 0-3 specials, then one id per character."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    chars = CHARS + [c for c in extra_chars if c not in CHARS]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def make_tiny_neox(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, ctx: int = 512):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=4 * hidden, max_position_embeddings=ctx, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def arc_rows(n: int, prefix: str = "Mercury_", answer_cycle: str = "ABCD") -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({
            "id": f"{prefix}{i}",
            "question": f"Which item number {i} is right?",
            "choices": {"label": list("ABCD"), "text": [f"red {i}", f"blue {i}", f"green {i}", f"gold {i}"]},
            "answerKey": answer_cycle[i % len(answer_cycle)],
        })
    return rows


def mmlu_rows(n: int, answer_cycle: str = "ABCD") -> list[dict]:
    return [{"input": f"What is {i} plus one?", "A": str(i + 1), "B": str(i), "C": str(i + 2), "D": "none",
             "target": answer_cycle[i % len(answer_cycle)]} for i in range(n)]


def fixed_distribution_model(tok, logits: dict[str, float], default: float = -20.0, seed: int = 0):
    """A hand-built causal LM whose next-token logits are the same at every position.

    A tiny GPT-NeoX with the final LayerNorm's gain zeroed and its bias set to e_0, so every
    position's final hidden state is e_0; the output matrix's column 0 then holds the logits
    (``logits[char]``, ``default`` for every other token). Works with ``generate`` and batching.
    """
    m = make_tiny_neox(len(tok), seed=seed)
    vec = torch.full((len(tok),), float(default))
    for ch, v in logits.items():
        (tid,) = tok.convert_tokens_to_ids([ch])
        vec[tid] = float(v)
    with torch.no_grad():
        m.gpt_neox.final_layer_norm.weight.zero_()
        m.gpt_neox.final_layer_norm.bias.zero_()
        m.gpt_neox.final_layer_norm.bias[0] = 1.0
        m.lm_head.weight.zero_()
        m.lm_head.weight[:, 0] = vec
    return m


def letter_model(tok, letter: str = "B", sample: bool = True):
    """A scripted model that always answers ``letter`` (its logit is 60 above every other token's).

    ``sample=True`` makes its generation config sample (as ours and the published models do), so the
    paper protocol really runs every repetition; the letter still comes out every time.
    """
    m = fixed_distribution_model(tok, {letter: 60.0}, default=0.0)
    m.generation_config.do_sample = sample
    return m


def substrate_model(tok, seed: int = 0, block_size: int = 512):
    """The project's own tiny SubstrateForCausalLM for this tokenizer."""
    torch.manual_seed(seed)
    model = SubstrateForCausalLM(get_preset("tiny", vocab_size=len(tok), block_size=block_size)).eval()
    # a frozen table must carry its fingerprint to be exported and loaded: install a real substrate
    cfg = model.config
    sub = build_substrate(cfg.substrate_kind, cfg.vocab_size, cfg.n_embed, seed=seed)
    model.set_substrate(sub.table, kind=sub.kind, meta=sub.meta)
    return model
