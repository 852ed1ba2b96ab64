"""Loading causal LMs for evaluation, checking their vocabularies, and batched generation.

Any Hugging Face causal LM directory works: ours load with the package's own classes (never the
folder's ``.py`` files), others through transformers with ``trust_remote_code`` off unless the
caller asks for it (:mod:`substrate_lm.loading`). :func:`generate_continuations` reproduces the published
single-prompt ``model.generate(input_ids, n)`` + decode + slice in batches: prompts are encoded one
by one as published (``tokenizer.encode(prompt)``, through :func:`encode_text` so that a literal
``</s>``, ``<s>`` or ``[INST]`` in a prompt stays text), left-padded with an attention mask, and
each row is cut back to what a batch of one would have returned (stop at the first EOS) before it
is decoded. Models whose ``forward`` takes no ``position_ids`` are only batched with prompts of the
same length, so left padding never shifts their positions.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch

from ..errors import SubstrateError
from ..loading import load_model_dir, load_tokenizer

# Slack allowed between the model's vocabulary and the tokenizer's: many checkpoints pad the
# embedding table to a multiple of 64/128 (Pythia: 50304 rows for 50277 ids; Qwen2: +271).
VOCAB_PAD_SLACK = 1024


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> cuda when available, else cpu; anything else must name an available device.

    The one device check of the project (the CLI's ``--device`` goes through it too).
    """
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise SubstrateError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SubstrateError(f"--device {device} asked for but CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SubstrateError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SubstrateError(f"--device {device} asked for but MPS is not available here; use --device cpu")
        return dev
    raise SubstrateError(f"--device {device!r} is not supported; use cpu, cuda, cuda:N, mps or auto")


def model_device(model) -> torch.device:
    """Device of the model's first parameter (cpu for a parameterless module)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def model_vocab_size(model) -> int | None:
    """Rows of the input embedding table (or ``config.vocab_size``)."""
    get = getattr(model, "get_input_embeddings", None)
    if get is not None:
        try:
            emb = get()
            if emb is not None and hasattr(emb, "weight"):
                return int(emb.weight.shape[0])
        except NotImplementedError:
            pass
    cfg = getattr(model, "config", None)
    return int(cfg.vocab_size) if cfg is not None and getattr(cfg, "vocab_size", None) else None


def check_vocab(model, tokenizer, strict: bool = False) -> None:
    """Refuse a model and tokenizer whose vocabularies disagree.

    The tokenizer must not produce ids the model has no row for (``len(tokenizer)`` > model rows),
    and the model may have at most :data:`VOCAB_PAD_SLACK` padding rows beyond the tokenizer
    (``strict=True``: none).

    Raises:
        SubstrateError: naming both sizes.
    """
    n_model = model_vocab_size(model)
    n_tok = len(tokenizer)
    if n_model is None:
        return
    slack = 0 if strict else VOCAB_PAD_SLACK
    if n_tok > n_model or n_model - n_tok > slack:
        raise SubstrateError(
            f"model and tokenizer vocabularies disagree: the model has {n_model} token rows, the tokenizer "
            f"{n_tok} ids; load the tokenizer the model was trained with"
        )


def max_context(model, default: int = 2048) -> int:
    """The model's context length from its config (``max_position_embeddings`` and friends)."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "block_size", "n_positions", "n_ctx", "seq_length"):
        val = getattr(cfg, key, None) if cfg is not None else None
        if isinstance(val, int) and val > 0:
            return val
    return default


def accepts(model, name: str) -> bool:
    """True when ``model.forward`` takes a parameter called ``name`` explicitly."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def load_model(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    strict_vocab: bool = False,
    trust_remote_code: bool = False,
):
    """Load a causal LM directory (or hub id) with its tokenizer, checked and in eval mode.

    Args:
        path: model directory (``config.json`` + weights) or a hub id.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``/None.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype (default: as saved).
        tokenizer_path: tokenizer from elsewhere (default: the model directory).
        strict_vocab: require exactly equal vocabulary sizes.
        trust_remote_code: let a foreign folder run its own ``.py`` files (``--trust-remote-code``).

    Returns:
        ``(model, tokenizer)``.
    """
    p = Path(path)
    if p.exists() and not (p / "config.json").is_file():
        raise SubstrateError(f"{p} is not a model directory (no config.json); pass a directory from export_model")
    dev = resolve_device(device)
    tokenizer = load_tokenizer(str(tokenizer_path or path), trust_remote_code=trust_remote_code)
    model = load_model_dir(path, device=dev, dtype=dtype, trust_remote_code=trust_remote_code, allow_hub=True)
    check_vocab(model, tokenizer, strict=strict_vocab)
    return model, tokenizer


def encode_text(tokenizer, text: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of user text (a prompt, a question, held-out text): text is never control tokens.

    ``split_special_tokens=True``: a literal ``</s>``, ``<s>``, ``[INST]`` in the text is encoded as
    the characters it is made of, as data preparation encodes training text, so a benchmark item or a
    prompt cannot end a sequence or open a turn by its wording. ``add_special_tokens`` still adds
    what the tokenizer's own template adds (e.g. a BOS). ``verbose=False``: no "sequence length is
    longer than the specified maximum" warning; callers window or truncate long inputs themselves.
    """
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens, split_special_tokens=True,
                                 verbose=False))


def pad_id(tokenizer) -> int:
    """Id used for padding: the pad token, else EOS, else 0 (masked out either way)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _eos_ids(model, gen_kwargs: dict) -> set[int]:
    """The ids ``generate`` stops at (the generation config's, as a batch of one would use)."""
    src = gen_kwargs.get("eos_token_id")
    if src is None:
        src = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if src is None:
        return set()
    return {int(x) for x in (src if isinstance(src, (list, tuple)) else [src])}


def _batches(order: list[int], lengths: list[int], batch_size: int, same_length: bool):
    """Split ``order`` (sorted by length) into batches; ``same_length`` never mixes lengths."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) >= batch_size or (same_length and lengths[i] != lengths[batch[0]])):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.no_grad()
def generate_continuations(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int | list[int],
    batch_size: int = 16,
    greedy: bool = False,
    generation_kwargs: dict | None = None,
) -> list[str]:
    """Published-style continuations for many prompts, batched.

    For each prompt: ``ids = encode_text(tokenizer, prompt)``; generate ``max_new_tokens`` tokens with the
    model's own generation config (it samples when the saved config says so) or greedily; decode the
    whole sequence, remove ``<s>``, and slice off ``len(prompt)`` characters, exactly as published.

    Args:
        prompts: prompt strings.
        max_new_tokens: one value for all, or one per prompt (rows of a batch generate the batch's
            maximum and are cut back to their own count, which leaves each row's distribution as if
            generated alone).
        batch_size: prompts per ``generate`` call (1 = the published one-by-one loop).
        greedy: ``do_sample=False`` instead of the model's generation config.
        generation_kwargs: extra ``generate`` arguments (temperature, top_k, ...).

    Returns:
        The continuation text of each prompt, in input order.
    """
    n = len(prompts)
    if n == 0:
        return []
    news = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
    encoded = [encode_text(tokenizer, p) for p in prompts]
    lengths = [len(e) for e in encoded]
    limit = max_context(model)
    truncated: set[int] = set()
    for i, e in enumerate(encoded):
        if len(e) + news[i] > limit:
            # keep the tail of the prompt (what a model of this context can condition on)
            encoded[i] = e[-(limit - news[i]):]
            lengths[i] = len(encoded[i])
            truncated.add(i)
    dev = model_device(model)
    pid = pad_id(tokenizer)
    same_length = not accepts(model, "position_ids")
    order = sorted(range(n), key=lambda i: (news[i], lengths[i]))
    out: list[str | None] = [None] * n
    gen_kwargs = dict(generation_kwargs or {})
    if greedy:
        gen_kwargs.update(do_sample=False)
        # drop sampling knobs so transformers does not warn that they are ignored
        gen_kwargs.update(temperature=None, top_k=None, top_p=None)
    gen_kwargs.setdefault("pad_token_id", pid)
    eos = _eos_ids(model, gen_kwargs)
    for batch in _batches(order, lengths, max(1, batch_size), same_length):
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pid, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):  # left padding: the prompt ends at the last column
            ids[r, width - lengths[i]:] = torch.tensor(encoded[i], dtype=torch.long)
            mask[r, width - lengths[i]:] = 1
        steps = max(news[i] for i in batch)
        res = model.generate(
            ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=steps, min_new_tokens=0, **gen_kwargs
        )
        seqs = res.sequences if hasattr(res, "sequences") else res
        seqs = seqs.tolist()
        for r, i in enumerate(batch):
            new = seqs[r][width:][: news[i]]
            for k, t in enumerate(new):  # a batch of one stops after its first EOS
                if t in eos:
                    new = new[: k + 1]
                    break
            text = tokenizer.decode(list(encoded[i]) + new).replace("<s>", "")
            # published: slice off len(prompt) characters (less each literal "<s>" of the prompt,
            # which the replace above removed as well); a left-truncated prompt is sliced by the
            # length of what is left of it
            if i in truncated:
                cut = len(tokenizer.decode(encoded[i]).replace("<s>", ""))
            else:
                cut = len(prompts[i]) - 3 * prompts[i].count("<s>")
            out[i] = text[cut:]
    return out  # type: ignore[return-value]
