"""Generation for substrate-lm models: the published call form, context cropping, exact fast greedy.

A sibling of ``modeling_substrate.py``, exported with it by ``save_pretrained`` and loaded with
``trust_remote_code=True``; it imports only torch and transformers.

* The family samples by default, and ``generate(ids, n)`` (the papers' evaluation code) takes ``n``
  as ``max_new_tokens``.
* Generation crops to the context as nanoGPT does: a prompt longer than ``block_size`` keeps its
  last ``block_size`` tokens, and once the KV cache is full the oldest entries slide out of it (RoPE
  scores depend only on relative positions, so positions keep counting up).
* Plain greedy searches run in a lean loop that gives HF's tokens exactly; on a CPU the argmax is
  screened by an int8 copy of the head (:class:`HeadScreen`) and decided by the fp32 head.

Shape legend: B batch, T prompt length, V vocab, C = d_model.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig


# ----------------------------------------------------------------------------------------------
# generation past the context: crop long prompts, slide the KV cache


def _cache_layers(cache, n_layer: int):
    """The cache layers a model with ``n_layer`` blocks uses (through an expert view), or None."""
    base, offset = cache, 0
    own = getattr(cache, "__dict__", {})
    if "offset" in own and "cache" in own:
        base, offset = own["cache"], own["offset"]  # a composed model's per-expert view
    layers = getattr(base, "layers", None)
    if layers is None or len(layers) < offset + n_layer:
        return None
    return list(layers[offset : offset + n_layer])


def cache_dropped(cache, n_layer: int) -> int:
    """Tokens slid out of the cache so far (the absolute position of its first entry)."""
    layers = _cache_layers(cache, n_layer) if cache is not None else None
    return int(getattr(layers[0], "substrate_dropped", 0)) if layers else 0


def slide_cache(cache, keep: int, n_layer: int) -> bool:
    """Keep only the newest ``keep`` entries of every layer of a dynamic cache; False if impossible."""
    from transformers.cache_utils import DynamicLayer

    layers = _cache_layers(cache, n_layer)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    for layer in layers:
        keys = getattr(layer, "keys", None)
        if keys is None or keys.dim() < 2:
            return False
        drop = keys.shape[-2] - keep
        if drop > 0:
            layer.keys = layer.keys[..., drop:, :]
            layer.values = layer.values[..., drop:, :]
            layer.substrate_dropped = int(getattr(layer, "substrate_dropped", 0)) + drop
    return True


def crop_generation_inputs(inputs: dict, block_size: int) -> dict:
    """``prepare_inputs_for_generation`` output cropped to the last ``block_size`` tokens (nanoGPT)."""
    key = "input_ids" if inputs.get("input_ids") is not None else "inputs_embeds"
    x = inputs.get(key)
    if x is None or x.shape[1] <= block_size:
        return inputs
    cache = inputs.get("cache")
    past = cache.get_seq_length() if cache is not None else 0
    inputs[key] = x[:, -block_size:]
    pos = inputs.get("position_ids")
    if pos is not None:
        inputs["position_ids"] = pos[..., -block_size:]
    mask = inputs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        # the columns of the cache (kept whole here, slid in forward) and of the kept tokens
        inputs["attention_mask"] = torch.cat([mask[:, :past], mask[:, -block_size:]], dim=1) if past else mask[:, -block_size:]
    return inputs


# ----------------------------------------------------------------------------------------------
# exact greedy decoding on a CPU: an int8 copy of the head screens, the fp32 head decides

#: generate() keyword arguments the lean greedy loop understands; any other one takes HF's path.
FAST_GREEDY_KWARGS = frozenset({
    "attention_mask", "max_new_tokens", "min_new_tokens", "max_length", "min_length", "do_sample", "num_beams",
    "num_return_sequences", "pad_token_id", "eos_token_id", "bos_token_id", "use_cache", "temperature", "top_k",
    "top_p", "min_p", "typical_p", "streamer",
})
#: generation-config fields the loop handles or a greedy search ignores (sampling knobs); every other
#: field must hold its transformers default, else generate() takes HF's path.
_FAST_GREEDY_FIELDS = FAST_GREEDY_KWARGS - {"attention_mask", "streamer"} | {
    "decoder_start_token_id", "epsilon_cutoff", "eta_cutoff", "top_h", "transformers_version", "_from_model_config",
}


def _weight_key(w: torch.Tensor) -> tuple:
    """Identity of a weight's current values: storage, in-place version, shape, dtype, device."""
    return (w.data_ptr(), w._version, tuple(w.shape), w.dtype, w.device)


class HeadScreen:
    """Certified greedy token of ``h @ W.T`` (fp32 ``W``) that mostly reads an int8 copy of ``W``.

    At batch 1 a CPU decode step is bound by the fp32 head (V x C) matrix-vector product. This
    keeps a copy ``Wq`` of ``W`` with int8 rows and a bf16 scale per row (a quarter of the bytes;
    torch's weight-only int8 kernel; a bf16 copy where that kernel is missing) and, per row j,
    ``|W_j|`` and ``|W_j - Wq_j|``. Each step computes scores ``s = bf16(h) @ Wq.T`` (fp32
    accumulation, bf16 output) and a bound ``e_j >= |s_j - f_j|`` on their distance to the fp32
    logits ``f`` that ``lm_head`` computes (input and weight rounding by Cauchy-Schwarz, fp32
    accumulation error of both products, output rounding). Only rows with
    ``s_j + e_j >= max_k (s_k - e_k)`` can hold the maximum of ``f``; their fp32 logits are
    recomputed from the fp32 rows and the best one is accepted when it beats every other candidate
    by more than the rounding of two fp32 dot products. Otherwise (near-ties, NaN/inf, too many
    candidates) :meth:`argmax` returns None and the caller computes the full fp32 logits, so the
    token is always ``argmax(lm_head(h))`` (first index on exact ties).
    """

    def __init__(self, weight: torch.Tensor):
        w = weight.detach()
        self.key = _weight_key(weight)
        self.weight = w  # the fp32 head itself, not a copy
        self.int8 = hasattr(torch, "_weight_int8pack_mm")
        if self.int8:
            scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
            self.q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()  # (V, C)
            self.scale = scale.to(torch.bfloat16)  # (V,)
            approx = self.q.float() * self.scale.float()[:, None]
        else:  # pragma: no cover - torch builds without the int8 kernel
            self.w16 = w.to(torch.bfloat16)
            approx = self.w16.float()
        self.wn = w.norm(dim=1)  # (V,)
        self.dwn = (w - approx).norm(dim=1)  # (V,)
        self.awn = approx.norm(dim=1)  # (V,)
        # fp32 dot products of length C: |computed - exact| <= C u / (1 - C u) |h| |w|, u = 2^-24; 2x slack
        self.gamma = (w.shape[1] + 1) * 2.0**-23
        self.max_candidates = max(64, w.shape[0] // 16)

    def scores(self, h16: torch.Tensor) -> torch.Tensor:
        """(B, V) fp32 values of the bf16 scores ``bf16(h) @ Wq.T``."""
        if self.int8:
            return torch._weight_int8pack_mm(h16, self.q, self.scale).float()
        return (h16 @ self.w16.t()).float()  # pragma: no cover

    def bounds(self, h: torch.Tensor):
        """``(s, e, |h|)`` for ``h`` (B, C) fp32: scores (B, V) and bounds with ``|s - lm_head(h)| <= e``."""
        g = self.gamma
        h16 = h.to(torch.bfloat16).contiguous()
        s = self.scores(h16)  # (B, V)
        h16f = h16.float()
        nh = h.norm(dim=1, keepdim=True)  # (B, 1)
        nh16 = h16f.norm(dim=1, keepdim=True)
        dh = (h - h16f).norm(dim=1, keepdim=True)
        # s - f = rounding of s + (bf16(h).Wq_j - h.W_j) + error of f, with
        # |bf16(h).Wq_j - h.W_j| <= |bf16(h) - h| |W_j| + |bf16(h)| |Wq_j - W_j|
        # bf16 output rounding: <= 2^-8 |exact| <= 2^-7 |s| per rounding; 2^-6 allows for a second one
        # (a kernel that rounds the sum before scaling it)
        e = s.abs().mul_(2.0**-6)
        e.addcmul_(dh + g * nh, self.wn).addcmul_(nh16, self.dwn).addcmul_(g * nh16, self.awn)
        e.mul_(1 + 1e-3).add_(1e-30)  # covers the rounding of the bound itself
        return s, e, nh

    def argmax(self, h: torch.Tensor):
        """(B,) greedy tokens for ``h`` (B, C) fp32, or None when the screen cannot certify them."""
        s, e, nh = self.bounds(h)
        if not bool(torch.isfinite(s).all()):
            return None
        lo = (s - e).amax(dim=1, keepdim=True)  # (B, 1): a certified lower bound of max f per row
        cand = (s + e) >= lo  # (B, V)
        if int(cand.sum()) > self.max_candidates * h.shape[0]:
            return None
        r, c = cand.nonzero(as_tuple=True)
        f = (h[r] * self.weight[c]).sum(-1)  # fp32 logits of the candidates
        full = torch.full_like(s, float("-inf"))
        full[r, c] = f
        best = full.argmax(dim=1)  # (B,)
        fb = full.gather(1, best[:, None])[:, 0]
        slack = (2 * self.gamma * (1 + 1e-3)) * nh[r, 0] * (self.wn[best[r]] + self.wn[c])
        if not bool(((fb[r] - f > slack) | (c == best[r])).all()):
            return None  # a candidate within rounding of the best: let the fp32 head decide
        return best


def _plain_greedy_config(config, kwargs: dict):
    """The merged generation config when ``kwargs`` ask for plain greedy search, else None."""
    if not set(kwargs) <= FAST_GREEDY_KWARGS:
        return None
    gc = GenerationConfig.from_dict(config.to_dict())  # a copy, as HF's generate updates a copy
    gc.update(**{k: v for k, v in kwargs.items() if k not in ("attention_mask", "streamer")})
    if gc.do_sample or gc.num_beams not in (None, 1) or gc.num_return_sequences not in (None, 1) or not gc.use_cache:
        return None
    default, mine = GenerationConfig().to_dict(), gc.to_dict()
    for k in (set(default) | set(mine)) - _FAST_GREEDY_FIELDS:
        if mine.get(k) != default.get(k) and not (default.get(k) is None and mine.get(k) is False):
            return None  # a processor, an output option, a cache setting... HF's loop handles it
    return gc


# ----------------------------------------------------------------------------------------------
# the model side: listed before ``GenerationMixin`` in a model's bases


class SubstrateGenerationMixin:
    """HF generation with the family's conventions: sampling by default, ``generate(ids, n)``, cropping."""

    def _sample_by_default(self) -> None:
        # The published evaluation calls generate(ids, n) repeatedly and reports a spread over runs:
        # generation samples unless the caller passes do_sample=False (saved in generation_config.json).
        if self.generation_config is not None:
            self.generation_config.do_sample = True
            self.generation_config.temperature = 1.0
            self.generation_config.top_k = 0
            self.generation_config.top_p = 1.0

    def generate(self, inputs=None, generation_config=None, *args, **kwargs):
        """HF ``generate``; also accepts the published call form ``generate(input_ids, n)``.

        A plain int in the second position is taken as ``max_new_tokens`` (nanoGPT-style), as the
        papers' evaluation code calls it; everything else is passed to ``GenerationMixin.generate``
        unless :meth:`_lean_generate` answers the call.
        """
        if isinstance(generation_config, int) and not isinstance(generation_config, bool):
            if "max_new_tokens" in kwargs:
                raise TypeError("generate(ids, n) got max_new_tokens twice")
            kwargs["max_new_tokens"] = generation_config
            generation_config = None
        if generation_config is None and not args:
            out = self._lean_generate(inputs, kwargs)
            if out is not None:
                return out
        return super().generate(inputs, generation_config, *args, **kwargs)

    def _lean_generate(self, inputs, kwargs):
        """The sequences of an exact faster path for this call, or None for HF's loop (always, here)."""
        return None

    def prepare_inputs_for_generation(self, input_ids, *args, **kwargs):
        """HF's, with inputs longer than the context cropped to their last ``block_size`` tokens."""
        inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        return crop_generation_inputs(inputs, self.config.block_size)


class GreedyDecodingMixin(SubstrateGenerationMixin):
    """Plain greedy searches (``do_sample=False``) in a lean loop with HF's tokens exactly.

    The loop runs the model's ``_trunk`` (embedding, blocks, final norm: the same forward as HF's
    loop step by step) and takes the same fp32 argmax of ``lm_head``, screened by an int8 copy of
    the head on CPUs (:class:`HeadScreen`).
    """

    #: ``generate`` runs plain greedy searches (no sampling, beams or logits processors; prompt + new
    #: tokens within the context; a streamer is fed as HF feeds it) in a lean loop that gives HF's
    #: tokens exactly; False always uses HF's loop.
    fast_greedy = True
    #: heads of at least this many weights (fp32, CPU) are screened by an int8 copy (:class:`HeadScreen`)
    screen_min_head = 1 << 20

    def _lean_generate(self, inputs, kwargs):
        """The lean greedy loop's sequences when ``fast_greedy`` and the call allow it, else None."""
        plan = self._fast_greedy_plan(inputs, kwargs) if self.fast_greedy else None
        return None if plan is None else self._greedy_decode(*plan)

    def _fast_greedy_plan(self, inputs, kwargs):
        """``(ids, mask, new_tokens, eos, pad, streamer)`` for the lean loop, or None to take HF's path."""
        if self.training or not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or inputs.numel() == 0:
            return None
        if self.generation_config is None:
            return None
        if inputs.dtype != torch.long or inputs.device != self.lm_head.weight.device:
            return None
        gc = _plain_greedy_config(self.generation_config, kwargs)
        if gc is None:
            return None
        B, T = inputs.shape
        new = gc.max_new_tokens if gc.max_new_tokens is not None else (gc.max_length or 0) - T
        if not isinstance(new, int) or new <= 0 or T + new > self.config.block_size:
            return None
        eos = gc.eos_token_id
        eos = None if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if eos is not None and not all(isinstance(t, int) for t in eos):
            return None
        if eos is not None and ((gc.min_length or 0) > 0 or (gc.min_new_tokens or 0) > 0):
            return None  # HF suppresses EOS until then
        pad = gc.pad_token_id if gc.pad_token_id is not None else (eos[0] if eos else None)
        mask = kwargs.get("attention_mask")
        if mask is None:
            if pad is not None and bool((inputs == pad).any()):
                return None  # HF would infer a mask from the pad token
        elif not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (B, T) or mask.device != inputs.device:
            return None
        eos_t = None if eos is None else torch.tensor(eos, dtype=torch.long, device=inputs.device)
        return inputs, mask, new, eos_t, pad, kwargs.get("streamer")

    def _greedy_tokens(self, h):
        """argmax of ``lm_head(h)`` for ``h`` (B, 1, C), screened by an int8 head copy where that pays."""
        w = self.lm_head.weight
        dev = w.device.type
        if (dev == "cpu" and w.dtype == torch.float32 and h.dtype == torch.float32 and w.numel() >= self.screen_min_head
                and not torch.is_autocast_enabled(dev)):
            screen = self.__dict__.get("_head_screen")
            if screen is None or screen.key != _weight_key(w):
                screen = self.__dict__["_head_screen"] = HeadScreen(w)
            tok = screen.argmax(h[:, -1])
            if tok is not None:
                return tok
        elif self.__dict__.get("_head_screen") is not None and self.__dict__["_head_screen"].key != _weight_key(w):
            del self.__dict__["_head_screen"]  # e.g. moved to a GPU: free the CPU head the screen holds
        return self.lm_head(h)[:, -1].float().argmax(dim=-1)

    @torch.no_grad()
    def _greedy_decode(self, ids, mask, new, eos, pad, streamer=None):
        """HF's greedy loop without its machinery: same inputs to ``forward`` step by step, same tokens."""
        B = ids.shape[0]
        if streamer is not None:
            streamer.put(ids.cpu())
        pos = None
        if mask is not None and not bool(mask.all()):  # left padding: HF's positions and growing mask
            pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        else:
            mask = None
        x, cache, _ = self._trunk(ids, None, mask, pos, None, True, False)
        seqs = [ids]
        unfinished = torch.ones(B, dtype=torch.bool, device=ids.device)
        for i in range(new):
            tok = self._greedy_tokens(x[:, -1:])  # (B,)
            if eos is not None:
                tok = torch.where(unfinished, tok, pad)
                unfinished &= ~torch.isin(tok, eos)
            seqs.append(tok[:, None])
            if streamer is not None:
                streamer.put(tok.cpu())
            if i == new - 1 or (eos is not None and not bool(unfinished.any())):
                break
            if pos is not None:
                mask = torch.cat([mask, mask.new_ones((B, 1))], dim=-1)
                pos = pos[:, -1:] + 1
            x, cache, _ = self._trunk(tok[:, None], None, mask, pos, cache, True, False)
        if streamer is not None:
            streamer.end()
        return torch.cat(seqs, dim=1)


__all__ = ["GreedyDecodingMixin", "HeadScreen", "SubstrateGenerationMixin", "cache_dropped", "crop_generation_inputs",
           "slide_cache"]
