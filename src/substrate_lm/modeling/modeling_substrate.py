"""The substrate-lm model: a GPT-like decoder on a frozen, non-semantic token-embedding table.

Architecture of Bochkov's "Emergent Semantics" family (Model_1024_BIT and its siblings):

    ids --token_embeddings (V x n_embed, frozen unless trainable)--> repeat_interleave(scale)
        --> n_layer x [x + attn(ln_1(x)); x + mlp(ln_2(x))]      (pre-norm, RoPE, SDPA, GELU MLP)
        --> ln_f --> lm_head (untied, d_model -> V)

This file is exported next to the weights by ``save_pretrained`` and loaded with
``trust_remote_code=True``: it imports only torch, transformers, the standard library and its
sibling configuration file.

Integrity: ``save_pretrained`` records the sha256 of every weight file it wrote in ``config.json``
(``weights_sha256``) and the fingerprint of the table as saved (a trainable table's trained
fingerprint); ``from_pretrained`` refuses a folder whose weight files are missing or differ from
those hashes (bit flips, truncation) and a frozen table without a matching fingerprint.

Generation crops to the context as nanoGPT does: a prompt longer than ``block_size`` keeps its last
``block_size`` tokens, and once the KV cache is full the oldest entries slide out of it (RoPE
scores depend only on relative positions, so positions keep counting up).

Shape legend: B batch, T query length, S key length (cache + T), V vocab, C = d_model,
E = n_embed, nh heads, hs head size, N = B*T flattened rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_substrate import BINARY_SUBSTRATE_KINDS, SUBSTRATE_KINDS, SubstrateConfig


def substrate_fingerprint(weight: torch.Tensor) -> str:
    """``"sha256:<hex>"`` of a substrate table: float32, little-endian, C-contiguous bytes."""
    t = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    h = hashlib.sha256()
    # hash in row blocks so a 65,536 x 1024 table never needs a second full copy as bytes
    rows = max(1, (64 << 20) // max(1, t.shape[-1] * 4))
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    for start in range(0, flat.shape[0], rows):
        block = flat[start : start + rows].numpy()
        if block.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
            block = block.byteswap()
        h.update(block.tobytes())
    return "sha256:" + h.hexdigest()


# ----------------------------------------------------------------------------------------------
# integrity of saved folders: sha256 of every weight file, recorded in config.json

#: config.json key holding ``{file name: "sha256:<hex>"}`` of the weight files of the folder.
WEIGHTS_HASH_KEY = "weights_sha256"


def file_sha256(path) -> str:
    """``"sha256:<hex>"`` of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _is_weight_file(name: str) -> bool:
    return name.endswith((".safetensors", ".safetensors.index.json")) or (
        name.startswith("pytorch_model") and name.endswith((".bin", ".bin.index.json"))
    )


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc), else set and reset."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def record_weight_hashes(directory, config=None) -> dict:
    """Hash the weight files in ``directory`` into its ``config.json`` (atomically); returns the hashes."""
    names = sorted(n for n in os.listdir(directory) if _is_weight_file(n) and os.path.isfile(os.path.join(directory, n)))
    hashes = {n: file_sha256(os.path.join(directory, n)) for n in names}
    mask = _umask()
    for n in names:  # the safetensors writer may create 0600; give weights the permissions open() would
        os.chmod(os.path.join(directory, n), 0o666 & ~mask)
    cfg_path = os.path.join(directory, "config.json")
    with open(cfg_path, encoding="utf-8") as fh:
        data = json.load(fh)
    data[WEIGHTS_HASH_KEY] = hashes
    fd, tmp = tempfile.mkstemp(prefix=".tmp-config.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; a config is as readable as any file
        os.replace(tmp, cfg_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if config is not None:
        setattr(config, WEIGHTS_HASH_KEY, hashes)
    return hashes


def _folder_file(name_or_path, filename: str, kwargs: dict):
    """Local path of ``filename`` of a model folder or (already downloaded) hub repo; None if absent."""
    sub = kwargs.get("subfolder") or ""
    if os.path.isdir(str(name_or_path)):
        p = os.path.join(str(name_or_path), sub, filename)
        return p if os.path.isfile(p) else None
    from transformers.utils import cached_file

    return cached_file(
        str(name_or_path), filename, subfolder=sub, revision=kwargs.get("revision"),
        cache_dir=kwargs.get("cache_dir"), local_files_only=kwargs.get("local_files_only", False),
        token=kwargs.get("token"), _raise_exceptions_for_missing_entries=False,
    )


def check_weight_files(name_or_path, kwargs: dict | None = None) -> dict:
    """Refuse a folder whose weight files do not match the sha256 recorded in its config.json.

    Raises:
        ValueError: one line: config.json missing or not JSON, no hashes recorded, a listed file
            missing, or a file whose sha256 differs (corrupt, truncated or altered).
    """
    kwargs = kwargs or {}
    if name_or_path is None:  # from_pretrained(None, config=..., state_dict=...): no files to check
        return {}
    where = str(name_or_path)
    cfg_path = _folder_file(name_or_path, "config.json", kwargs)
    if cfg_path is None:
        raise ValueError(f"{where} has no config.json; it is not a model folder (export or save_pretrained one)")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where}: config.json is unreadable or truncated ({type(exc).__name__}); re-export the model") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: config.json does not hold a JSON object; re-export the model")
    hashes = data.get(WEIGHTS_HASH_KEY)
    if not hashes:
        raise ValueError(
            f"{where}: config.json records no {WEIGHTS_HASH_KEY}, so its weights cannot be checked; "
            f"re-export the model with this version of substrate-lm"
        )
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"{where}: {WEIGHTS_HASH_KEY} in config.json is malformed; re-export the model")
    if not any(n.endswith((".safetensors", ".bin")) for n in hashes):
        raise ValueError(f"{where}: {WEIGHTS_HASH_KEY} in config.json lists no weight file; re-export the model")
    for name, digest in sorted(hashes.items()):
        if not _is_weight_file(name) or name != os.path.basename(name) or name in (".", ".."):
            raise ValueError(f"{where}: {WEIGHTS_HASH_KEY} lists {name!r}, which is not a weight file name; re-export the model")
        path = _folder_file(name_or_path, name, kwargs)
        if path is None:
            raise ValueError(f"{where}: weight file {name} is missing; copy the whole folder or re-export the model")
        if file_sha256(path) != digest:
            raise ValueError(
                f"{where}: {name} does not match the sha256 recorded in config.json (corrupt, truncated "
                f"or altered); copy it again or re-export the model"
            )
    return hashes


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
# rotary position embeddings (full head dimension, GPT-NeoX "rotate_half" layout)


def rope_cos_sin(position_ids: torch.Tensor, head_size: int, theta: float, dtype: torch.dtype):
    """cos/sin tables for positions ``position_ids`` [B, T] -> two tensors [B, 1, T, hs].

    Computed on the fly (no buffers), so meta-device construction and loading need no special care.
    """
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_size, 2, device=position_ids.device, dtype=torch.float32) / head_size)
    )  # (hs/2,)
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hs)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


# ----------------------------------------------------------------------------------------------
# blocks


class SubstrateAttention(nn.Module):
    """Causal multi-head self-attention with RoPE, PyTorch SDPA and an optional KV cache."""

    def __init__(self, config: SubstrateConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_size = config.d_model // config.n_head
        self.dropout = float(config.dropout)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.proj.is_residual_proj = True

    def forward(self, x, cos, sin, mask=None, cache: Cache | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_size).unbind(dim=2)  # 3 x (B, T, nh, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs)
        dropout_p = self.dropout if self.training else 0.0
        if mask is None:
            # no padding and either no past (plain causal) or a single new token (sees everything)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class SubstrateMLP(nn.Module):
    def __init__(self, config: SubstrateConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=config.bias)
        self.proj.is_residual_proj = True

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))  # exact (erf) GELU


class SubstrateBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: SubstrateConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.attn = SubstrateAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.mlp = SubstrateMLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask=None, cache=None):
        x = x + self.drop(self.attn(self.ln_1(x), cos, sin, mask, cache))
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x


# ----------------------------------------------------------------------------------------------
# memory-saving loss: the output projection and cross-entropy fused and computed in row chunks


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean CE of ``h @ W.T`` against ``targets`` without materialising the [N, V] logits.

    The forward pass walks ``chunk`` rows at a time, computes the loss and, when gradients are
    needed, the gradients of ``h`` and ``W`` for that chunk (softmax - onehot), so peak extra memory
    is one [chunk, V] block instead of the full [N, V] fp32 logits, their log-softmax and gradient.
    One fused softmax pass per chunk replaces the separate log-softmax / NLL / backward passes.

    Under autocast the matmuls and the softmax run in the autocast dtype (softmax accumulates in
    fp32 internally); the softmax output is rounded to that dtype before it feeds the gradient
    matmuls, exactly as autocast rounds the fp32 logits gradient. The loss is ``-log p_target``;
    under bf16 it carries the ~2^-9 relative rounding of p, far below the rounding of the bf16
    logits themselves. Target probabilities below fp32's smallest normal (loss > 87.3) are clamped.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk: int, ignore_index: int):
        dev = h.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        tiny = torch.finfo(torch.float32).tiny
        with torch.autocast(dev, enabled=False):
            # branch-free masking (no data-dependent Python control flow, so torch.compile traces
            # it in one graph): ignored rows get target 0, and their nll and gradients are zeroed on
            # the cheap (c,) and (c, C) sides, never on the (c, V) probabilities
            valid = targets != ignore_index  # (N,)
            n_valid = valid.sum().clamp(min=1).to(torch.float32)
            w_c = weight.to(cdt)  # (V, C)
            grad_h = torch.empty_like(h) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, h.shape[0], chunk):
                hc = h[s : s + chunk].to(cdt)  # (c, C)
                vc = valid[s : s + chunk]
                tc = torch.where(vc, targets[s : s + chunk], 0)
                probs = torch.softmax(hc @ w_c.t(), dim=-1)  # (c, V) in cdt
                rows = torch.arange(probs.shape[0], device=probs.device)
                nll = -torch.log(probs[rows, tc].float().clamp_min(tiny))  # (c,)
                loss += (nll * vc).sum()
                if need_h or need_w:
                    probs[rows, tc] -= 1  # d(sum of nll)/d(logits) = softmax - onehot
                    keep = vc[:, None].to(cdt)  # (c, 1)
                    if need_h:
                        grad_h[s : s + chunk] = ((probs @ w_c) * keep).to(h.dtype)
                    if need_w:
                        if cdt == torch.float32:
                            grad_w.addmm_(probs.t(), hc * keep)
                        else:
                            grad_w += (probs.t() @ (hc * keep)).float()
            if need_h:
                grad_h.div_(n_valid.to(h.dtype))
            if need_w:
                grad_w = grad_w.div_(n_valid).to(weight.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def chunked_cross_entropy(hidden, weight, targets, chunk=4096, ignore_index=-100):
    """Mean next-token CE of ``hidden [N, C] @ weight.T [C, V]`` vs ``targets [N]`` in row chunks."""
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, int(chunk), int(ignore_index))


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


def _check_table(weight: torch.Tensor, recorded: str, kind: str, fix: str) -> None:
    """Raise ValueError when ``weight`` does not match ``recorded`` or a binary kind holds non-0/1."""
    actual = substrate_fingerprint(weight)
    if actual != recorded:
        raise ValueError(
            f"token_embeddings do not match the substrate fingerprint in config.json "
            f"(recorded {recorded[:23]}..., found {actual[:23]}...); the weights or the config were "
            f"altered: {fix}"
        )
    if kind in BINARY_SUBSTRATE_KINDS:
        if not bool(((weight == 0) | (weight == 1)).all()):
            raise ValueError(f"substrate kind {kind!r} must hold only 0/1 values")


def _record_fingerprint(config, embeddings) -> None:
    """Before saving: a trainable table's fingerprint is the table's now; a frozen one gets one if absent."""
    if embeddings is None or getattr(embeddings, "weight", None) is None or embeddings.weight.device.type == "meta":
        return
    if not config.substrate_frozen or not config.substrate_fingerprint:
        config.substrate_fingerprint = substrate_fingerprint(embeddings.weight)


def _check_loaded_table(model) -> None:
    """After loading: the fingerprint is required for a frozen table and checked for any table."""
    c = model.config
    if c.substrate_frozen:
        model.verify_substrate()
    elif c.substrate_fingerprint:  # a trainable table saved by save_pretrained records the trained one
        _check_table(model.token_embeddings.weight, c.substrate_fingerprint, c.substrate_kind, "re-export the model")


# ----------------------------------------------------------------------------------------------
# the model


class CheckedWeightsMixin:
    """``save_pretrained`` / ``from_pretrained`` with the table's fingerprint and weight hashes.

    Shared by the plain and the composed model (listed before ``PreTrainedModel`` in their bases);
    each defines ``verify_substrate``.
    """

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, then the table's fingerprint and weight hashes recorded.

        A trainable table's fingerprint is that of the table as saved (the trained one); a frozen
        table gets one if none was recorded. ``config.json`` then records the sha256 of every
        weight file written, which ``from_pretrained`` checks.
        """
        if kwargs.get("push_to_hub"):
            raise ValueError("push_to_hub would upload before the weight hashes are recorded; save, then upload the folder")
        _record_fingerprint(self.config, self.token_embeddings)
        self.verify_substrate()  # never write a folder that loading would refuse
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            record_weight_hashes(save_directory, self.config)
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` after checking the weight files against their sha256.

        Raises:
            ValueError: one line: a weight file missing or altered, no fingerprint for a frozen
                table, or a table that does not match its fingerprint.
        """
        check_weight_files(pretrained_model_name_or_path, kwargs)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        # loading replaces parameters, which resets requires_grad: freeze the substrate again
        model.token_embeddings.weight.requires_grad_(not model.config.substrate_frozen)
        _check_loaded_table(model)
        return loaded


class SubstratePreTrainedModel(PreTrainedModel):
    config_class = SubstrateConfig
    config: SubstrateConfig
    base_model_prefix = "substrate"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SubstrateBlock"]
    _supports_sdpa = True
    _can_compile_fullgraph = False
    _supports_attention_backend = False

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_residual_proj", False):
                # GPT-2: projections into the residual stream scaled by 1/sqrt(2 * n_layer)
                std = std / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # a trainable baseline table starts as N(0, std); frozen kinds are overwritten by
            # set_substrate (until then the table is a random float stand-in)
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class SubstrateForCausalLM(CheckedWeightsMixin, SubstratePreTrainedModel, GenerationMixin):
    """GPT-like causal LM whose input table ``token_embeddings`` is a (frozen) substrate."""

    def __init__(self, config: SubstrateConfig):
        super().__init__(config)
        self.token_embeddings = nn.Embedding(config.vocab_size, config.n_embed)
        self.blocks = nn.ModuleList(SubstrateBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        self.token_embeddings.weight.requires_grad_(not config.substrate_frozen)
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
        papers' evaluation code calls it; everything else is passed to ``GenerationMixin.generate``.
        Plain greedy searches (``do_sample=False``, see ``fast_greedy``) run in a lean loop with the
        same tokens, the argmax screened by an int8 copy of the head on CPUs (:class:`HeadScreen`).
        """
        if isinstance(generation_config, int) and not isinstance(generation_config, bool):
            if "max_new_tokens" in kwargs:
                raise TypeError("generate(ids, n) got max_new_tokens twice")
            kwargs["max_new_tokens"] = generation_config
            generation_config = None
        if self.fast_greedy and generation_config is None and not args:
            plan = self._fast_greedy_plan(inputs, kwargs)
            if plan is not None:
                return self._greedy_decode(*plan)
        return super().generate(inputs, generation_config, *args, **kwargs)

    # -- lean greedy decoding (exact: the same forward and the same fp32 argmax as HF's loop) -------
    #: ``generate`` runs plain greedy searches (no sampling, beams or logits processors; prompt + new
    #: tokens within the context; a streamer is fed as HF feeds it) in a lean loop that gives HF's
    #: tokens exactly; False always uses HF's loop.
    fast_greedy = True
    #: heads of at least this many weights (fp32, CPU) are screened by an int8 copy (:class:`HeadScreen`)
    screen_min_head = 1 << 20

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

    # -- HF plumbing -----------------------------------------------------------------------------
    def get_input_embeddings(self):
        return self.token_embeddings

    def set_input_embeddings(self, value):
        self.token_embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    # -- substrate -------------------------------------------------------------------------------
    @torch.no_grad()
    def set_substrate(self, table: torch.Tensor, kind: str | None = None, frozen: bool | None = None, meta=None):
        """Install a [vocab_size, n_embed] table; record its kind and fingerprint in the config."""
        table = torch.as_tensor(table)
        expected = (self.config.vocab_size, self.config.n_embed)
        if tuple(table.shape) != expected:
            raise ValueError(
                f"substrate table has shape {tuple(table.shape)} but the model expects {expected} "
                f"(vocab_size, n_embed); build the substrate for this vocabulary and width"
            )
        kind = kind or self.config.substrate_kind
        frozen = (kind != "trainable") if frozen is None else bool(frozen)
        if kind not in SUBSTRATE_KINDS:
            raise ValueError(f"unknown substrate kind {kind!r}; choose one of {', '.join(SUBSTRATE_KINDS)}")
        self.token_embeddings.weight.copy_(table.to(self.token_embeddings.weight.dtype))
        self.token_embeddings.weight.requires_grad_(not frozen)
        self.config.substrate_kind = kind
        self.config.substrate_frozen = frozen
        self.config.substrate_fingerprint = substrate_fingerprint(self.token_embeddings.weight)
        if meta is not None:
            self.config.substrate_meta = dict(meta)
        return self.config.substrate_fingerprint

    def verify_substrate(self) -> None:
        """Raise ValueError when a frozen table has no fingerprint or does not match it.

        A trainable table is meant to drift during training, so it is not checked here; its
        fingerprint is re-recorded by ``save_pretrained`` and checked by ``from_pretrained``.
        """
        if not self.config.substrate_frozen:
            return
        recorded = self.config.substrate_fingerprint
        if not recorded:
            raise ValueError(
                "config.json records no substrate_fingerprint for the frozen token_embeddings table, so the "
                "table cannot be verified; install the substrate with set_substrate or re-export the model"
            )
        _check_table(self.token_embeddings.weight, recorded, self.config.substrate_kind, "re-export the model")

    def prepare_inputs_for_generation(self, input_ids, *args, **kwargs):
        """HF's, with inputs longer than the context cropped to their last ``block_size`` tokens."""
        inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        return crop_generation_inputs(inputs, self.config.block_size)

    # -- forward ---------------------------------------------------------------------------------
    def _attention_mask(self, attention_mask, B, T, past, device):
        """Boolean SDPA mask (B, 1, T, S) or None when plain causal attention suffices."""
        S = past + T
        if attention_mask is not None and attention_mask.dim() == 4:
            return attention_mask  # a prepared 4-D mask is used as given
        if attention_mask is not None:
            attention_mask = attention_mask[:, -S:]  # the columns of the cache that is left, and of x
        pad = attention_mask is not None and not bool(attention_mask.all())
        if not pad and (past == 0 or T == 1):
            return None
        q_pos = torch.arange(past, S, device=device)[:, None]  # (T, 1)
        k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
        if pad:
            mask = mask & attention_mask[:, None, None, :].bool()  # (B, 1, T, S)
        # a left-pad query sees no key at all; let it see everything to keep SDPA finite
        return mask | ~mask.any(dim=-1, keepdim=True)

    def _trunk(self, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache, output_hidden_states):
        """Embedding, blocks and final norm: ``(x (B, T, C) after ln_f, cache, hidden states or None)``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            x = self.token_embeddings(input_ids)  # (B, T, E)
            if self.config.scale > 1:
                x = x.repeat_interleave(self.config.scale, dim=-1)  # (B, T, C), non-trainable widening
        else:
            x = inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        block = self.config.block_size
        if past + T > block:
            # past the context with a cache (generation): the oldest cache entries slide out
            if past == 0 or T > block or not slide_cache(cache, block - T, self.config.n_layer):
                raise ValueError(
                    f"sequence of {past + T} tokens exceeds the context length block_size={block}; "
                    f"generate() crops to the context, a forward pass does not"
                )
            past = block - T
        if position_ids is None:
            start = past + cache_dropped(cache, self.config.n_layer)
            position_ids = torch.arange(start, start + T, device=x.device)[None].expand(B, T)
        cos, sin = rope_cos_sin(position_ids, self.config.head_size, self.config.rope_theta, x.dtype)
        mask = self._attention_mask(attention_mask, B, T, past, x.device)

        hidden_states = [x] if output_hidden_states else None
        for blk in self.blocks:
            x = blk(x, cos, sin, mask=mask, cache=cache)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.ln_f(x)  # (B, T, C)
        if output_hidden_states:
            hidden_states[-1] = x  # HF convention: the last entry is after the final norm
        return x, cache, hidden_states

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        targets: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_logits: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Run the model.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, S) with 1 for real tokens and 0 for (left) padding; S = past + T.
            position_ids: (B, T) RoPE positions; default ``past .. past+T-1``. ``generate`` derives
                them from the attention mask, so left padding does not shift positions.
            cache: a transformers ``Cache`` (``past_key_values`` is accepted too).
            labels: HF convention, shifted inside: position t is scored against ``labels[t+1]``.
            targets: nanoGPT convention, already aligned: position t is scored against ``targets[t]``.
            logits_to_keep: keep only the last k positions' logits (0 keeps all), or given indices.
            return_logits: False computes the loss with the chunked, memory-saving path and returns
                ``logits=None``.
        """
        if cache is None and "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x, cache, hidden_states = self._trunk(
            input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache, output_hidden_states
        )

        if targets is not None:  # aligned already: position t is scored against targets[t]
            scored_h, aligned = x, targets
        elif labels is not None:  # HF: drop the last position, score against labels[t+1]
            scored_h, aligned = x[:, :-1], labels[:, 1:]
        else:
            scored_h = aligned = None

        loss = logits = None
        if aligned is not None and not return_logits:
            loss = chunked_cross_entropy(
                scored_h.reshape(-1, scored_h.shape[-1]),
                self.lm_head.weight,
                aligned.reshape(-1),
                chunk=self.config.loss_chunk_size,
            )
        else:
            if aligned is not None and not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
                raise ValueError("a loss needs the logits of every position: leave logits_to_keep at 0")
            if isinstance(logits_to_keep, int):
                h = x[:, -logits_to_keep:] if logits_to_keep > 0 else x
            else:
                h = x[:, logits_to_keep]
            logits = self.lm_head(h)  # (B, T', V)
            if aligned is not None:
                scored = logits if targets is not None else logits[:, :-1]
                loss = F.cross_entropy(
                    scored.float().reshape(-1, scored.shape[-1]), aligned.reshape(-1), ignore_index=-100
                )

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )


__all__ = ["SubstrateForCausalLM", "SubstratePreTrainedModel", "HeadScreen", "CheckedWeightsMixin", "substrate_fingerprint", "chunked_cross_entropy",
           "WEIGHTS_HASH_KEY", "check_weight_files", "record_weight_hashes", "file_sha256"]
