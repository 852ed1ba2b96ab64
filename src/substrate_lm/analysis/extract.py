"""Per-layer representations of words and entities in context, for any HF causal LM.

For every probe item the model reads the item's text; the hidden states of the tokens that overlap
the item's character span (found with the fast tokenizer's offsets mapping) are mean-pooled, for
every entry of ``output_hidden_states``. HF convention (ours included): ``hidden_states`` has
``n_layer + 1`` entries, index 0 is the input to the first block (for substrate models the
expanded substrate rows) and the last one is taken after the final norm.

In front of those comes the **substrate** itself: the rows of the input embedding table
(``model.get_input_embeddings().weight``) of the span's token ids, mean-pooled the same way. That is
"layer 0" in the papers' sense: whatever the input table encodes before any block has run. For a
random-code substrate it encodes token identity only, which is the baseline emergence is measured
against.

Two details keep extraction cheap and exact:

* text after the span is cut off before the forward pass; a causal model's states at the span do
  not depend on later tokens, so the result is identical and the batch is shorter;
* sequences are sorted by length and right-padded with an attention mask, so padding never sits
  in front of real tokens (positions of real tokens are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import SubstrateError

SUBSTRATE = "substrate"


@dataclass
class Representations:
    """Pooled representations of N items at several layers.

    Attributes:
        names: layer names, ``"substrate"`` first (when available), then hidden-state indices as
            strings (``"0"`` .. ``"n_layer"``).
        arrays: one float32 array ``[N, d_layer]`` per name.
        valid: bool ``[N]``; False where no token overlapped the item's span (row is zeros).
        n_tokens: int ``[N]``, tokens pooled per item.
        meta: model facts (``n_layer``, ``hidden_size``, ``substrate_width``, ...).
    """

    names: list[str]
    arrays: list[np.ndarray]
    valid: np.ndarray
    n_tokens: np.ndarray
    meta: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[self.names.index(name)]

    def subset(self, mask: np.ndarray) -> "Representations":
        """The same layers restricted to the rows selected by a bool ``[N]`` mask."""
        return Representations(
            list(self.names), [a[mask] for a in self.arrays], self.valid[mask], self.n_tokens[mask], dict(self.meta)
        )


def span_token_mask(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[bool]:
    """Which tokens overlap the character span ``[start, end)``.

    A token overlaps when ``tok_start < end and tok_end > start``. Empty offsets (``(0, 0)``, used by
    special tokens such as BOS) never overlap. A byte-level BPE token that carries the leading space
    (offsets ``(start - 1, end)``) does overlap, which is what we want: it is the word's token.
    """
    return [bool(e > s and s < end and e > start) for s, e in offsets]


def _max_positions(model, tokenizer) -> int:
    cfg = getattr(model, "config", None)
    limits = []
    for key in ("max_position_embeddings", "n_positions", "block_size", "seq_length"):
        val = getattr(cfg, key, None)
        if isinstance(val, int) and val > 0:
            limits.append(val)
            break
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    return min(limits) if limits else 1024


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        val = getattr(tokenizer, attr, None)
        if isinstance(val, int) and val >= 0:
            return val
    return 0


def resolve_layers(layers, n_hidden: int) -> list[int]:
    """Hidden-state indices to keep.

    Args:
        layers: ``"all"``, an int list/tuple, or a comma string such as ``"0,4,8"``; negative
            indices count from the end (``-1`` is the last hidden state).
        n_hidden: number of hidden states the model returns (``n_layer + 1``).
    """
    if layers is None or layers == "all":
        return list(range(n_hidden))
    if isinstance(layers, str):
        try:
            layers = [int(x) for x in layers.split(",") if x.strip()]
        except ValueError:
            raise SubstrateError(f"layers {layers!r} is not 'all' or a comma list of integers like 0,4,8") from None
    out = []
    for layer in layers:
        idx = int(layer) + n_hidden if int(layer) < 0 else int(layer)
        if not 0 <= idx < n_hidden:
            raise SubstrateError(f"layer {layer} is out of range: the model has hidden states 0..{n_hidden - 1}")
        if idx not in out:
            out.append(idx)
    return sorted(out)


def _tokenize(tokenizer, items: list[dict], add_special_tokens: bool):
    if not getattr(tokenizer, "is_fast", False):
        raise SubstrateError(
            "analysis needs a fast tokenizer (offsets mapping) to find each item's tokens; load it with "
            "AutoTokenizer.from_pretrained(dir, use_fast=True) or convert it to tokenizer.json"
        )
    enc = tokenizer(
        [it["text"] for it in items],
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=True,
        return_attention_mask=False,
        truncation=False,
    )
    return enc["input_ids"], enc["offset_mapping"]


def _accepts(model, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False
    return name in params


def _forward(model, input_ids, attention_mask, head_kwargs: dict):
    try:
        return model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False, **head_kwargs
        )
    except TypeError:
        if not head_kwargs:
            raise
        head_kwargs.clear()  # remembered for the following batches
        return model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)


@torch.no_grad()
def extract_representations(
    model,
    tokenizer,
    items: list[dict],
    layers="all",
    batch_size: int = 16,
    device=None,
    add_special_tokens: bool = True,
    include_substrate: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Representations:
    """Mean-pooled span representations per layer for every item.

    Args:
        model: any HF causal LM whose forward accepts ``output_hidden_states=True``.
        tokenizer: its fast tokenizer.
        items: normalised probe items (see :mod:`.items`).
        layers: hidden-state indices to keep (see :func:`resolve_layers`).
        batch_size: sequences per forward pass.
        device: where to run; default the model's device.
        add_special_tokens: let the tokenizer add BOS etc. as in normal use (they are not pooled).
        include_substrate: also pool the input embedding table rows (layer ``"substrate"``).
        progress: called as ``progress(done, total)`` after every batch.

    Returns:
        :class:`Representations` with ``names = ["substrate", "0", ..., "n_layer"]``.
    """
    if not items:
        raise SubstrateError("no probe items to extract; give at least one {text, start, end, label} item")
    was_training = model.training
    model.eval()
    try:
        return _extract(model, tokenizer, items, layers, batch_size, device, add_special_tokens, include_substrate, progress)
    finally:
        if was_training:
            model.train()


def _extract(model, tokenizer, items, layers, batch_size, device, add_special_tokens, include_substrate, progress):
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    device = torch.device(device)
    n = len(items)
    ids_list, offs_list = _tokenize(tokenizer, items, add_special_tokens)
    max_len = _max_positions(model, tokenizer)

    # Per item: token ids up to the last span token, and the span mask over them.
    seqs: list[list[int]] = []
    masks: list[list[bool]] = []
    for ids, offs, item in zip(ids_list, offs_list, items):
        m = span_token_mask(offs, item["start"], item["end"])
        last = max((i for i, v in enumerate(m) if v), default=-1)
        if last < 0:  # no token covers the span: keep a dummy row, mark invalid
            seqs.append(list(ids[:1]) or [_pad_id(tokenizer)])
            masks.append([False] * len(seqs[-1]))
            continue
        ids, m = list(ids[: last + 1]), m[: last + 1]
        if len(ids) > max_len:  # keep the window that ends at the span
            ids, m = ids[-max_len:], m[-max_len:]
        seqs.append(ids)
        masks.append(m)
    n_tokens = np.array([sum(m) for m in masks], dtype=np.int64)
    valid = n_tokens > 0

    emb = model.get_input_embeddings() if include_substrate else None
    table = getattr(emb, "weight", None) if emb is not None else None
    if table is not None:
        table = table.detach()

    # Ask for logits at one position only: the LM head over a 65k vocabulary would otherwise cost
    # more than the blocks. Models that do not know ``logits_to_keep`` get a plain call.
    head_kwargs = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    order = sorted(range(n), key=lambda i: len(seqs[i]))
    pad = _pad_id(tokenizer)
    keep: list[int] | None = None
    outs: list[np.ndarray] | None = None
    sub_out: np.ndarray | None = None
    n_hidden = None
    for b0 in range(0, n, batch_size):
        idx = order[b0 : b0 + batch_size]
        t = max(len(seqs[i]) for i in idx)
        input_ids = torch.full((len(idx), t), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), t), dtype=torch.long)
        weights = torch.zeros((len(idx), t), dtype=torch.float32)
        for r, i in enumerate(idx):
            L = len(seqs[i])
            input_ids[r, :L] = torch.tensor(seqs[i], dtype=torch.long)
            attn[r, :L] = 1
            weights[r, :L] = torch.tensor(masks[i], dtype=torch.float32)
        # weights: [B, T], rows sum to 1 over the span tokens (all-zero rows stay zero)
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        out = _forward(model, input_ids.to(device), attn.to(device), head_kwargs)
        hs = out.hidden_states
        if hs is None:
            raise SubstrateError(
                f"{type(model).__name__} returned no hidden_states; analysis needs a causal LM that "
                "supports output_hidden_states=True"
            )
        if outs is None:
            n_hidden = len(hs)
            keep = resolve_layers(layers, n_hidden)
            outs = [np.zeros((n, hs[k].shape[-1]), dtype=np.float32) for k in keep]
            if table is not None:
                sub_out = np.zeros((n, table.shape[-1]), dtype=np.float32)
        for j, k in enumerate(keep):
            # [B, 1, T] @ [B, T, D] -> [B, D]; states may live on several devices (device_map)
            w = weights.to(hs[k].device)
            pooled = torch.bmm(w.unsqueeze(1), hs[k].float()).squeeze(1)
            outs[j][idx] = pooled.cpu().numpy()
        if sub_out is not None:
            # pads may use an id past the table (weight 0 there anyway): clamp to stay in range
            rows = table[input_ids.clamp(max=table.shape[0] - 1).to(table.device)].float()  # [B, T, n_embed]
            pooled = torch.bmm(weights.to(rows.device).unsqueeze(1), rows).squeeze(1)
            sub_out[idx] = pooled.cpu().numpy()
        del out, hs
        if progress is not None:
            progress(min(b0 + batch_size, n), n)

    names = [str(k) for k in keep]
    arrays = list(outs)
    if sub_out is not None:
        names.insert(0, SUBSTRATE)
        arrays.insert(0, sub_out)
    cfg = getattr(model, "config", None)
    meta = {
        "model_class": type(model).__name__,
        "n_hidden_states": n_hidden,
        "n_layer": n_hidden - 1,
        "hidden_size": int(outs[-1].shape[1]),
        "substrate_width": int(sub_out.shape[1]) if sub_out is not None else None,
        "substrate_kind": getattr(cfg, "substrate_kind", None),
        "substrate_frozen": getattr(cfg, "substrate_frozen", None),
        "max_length": max_len,
    }
    return Representations(names, arrays, valid, n_tokens, meta)
