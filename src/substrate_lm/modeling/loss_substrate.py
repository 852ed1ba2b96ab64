"""The loss of substrate-lm models: next-token cross-entropy, from logits or chunked from hidden states.

A sibling of ``modeling_substrate.py``, exported with it by ``save_pretrained`` and loaded with
``trust_remote_code=True``; it imports only torch. The plain and the composed model both score
their outputs here, so the two conventions for targets and the two ways of computing the loss are
written once:

* ``labels`` (HF): shifted inside, position t is scored against ``labels[t+1]``;
* ``targets`` (nanoGPT): already aligned, position t is scored against ``targets[t]``;
* from logits (B, T, V), or fused with the output projection in row chunks from hidden states
  (B, T, C) and the head's weight (V, C), never materialising the logits.

Shape legend: B batch, T positions, T' kept positions, V vocab, C hidden width, N = B*T rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: the target value that scores nothing (HF's and PyTorch's convention)
IGNORE_INDEX = -100


def keep_positions(x: torch.Tensor, logits_to_keep) -> torch.Tensor:
    """The positions of ``x`` (B, T, ...) to compute logits for: the last k (0 keeps all) or given indices."""
    if isinstance(logits_to_keep, int):
        return x[:, -logits_to_keep:] if logits_to_keep > 0 else x
    return x[:, logits_to_keep]


def wants_loss(labels, targets, logits_to_keep=0) -> bool:
    """Whether a forward pass scores a loss; a loss needs every position (``logits_to_keep`` 0)."""
    if labels is None and targets is None:
        return False
    if not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        raise ValueError("a loss needs the logits of every position: leave logits_to_keep at 0")
    return True


def causal_lm_loss(scores: torch.Tensor, labels=None, targets=None, head_weight=None, chunk: int = 4096):
    """Mean next-token cross-entropy of every position against ``targets`` (aligned) or ``labels`` (shifted).

    ``scores`` are logits (B, T, V), or with ``head_weight`` (V, C) the hidden states (B, T, C) that
    the head projects: then the loss is :func:`chunked_cross_entropy` and no logits are made.
    """
    if targets is not None:  # aligned already: position t is scored against targets[t]
        aligned = targets
    else:  # HF: drop the last position, score against labels[t+1]
        scores, aligned = scores[:, :-1], labels[:, 1:]
    if head_weight is not None:
        return chunked_cross_entropy(scores.reshape(-1, scores.shape[-1]), head_weight, aligned.reshape(-1), chunk)
    return F.cross_entropy(scores.float().reshape(-1, scores.shape[-1]), aligned.reshape(-1), ignore_index=IGNORE_INDEX)


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


def chunked_cross_entropy(hidden, weight, targets, chunk=4096, ignore_index=IGNORE_INDEX):
    """Mean next-token CE of ``hidden [N, C] @ weight.T [C, V]`` vs ``targets [N]`` in row chunks.

    Without gradients (``torch.no_grad`` / ``inference_mode``, or nothing that requires grad) the
    loss is :func:`_tiled_cross_entropy`; otherwise the autograd function above.
    """
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if not needs_grad and not torch.compiler.is_compiling():
        return _tiled_cross_entropy(hidden, weight, targets, int(chunk), int(ignore_index))
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, int(chunk), int(ignore_index))


#: (rows, vocabulary columns) of one logits tile of :func:`_tiled_cross_entropy` on a CPU: 8 MB fp32
CPU_TILE = (256, 8192)


@torch.no_grad()
def _tiled_cross_entropy(hidden, weight, targets, chunk: int, ignore_index: int):
    """The forward of :class:`_ChunkedLinearCrossEntropy` for evaluation (no gradients): the logits
    in tiles of :data:`CPU_TILE` with an online log-sum-exp over the vocabulary, so no [chunk, V]
    block leaves the cache (2-5x the chunked forward on a CPU with a 65k vocabulary); on other
    devices one tile is ``chunk`` rows by the whole vocabulary (few kernel launches).

    Under autocast the matmuls run in the autocast dtype and the log-sum-exp in fp32; the loss is
    exact (no clamp of tiny probabilities). Returns the mean over the scored targets (fp32).
    """
    dev = hidden.device.type
    cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
    rows, cols = CPU_TILE if dev == "cpu" else (max(1, chunk), weight.shape[0])
    f32 = torch.float32
    with torch.autocast(dev, enabled=False):
        valid = targets != ignore_index  # (N,)
        w_c = weight.to(cdt)  # (V, C)
        total = torch.zeros((), dtype=f32, device=hidden.device)
        for s in range(0, hidden.shape[0], rows):
            hc = hidden[s : s + rows].to(cdt)  # (r, C)
            vc = valid[s : s + rows]
            tc = torch.where(vc, targets[s : s + rows], 0)
            top = torch.full((hc.shape[0],), float("-inf"), dtype=f32, device=hc.device)  # running max
            acc = torch.zeros(hc.shape[0], dtype=f32, device=hc.device)  # sum of exp(logit - top)
            picked = torch.zeros(hc.shape[0], dtype=f32, device=hc.device)  # the target's logit
            for v in range(0, w_c.shape[0], cols):
                lg = (hc @ w_c[v : v + cols].t()).to(f32)  # (r, c)
                inside = (tc >= v) & (tc < v + lg.shape[1])
                at = lg.gather(1, (tc - v).clamp(0, lg.shape[1] - 1)[:, None]).squeeze(1)
                picked = torch.where(inside, at, picked)
                new_top = torch.maximum(top, lg.amax(dim=1))
                acc = acc * torch.exp(top - new_top) + lg.sub_(new_top[:, None]).exp_().sum(dim=1)
                top = new_top
            total += ((top + acc.log() - picked) * vc).sum()
        return total / valid.sum().clamp(min=1).to(f32)


__all__ = ["IGNORE_INDEX", "causal_lm_loss", "chunked_cross_entropy", "keep_positions", "wants_loss"]
