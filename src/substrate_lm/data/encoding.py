"""The tokenizer side of data preparation: loading, identity, limits and batch encoding.

Preparation only needs three things from a tokenizer: a Rust batch encoder (so both cores work),
an eos id, and an identity that a later run can compare against (``meta.json``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from ..errors import SubstrateError
from ..tokenizer import load_tokenizer
from ..tokenizer.identity import tokenizer_fingerprint

#: uint16 shards hold ids 0..65535.
MAX_VOCAB = 1 << 16

_EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|eos|>", "[EOS]", "<|end_of_text|>")


def load_tokenizer_any(tokenizer) -> tuple[object, str | None]:
    """Return ``(fast_tokenizer, name)`` for a tokenizer object, directory or hub id.

    Args:
        tokenizer: a ``PreTrainedTokenizerFast``, a ``tokenizers.Tokenizer``, or a directory /
            hub id (loaded with :func:`substrate_lm.tokenizer.load_tokenizer`).

    Raises:
        SubstrateError: the tokenizer cannot be loaded or is not a fast (Rust) tokenizer.
    """
    name = None
    if isinstance(tokenizer, (str, os.PathLike)):
        name = os.fspath(tokenizer)
        tokenizer = _load_by_name(name)
    else:
        from tokenizers import Tokenizer

        if isinstance(tokenizer, Tokenizer):
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
        name = getattr(tokenizer, "name_or_path", None) or None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise SubstrateError(
            f"tokenizer {name or type(tokenizer).__name__} is not a fast (Rust) tokenizer; "
            "save it with tokenizer.json or pass a PreTrainedTokenizerFast"
        )
    return tokenizer, name


def _load_by_name(name: str):
    p = Path(os.path.expanduser(name))
    looks_local = p.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not p.exists():
        raise SubstrateError(f"tokenizer not found: {name} (no such folder)")
    try:
        # never the folder's own code: a data or model folder is untrusted input
        return load_tokenizer(str(p) if p.exists() else name)
    except SubstrateError:
        raise
    except Exception as exc:  # hub / file errors come in many types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SubstrateError(f"cannot load tokenizer {name}: {msg}") from None


def _eos_id(tok, vocab: dict) -> tuple[int, str]:
    eos = getattr(tok, "eos_token_id", None)
    if eos is not None:
        return int(eos), str(tok.eos_token)
    for cand in _EOS_CANDIDATES:
        if cand in vocab:
            return int(vocab[cand]), cand
    raise SubstrateError(
        "the tokenizer has no eos token; set one (e.g. tokenizer.eos_token = '</s>') and save it "
        "before preparing data"
    )


def tokenizer_identity(tok, name: str | None = None) -> dict:
    """Describe a tokenizer for ``meta.json`` and check that its ids fit uint16 shards.

    The ``fingerprint`` is :func:`substrate_lm.tokenizer.identity.tokenizer_fingerprint` (the
    sha256 of the serialised Rust tokenizer), so the same tokenizer loaded from a directory, the
    hub or memory compares equal; ``tokenizer_json_sha256`` is the
    hash of the file itself when the tokenizer came from a local directory.

    Raises:
        SubstrateError: more than 65,536 ids, or no eos token.
    """
    vocab = tok.get_vocab()
    size = max(len(tok), (max(vocab.values()) + 1) if vocab else 0)
    if size > MAX_VOCAB:
        raise SubstrateError(
            f"tokenizer {name or type(tok).__name__} has {size:,} ids but uint16 shards hold at "
            f"most {MAX_VOCAB:,}; use a tokenizer with a vocabulary of <= {MAX_VOCAB:,}"
        )
    eos_id, eos_token = _eos_id(tok, vocab)
    unk_id = getattr(tok, "unk_token_id", None)
    file_sha = None
    if name and Path(os.path.expanduser(name)).is_dir():
        f = Path(os.path.expanduser(name)) / "tokenizer.json"
        if f.is_file():
            file_sha = "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    return {
        "name": name,
        "class": type(tok).__name__,
        "vocab_size": int(size),
        "eos_id": eos_id,
        "eos_token": eos_token,
        "unk_id": None if unk_id is None else int(unk_id),
        "unk_token": getattr(tok, "unk_token", None) if unk_id is not None else None,
        "bos_id": getattr(tok, "bos_token_id", None),
        "pad_id": getattr(tok, "pad_token_id", None),
        "fingerprint": tokenizer_fingerprint(tok),
        "tokenizer_json_sha256": file_sha,
    }


def plain_text_mode(backend) -> None:
    """Make a Rust tokenizer encode special-token strings in the input as ordinary text.

    By default ``tokenizers`` matches added special tokens in the input before anything else, so
    a document containing ``</s>`` would get the eos id in the middle of its text (and ``[INST]``
    a chat control token). With ``encode_special_tokens`` set they go through the normal model
    like any other characters; only ids placed by the caller (the preparer's eos) are special.

    Raises:
        SubstrateError: the installed ``tokenizers`` cannot do this (older than 0.15).
    """
    try:
        backend.encode_special_tokens = True
    except AttributeError:
        pass
    if not getattr(backend, "encode_special_tokens", False):
        raise SubstrateError("the installed tokenizers package cannot encode special-token "
                             "strings as plain text; pip install 'tokenizers>=0.15'")


def batch_encoder(tok) -> tuple[Callable[[list[str]], list[list[int]]], object]:
    """``(encode, backend)``: a function mapping texts to id lists on the Rust batch path.

    Truncation and padding are switched off on a private copy of the Rust tokenizer (they would
    silently cut documents); adds no special tokens: the preparer places eos itself. Text is
    plain text: a literal ``</s>``, ``<s>`` or ``[INST]`` in a document is encoded as its
    characters, never as the control token (see :func:`plain_text_mode`). ``encode_batch_fast`` (no offsets) is used where the
    installed ``tokenizers`` has it; both spread the batch over all cores.
    """
    from tokenizers import Tokenizer

    # a private copy: the caller's tokenizer keeps its settings
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    plain_text_mode(backend)
    encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch

    def encode_texts(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    return encode_texts, backend


# Texts with the boundaries find_cut() cuts at: after a newline before a non-space character, and
# before a single space between two non-space characters, in several scripts.
_CUT_PROBES = (
    "Hello world.\nThe next line starts here",
    "the quick brown fox jumps over the lazy dog",
    "Привет, мир!\nКак дела? Всё хорошо",
    "你好，世界。\n再见 朋友",
    "x = f(a, b)\n    return x\nend",
    "ab\n\nCD ef",
)


def cut_is_exact(encode: Callable[[list[str]], list[list[int]]]) -> bool:
    """Whether cutting text at :func:`~substrate_lm.data.sources.find_cut` boundaries keeps ids.

    Encodes each probe whole and in two parts at every such boundary. Tokenizers whose merges
    and pre-tokenizers never join across whitespace (bvv241, GPT-2 style byte-level BPE) pass;
    ones that mark the start of every input (SentencePiece's prepended ``\u2581``) fail.
    """
    cases, wholes = [], []
    for text in _CUT_PROBES:
        for q in range(1, len(text)):
            after_nl = text[q - 1] == "\n" and not text[q].isspace()
            before_sp = (text[q] == " " and not text[q - 1].isspace() and q + 1 < len(text)
                         and not text[q + 1].isspace())
            if after_nl or before_sp:
                cases.append((text[:q], text[q:]))
                wholes.append(text)
    flat = [p for pair in cases for p in pair]
    parts = encode(flat)
    full = encode(wholes)
    return all(parts[2 * i] + parts[2 * i + 1] == full[i] for i in range(len(cases)))
