"""A tokenizer's identity: the one fingerprint every folder records and every command compares.

A model's table rows, a prepared data folder's ids and a checkpoint's training data all stand for
the tokens of one tokenizer. Each records :func:`tokenizer_fingerprint` (exports in
``config.json`` as ``tokenizer_fingerprint``, prepared data in ``meta.json`` under
``tokenizer.fingerprint``, checkpoints as the data's fingerprint), and :func:`check_same_tokenizer`
refuses a mismatch in one line naming both sides, unless the user passes the command's explicit
flag (``--allow-foreign-tokenizer``, ``--model.allow_foreign_tokenizer true``).

The fingerprint is the sha256 of the serialised Rust tokenizer (vocabulary, merges, normaliser,
pre-tokeniser, special tokens) with its truncation and padding settings cleared, so the same
tokenizer loaded from a folder, the hub or memory compares equal whatever a caller switched on.
A tokenizer without a Rust backend is fingerprinted by its vocabulary (``vocab-sha256:``).
"""

from __future__ import annotations

import hashlib
import json

from ..errors import SubstrateError

#: config.json key of an export holding its tokenizer's fingerprint.
CONFIG_KEY = "tokenizer_fingerprint"


def tokenizer_fingerprint(tok) -> str | None:
    """``"sha256:<hex>"`` of a tokenizer (see the module docstring); None when it has no vocabulary."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None and type(tok).__name__ == "Tokenizer" and hasattr(tok, "to_str"):
        backend = tok  # a bare tokenizers.Tokenizer
    if backend is not None:
        serial = backend.to_str()
        if getattr(backend, "truncation", None) is not None or getattr(backend, "padding", None) is not None:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(serial)  # the caller's tokenizer keeps its settings
            copy.no_truncation()
            copy.no_padding()
            serial = copy.to_str()
        return "sha256:" + hashlib.sha256(serial.encode("utf-8")).hexdigest()
    get_vocab = getattr(tok, "get_vocab", None)
    if get_vocab is None:
        return None
    blob = json.dumps(sorted(get_vocab().items(), key=lambda kv: kv[1]), ensure_ascii=False)
    return "vocab-sha256:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def short(fingerprint: str | None) -> str:
    """A fingerprint shortened for messages (``sha256:1a2b3c4d5e6f``)."""
    if not fingerprint:
        return "unrecorded"
    head, _, digest = fingerprint.partition(":")
    return f"{head}:{digest[:12]}"


def check_same_tokenizer(expected: str | None, given: str | None, *, owner: str, other: str,
                         flag: str, allow: bool = False, warn=None) -> bool:
    """Refuse ``given`` (a fingerprint) where ``owner`` recorded ``expected``.

    Args:
        expected: the fingerprint ``owner`` recorded (None: nothing recorded, nothing to check).
        given: the fingerprint of the tokenizer about to be used (None: unknown, not checked).
        owner: what recorded ``expected``, e.g. ``"model runs/m (its tokenizer: runs/m)"``.
        other: what ``given`` belongs to, e.g. ``"--tokenizer tok2"``.
        flag: the explicit flag that accepts the mismatch, named in the message.
        allow: the flag was given: a mismatch is reported through ``warn`` and accepted.
        warn: receives the one-line warning when ``allow`` accepts a mismatch.

    Returns:
        True when both are known and equal or nothing could be compared, False for an accepted mismatch.

    Raises:
        SubstrateError: one line naming both sides and the flag.
    """
    if not expected or not given or expected == given:
        return True
    if allow:
        if warn is not None:
            warn(f"warning: {other} ({short(given)}) is not the tokenizer of {owner} ({short(expected)}); "
                 f"used anyway ({flag})")
        return False
    raise SubstrateError(
        f"tokenizer mismatch: {owner} was made with tokenizer {short(expected)} but {other} is "
        f"{short(given)} (every id would stand for another token); use the matching tokenizer, or pass "
        f"{flag} if you mean to")


__all__ = ["CONFIG_KEY", "tokenizer_fingerprint", "check_same_tokenizer", "short"]
