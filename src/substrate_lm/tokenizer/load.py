"""Load any Hugging Face tokenizer (folder, ``tokenizer.json`` file or hub id) through one path.

Folders and hub ids go through ``AutoTokenizer.from_pretrained(x, trust_remote_code=False)``: the
``.py`` files of a folder never run unless the caller passes ``trust_remote_code=True`` (the
``--trust-remote-code`` flag), and a folder that needs them is refused with one line saying so; a
lone ``tokenizer.json`` file (no ``tokenizer_config.json`` beside it) through
``PreTrainedTokenizerFast(tokenizer_file=...)``, and a bvv241 one gets its roles (``<s>``, ``</s>``,
``<unk>``, ``<pad>``) from its detected layout. One guard follows: transformers 5 rebuilds the pipeline of named tokenizer classes; a folder whose
``tokenizer_config.json`` names e.g. ``GPT2Tokenizer`` while its ``tokenizer.json`` has no
pre-tokenizer (as a bvv241 tokenizer saved with ``model_type gpt2`` may) would silently get a
byte-level pre-tokenizer and encode spaces as ``Ġ``. When the loaded pipeline differs in kind
from the ``tokenizer.json`` it came from, the file wins and the tokenizer is reloaded as a plain
``PreTrainedTokenizerFast`` with the same special tokens.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SubstrateError
from ..fsutil import read_json
from ..logutil import drop_log_records
from .inspect import detect_layout

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_COMPONENTS = ("normalizer", "pre_tokenizer", "decoder", "model")


def load_tokenizer(name_or_path, revision: str | None = None, trust_remote_code: bool = False,
                   **kwargs) -> "PreTrainedTokenizerBase":
    """Load a tokenizer.

    Args:
        name_or_path: A tokenizer folder, a ``tokenizer.json`` file, a hub id such as
            ``Bochkov/bvv241-2-3``, or an already loaded tokenizer (returned unchanged).
        revision: Hub revision.
        trust_remote_code: allow a tokenizer class defined in the folder's own code to run.
        **kwargs: Passed to ``AutoTokenizer.from_pretrained``.

    Returns:
        The tokenizer.

    Raises:
        SubstrateError: Nothing loadable there (one line, with the reason).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

    if isinstance(name_or_path, PreTrainedTokenizerBase):
        return name_or_path
    source = str(name_or_path)
    path = Path(source).expanduser()
    if path.is_file():
        if path.name != "tokenizer.json" or not (path.parent / "tokenizer_config.json").exists():
            try:
                tok = PreTrainedTokenizerFast(tokenizer_file=str(path), clean_up_tokenization_spaces=False)
            except Exception as exc:  # tokenizers raises plain Exception subclasses on bad JSON
                raise SubstrateError(f"cannot load tokenizer file {path}: {_first_line(exc)}") from None
            return _fill_bvv241_roles(tok)
        path = path.parent
    if path.is_dir():
        if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
            raise SubstrateError(f"{path} holds no tokenizer files (tokenizer.json, tokenizer_config.json)")
        source = str(path)
        _register_our_config(path)
    try:
        # transformers logs "You are using a model of type X to instantiate a model of type ``" when
        # AutoTokenizer reads the config of a type it does not know (remote code off) with the bare
        # config class; only the tokenizer is built from it, so the line is noise on our stderr
        with drop_log_records("transformers.configuration_utils", "to instantiate a model of type ``"):
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(trust_remote_code), revision=revision,
                                                **kwargs)
    except Exception as exc:  # OSError, ValueError, HF validation/connection errors, JSON errors
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise SubstrateError(
                f"tokenizer {source!r} needs the code in its own folder (auto_map); it was not run: pass "
                f"--trust-remote-code only if you trust that code"
            ) from None
        raise SubstrateError(
            f"cannot load tokenizer {source!r}: {_first_line(exc)}; pass a folder with tokenizer.json or a hub id"
        ) from None
    return _fill_bvv241_roles(_respect_tokenizer_json(tok, source, path.is_dir(), revision))


def _register_our_config(folder: Path) -> None:
    """Register substrate-lm's model types with ``AutoConfig`` when ``folder`` is one of our model folders.

    ``AutoTokenizer`` reads the folder's ``config.json``; with our model type unregistered (and
    ``trust_remote_code`` off) it falls back to a bare config and logs "You are using a model of type
    substrate_lm to instantiate a model of type ``". Registered, it reads our config class; nothing
    from the folder runs either way.
    """
    data = read_json(folder / "config.json", missing=None, corrupt=None)
    if isinstance(data, dict) and str(data.get("model_type", "")).startswith("substrate_lm"):
        import substrate_lm.modeling  # noqa: F401  - registers substrate_lm, substrate_lm_composed


def _fill_bvv241_roles(tok):
    """A bare bvv241 tokenizer.json carries no roles; give it <s>, </s>, <unk>, <pad> from its layout."""
    if getattr(tok, "eos_token", None) is not None or getattr(tok, "backend_tokenizer", None) is None:
        return tok
    layout = detect_layout(tok)
    if layout is not None:
        tok.add_special_tokens({
            "bos_token": layout.bos_token, "eos_token": layout.eos_token,
            "unk_token": layout.unk_token, "pad_token": layout.pad_token,
        })
    return tok


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _tokenizer_json(source: str, local: bool, revision: str | None) -> Path | None:
    if local:
        p = Path(source) / "tokenizer.json"
        return p if p.is_file() else None
    try:  # already downloaded by from_pretrained; no network access here
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "tokenizer.json", revision=revision)
    except Exception:
        return None
    return Path(found) if isinstance(found, (str, os.PathLike)) else None


def _kinds(backend) -> dict[str, str | None]:
    parts = {c: getattr(backend, c, None) for c in _COMPONENTS}
    return {c: (type(v).__name__ if v is not None else None) for c, v in parts.items()}


def _respect_tokenizer_json(tok, source: str, local: bool, revision: str | None):
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tok, "backend_tokenizer", None)
    # The generic class loads tokenizer.json verbatim; only named classes rebuild parts of it.
    if backend is None or type(tok) is PreTrainedTokenizerFast:
        return tok
    file = _tokenizer_json(source, local, revision)
    if file is None:
        return tok
    try:
        from tokenizers import Tokenizer

        saved = _kinds(Tokenizer.from_file(str(file)))
    except Exception:  # unreadable file: keep what transformers built
        return tok
    loaded = _kinds(backend)
    changed = [c for c in _COMPONENTS if saved[c] != loaded[c]]
    if not changed:
        return tok
    warnings.warn(
        f"{type(tok).__name__} changed the {', '.join(changed)} of {file}; using tokenizer.json as saved",
        stacklevel=3,
    )
    roles = {r: str(getattr(tok, r)) for r in ("bos_token", "eos_token", "unk_token", "pad_token") if getattr(tok, r, None)}
    fixed = PreTrainedTokenizerFast(tokenizer_file=str(file), clean_up_tokenization_spaces=False, **roles)
    fixed.name_or_path = source
    return fixed
