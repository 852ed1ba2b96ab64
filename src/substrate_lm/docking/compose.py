"""Compose experts that share a frozen substrate into one Hugging Face causal LM.

"Growing Transformers" (Bochkov, arXiv 2507.07129): models trained separately on the *same* frozen
token-embedding table and vocabulary merge with no architectural change by averaging their logits.
:func:`compose` checks that the experts really share the substrate (vocabulary, table width, table
fingerprint, tokenizer), then builds a :class:`~substrate_lm.modeling.modeling_composed.ComposedForCausalLM`
that stores the table once and mixes the experts' logits with normalised weights.

```python
from substrate_lm.docking import compose, save_composed
model = compose(["runs/ru/model", "runs/zh/model"], weights=[0.5, 0.5])
save_composed(model, "runs/moe", tokenizer=tok)     # substrate_lm.loading.load_model_dir("runs/moe")
```

Experts load with the package's own classes (:func:`substrate_lm.loading.load_model_dir`), never
with the code inside their folders, and must have a frozen table: experts with trainable tables
share nothing to compose on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import SubstrateError
from ..export import check_out_dir, parameter_counts, save_tokenizer, tokenizer_description, write_model_dir
from ..loading import load_model_dir, load_tokenizer, read_model_config
from ..modeling import HF_FILES, SubstrateForCausalLM, substrate_fingerprint
from ..modeling.configuration_composed import ComposedConfig, expert_config_dict, normalise_weights
from ..modeling.modeling_composed import ComposedForCausalLM, FusionAdapter

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class Expert:
    """One expert as loaded for composition: the model, where it came from, its tokenizer."""

    model: Any
    name: str
    tokenizer: Any = None


def tokenizer_fingerprint(tokenizer) -> str | None:
    """``sha256:<hex>`` of the serialised Rust tokenizer (None for slow tokenizers)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return "sha256:" + hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in _TOKENIZER_FILES)


def load_expert(path: str | os.PathLike, index: int = 1, with_tokenizer: bool = True) -> Expert:
    """Load a substrate-lm model directory as an expert (plus its tokenizer when it has one).

    The folder is loaded with the package's own class (no code from the folder runs), after its
    files are checked against their recorded sha256 (see :mod:`substrate_lm.loading`).

    Raises:
        SubstrateError: not a model directory, not a substrate-lm model, a damaged or altered
            file, a table that fails its fingerprint, an unreadable tokenizer.
    """
    p = Path(path)
    try:
        model_type = read_model_config(p).get("model_type")
    except SubstrateError as exc:
        raise SubstrateError(f"expert {index} ({path}): {exc}") from None
    if model_type == "substrate_lm_composed":
        raise SubstrateError(
            f"expert {index} ({path}) is already a composed model; pass its experts' directories instead"
        )
    if model_type != "substrate_lm":
        raise SubstrateError(
            f"expert {index} ({path}) is a {model_type!r} model; experts must be substrate-lm models "
            f"(model_type 'substrate_lm') that share one frozen substrate"
        )
    try:
        model = load_model_dir(p)
    except SubstrateError as exc:
        raise SubstrateError(f"expert {index}: {exc}") from None
    tok = None
    if with_tokenizer and _has_tokenizer(p):
        try:
            tok = load_tokenizer(p)
        except SubstrateError as exc:
            raise SubstrateError(f"expert {index} ({path}): cannot load its tokenizer: {exc}") from None
    return Expert(model=model.eval(), name=str(path), tokenizer=tok)


def _as_expert(obj, index: int) -> Expert:
    if isinstance(obj, Expert):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return load_expert(obj, index)
    if isinstance(obj, tuple) and len(obj) == 2:  # (model, tokenizer)
        return Expert(model=obj[0], name=getattr(obj[0].config, "_name_or_path", "") or f"expert {index}", tokenizer=obj[1])
    cfg = getattr(obj, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "substrate_lm":
        raise SubstrateError(
            f"expert {index} is a {type(obj).__name__}; experts must be substrate-lm models (or their directories)"
        )
    return Expert(model=obj, name=getattr(cfg, "_name_or_path", "") or f"expert {index}")


def check_experts(experts: Sequence[Expert]) -> dict:
    """Refuse experts that do not share the substrate; one line says exactly what differs.

    Compares, against expert 1: vocab_size, the table width n_embed, the fingerprint of the actual
    table (and each table against the fingerprint its config records), and the tokenizers when
    more than one expert has one.

    Returns:
        ``{"fingerprint", "tokenizer_fingerprint", "vocab_size", "n_embed"}`` of the shared substrate.

    Raises:
        SubstrateError: fewer than two experts, or any mismatch.
    """
    if len(experts) < 2:
        raise SubstrateError(f"composition needs at least two experts, got {len(experts)}; pass --expert DIR twice or more")
    prints = []
    for i, e in enumerate(experts, start=1):
        table = getattr(e.model, "token_embeddings", None)
        if table is None:
            raise SubstrateError(f"expert {i} ({e.name}) has no token_embeddings table")
        if not e.model.config.substrate_frozen:
            raise SubstrateError(
                f"expert {i} ({e.name}) has a trainable ({e.model.config.substrate_kind}) token table; composition "
                f"needs experts trained on one shared frozen substrate, and trained tables differ per expert"
            )
        fp = substrate_fingerprint(table.weight)
        recorded = e.model.config.substrate_fingerprint
        if recorded and recorded != fp:
            raise SubstrateError(
                f"expert {i} ({e.name}) table fingerprint {fp[:19]}.. does not match its config's "
                f"{recorded[:19]}..; the expert's table was changed after its substrate was installed"
            )
        prints.append(fp)
    first = experts[0].model.config
    for i, e in enumerate(experts[1:], start=2):
        c = e.model.config
        if c.vocab_size != first.vocab_size:
            raise SubstrateError(
                f"expert {i} vocab_size {c.vocab_size} differs from expert 1 vocab_size {first.vocab_size}; "
                f"experts must share the vocabulary"
            )
        if c.n_embed != first.n_embed:
            raise SubstrateError(
                f"expert {i} substrate width n_embed {c.n_embed} differs from expert 1 n_embed {first.n_embed}; "
                f"experts must share the frozen substrate"
            )
        if prints[i - 1] != prints[0]:
            raise SubstrateError(
                f"expert {i} substrate fingerprint {prints[i - 1][:19]}.. differs from expert 1 "
                f"{prints[0][:19]}..; experts must share the frozen substrate"
            )
    tok_prints = [(i, tokenizer_fingerprint(e.tokenizer)) for i, e in enumerate(experts, start=1) if e.tokenizer is not None]
    for i, tp in tok_prints[1:]:
        j, ref = tok_prints[0]
        if tp != ref:
            raise SubstrateError(
                f"expert {i} tokenizer {str(tp)[:19]}.. differs from expert {j} tokenizer {str(ref)[:19]}..; "
                f"experts must share the tokenizer"
            )
    for i, e in enumerate(experts, start=1):
        if e.tokenizer is not None and len(e.tokenizer) != first.vocab_size:
            raise SubstrateError(
                f"expert {i} tokenizer has {len(e.tokenizer)} tokens but the models' vocab_size is {first.vocab_size}"
            )
    return {
        "fingerprint": prints[0],
        "tokenizer_fingerprint": tok_prints[0][1] if tok_prints else None,
        "vocab_size": first.vocab_size,
        "n_embed": first.n_embed,
    }


def compose(
    experts: Sequence[Any],
    weights: Sequence[float] | None = None,
    fusion: str = "mean",
    adapter_hidden: int = 0,
    return_tokenizer: bool = False,
):
    """Build a composed model from experts sharing one substrate.

    Args:
        experts: model directories, substrate-lm models, ``(model, tokenizer)`` pairs or
            :class:`Expert` objects. Their weights are copied: the composed model owns its tensors.
        weights: one non-negative weight per expert (normalised to sum 1); default equal.
        fusion: ``"mean"`` (fixed weights) or ``"adapter"`` (a trainable per-position gate that
            starts at the fixed weights; train it with :func:`substrate_lm.docking.train_fusion`).
        adapter_hidden: 0 for a linear adapter, else the width of an MLP adapter.
        return_tokenizer: also return the shared tokenizer (None when no expert has one).

    Returns:
        A :class:`ComposedForCausalLM` in eval mode (or ``(model, tokenizer)``).

    Raises:
        SubstrateError: the experts do not share vocabulary / table / tokenizer, bad weights.
    """
    loaded = [_as_expert(e, i) for i, e in enumerate(experts, start=1)]
    shared = check_experts(loaded)
    try:
        w = normalise_weights(weights, len(loaded))
    except ValueError as exc:
        raise SubstrateError(f"weights: {exc}") from None
    try:
        cfg = ComposedConfig(
            experts=[expert_config_dict(e.model.config) for e in loaded],
            weights=w,
            fusion=fusion,
            adapter_hidden=int(adapter_hidden),
            expert_names=[e.name for e in loaded],
        )
    except ValueError as exc:  # e.g. a negative adapter width or an unknown fusion
        raise SubstrateError(str(exc).splitlines()[0]) from None
    cfg.substrate_fingerprint = shared["fingerprint"]
    # build on the meta device (no init cost, no second copy) and take over clones of the weights
    with torch.device("meta"):
        model = ComposedForCausalLM(cfg)
    state = {"token_embeddings.weight": loaded[0].model.token_embeddings.weight.detach().clone()}
    for i, e in enumerate(loaded):
        for k, v in e.model.state_dict().items():
            if not k.startswith("token_embeddings."):
                state[f"experts.{i}.{k}"] = v.detach().clone()
    if model.adapter is not None:
        fresh = _fresh_adapter(cfg)
        state.update({f"adapter.{k}": v for k, v in fresh.state_dict().items()})
    model.load_state_dict(state, strict=True, assign=True)
    model.token_embeddings.weight.requires_grad_(not cfg.substrate_frozen)
    model.verify_substrate()
    model.eval()
    tok = next((e.tokenizer for e in loaded if e.tokenizer is not None), None)
    if tok is not None:
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tok, attr, None) is not None:
                setattr(model.config, attr, getattr(tok, attr))
                setattr(model.generation_config, attr, getattr(tok, attr))
    return (model, tok) if return_tokenizer else model


def _fresh_adapter(cfg):
    """An adapter initialised as the composed model initialises it (output layer at zero)."""
    in_features = sum(int(d["d_model"]) for d in cfg.experts)
    adapter = FusionAdapter(in_features, cfg.n_experts, cfg.adapter_hidden)
    std = cfg.initializer_range
    for m in adapter.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=std)
            torch.nn.init.zeros_(m.bias)
    torch.nn.init.zeros_(adapter.out.weight)
    return adapter


def with_adapter(model, adapter_hidden: int = 0):
    """A copy of a composed model with fusion ``"adapter"`` (a fresh gate at the current weights)."""
    d = model.config.to_dict()
    d.update(fusion="adapter", adapter_hidden=int(adapter_hidden))
    cfg = type(model.config).from_dict(d)
    with torch.device("meta"):
        new = ComposedForCausalLM(cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("adapter.")}
    state.update({f"adapter.{k}": v for k, v in _fresh_adapter(cfg).state_dict().items()})
    new.load_state_dict(state, strict=True, assign=True)
    new.token_embeddings.weight.requires_grad_(not cfg.substrate_frozen)
    new.generation_config = model.generation_config
    return new.eval()


def expert_model(model, i: int):
    """Expert ``i`` (0-based) of a composed model as a standalone :class:`SubstrateForCausalLM`."""
    cfg = model.config.expert_config(i)
    with torch.device("meta"):
        out = SubstrateForCausalLM(cfg)
    state = {k: v.detach().clone() for k, v in model.experts[i].state_dict().items()}
    state["token_embeddings.weight"] = model.token_embeddings.weight.detach().clone()
    out.load_state_dict(state, strict=True, assign=True)
    out.token_embeddings.weight.requires_grad_(not cfg.substrate_frozen)
    return out.eval()


def composed_card(model, name: str, tokenizer=None) -> str:
    """A model card for a composed directory: the experts, the weights, the shared substrate."""
    c = model.config
    counts = parameter_counts(model)
    rows = []
    for i, (d, w) in enumerate(zip(c.experts, c.weights)):
        src = (c.expert_names or [""] * c.n_experts)[i]
        rows.append(f"| {i + 1} | {src} | {d['n_layer']} | {d['d_model']} | {d['n_head']} | {w:.4f} |")
    fusion = (
        "weighted mean of the experts' logits (parameter-free)"
        if c.fusion == "mean"
        else f"adapter gate on the concatenated final hidden states ({'linear' if not c.adapter_hidden else f'MLP {c.adapter_hidden}'}), "
        "per-position weights softmax(adapter(h) + log w)"
    )
    return "\n".join([
        "---",
        "library_name: transformers",
        "tags: [substrate-lm, custom_code, frozen-embeddings, mixture-of-experts]",
        "---",
        f"# {name}",
        "",
        "A composition of substrate-lm experts that share one frozen token-embedding substrate, after",
        "A. Bochkov, *Growing Transformers* (arXiv 2507.07129): experts trained separately merge with no",
        "architectural change because their input tables are identical.",
        "",
        f"- Fusion: {fusion}",
        f"- Shared substrate: kind `{c.substrate_kind}`, n_embed {c.n_embed}, vocab {c.vocab_size:,}, "
        f"fingerprint `{c.substrate_fingerprint}` (stored once)",
        f"- Tokenizer: {tokenizer_description(tokenizer)}",
        f"- Parameters: total {counts['total']:,}, trainable {counts['trainable']:,}",
        "",
        "| expert | source | layers | d_model | heads | weight |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "## How to use (Transformers)",
        "```python",
        "from transformers import AutoTokenizer, AutoModelForCausalLM",
        f'model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)',
        "out = model.generate(ids, max_new_tokens=10, do_sample=False)   # one KV cache per expert",
        "```",
        "",
        "With substrate-lm installed, `substrate_lm.loading.load_model_dir(path)` loads it with the package's",
        "own classes (no code from the folder runs); `config.json` records the sha256 of the weight files.",
        "",
        "Research-only checkpoint; not intended for production use.",
        "",
    ])


def save_composed(model, out_dir: str | os.PathLike, tokenizer=None, name: str | None = None, overwrite: bool = True) -> Path:
    """Write a composed model (and the shared tokenizer) as a self-contained HF directory.

    The directory is assembled next to ``out_dir`` and moved into place at the end, so an
    interrupted save never leaves half a model where a good one was. A non-empty ``out_dir`` is
    replaced only with ``overwrite`` and only when it is one of our exports
    (:func:`substrate_lm.export.check_out_dir`); nothing else is ever deleted.

    Raises:
        SubstrateError: ``out_dir`` may not be replaced, the tokenizer's size differs from the
            vocabulary, or the shared frozen table fails its fingerprint.
    """
    check_out_dir(out_dir, overwrite)
    out = Path(os.path.abspath(out_dir))
    if tokenizer is not None and len(tokenizer) != model.config.vocab_size:
        raise SubstrateError(
            f"tokenizer has {len(tokenizer)} tokens but the composed model's vocab_size is {model.config.vocab_size}"
        )
    try:
        model.verify_substrate()
    except ValueError as exc:
        raise SubstrateError(str(exc).splitlines()[0]) from None

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        missing = [f for f in HF_FILES[model.config.model_type] if not (tmp / f).is_file()]
        if missing:  # pragma: no cover - guards a change in transformers' remote-code saving
            raise SubstrateError(f"save_pretrained did not copy {', '.join(missing)}; the directory would not load")
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp, model.config.block_size)
        (tmp / "README.md").write_text(composed_card(model, name or out.name, tokenizer), encoding="utf-8")

    return write_model_dir(out, write, overwrite)


def summary(model, out: Path | None = None) -> dict:
    """What ``substrate-lm compose`` prints: experts, weights, substrate, parameters."""
    c = model.config
    return {
        "out": str(out) if out is not None else None,
        "experts": [
            {"source": (c.expert_names or [None] * c.n_experts)[i], "n_layer": d["n_layer"], "d_model": d["d_model"],
             "n_head": d["n_head"], "weight": c.weights[i]}
            for i, d in enumerate(c.experts)
        ],
        "fusion": c.fusion,
        "substrate": {"kind": c.substrate_kind, "n_embed": c.n_embed, "vocab_size": c.vocab_size,
                      "fingerprint": c.substrate_fingerprint},
        "parameters": parameter_counts(model),
    }
