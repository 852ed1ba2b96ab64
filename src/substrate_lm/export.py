"""Export a model as a self-contained Hugging Face directory.

The directory holds ``config.json`` (with ``auto_map``), the configuration and modeling files,
``model.safetensors``, ``generation_config.json``, the tokenizer files when a tokenizer is given,
and a model card ``README.md`` in the style of the published cards. It loads anywhere with::

    AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)

The directory is written next to its destination and moved into place at the end, so an
interrupted export never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import SubstrateError
from .modeling import SubstrateForCausalLM

LOAD_SNIPPET = """\
```python
import torch
from transformers import AutoTokenizer, AutoModelForCausalLM

path = "{path}"
tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
ids = torch.tensor([tokenizer.encode("Question: What is the capital of Japan?\\nAnswer:")])
out = model.generate(ids, max_new_tokens=10, do_sample=False)
print(tokenizer.decode(out[0].tolist()))
```
"""

VERIFY_SNIPPET = """\
```python
import torch
from transformers import AutoTokenizer, AutoModelForCausalLM

repo_id = "{path}"
tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True)
print("config:", {{k: getattr(model.config, k) for k in ["vocab_size", "n_embed", "d_model", "n_layer", "n_head", "scale"]}})
W = model.token_embeddings.weight.detach().cpu()
print("token_embeddings.weight shape:", tuple(W.shape))
print("is binary globally (0/1):", torch.all((W == 0) | (W == 1)).item())
```
or, from the command line: `substrate-lm substrate verify {path}`.
"""


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def _fmt(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n:,}"


def model_card(model: SubstrateForCausalLM, name: str, tokenizer=None, extra: str | None = None) -> str:
    """A model card in the style of the published ones (architecture, substrate, counts, loading)."""
    c = model.config
    counts = parameter_counts(model)
    frozen = "frozen (`requires_grad=False`)" if c.substrate_frozen else "trainable"
    widen = (
        f"widened to d_model by a non-trainable `repeat_interleave({c.scale})`"
        if c.scale > 1
        else "used at full width (scale 1)"
    )
    meta = c.substrate_meta or {}
    meta_lines = "".join(f"  - {k}: {v}\n" for k, v in sorted(meta.items()))
    tok = getattr(tokenizer, "name_or_path", None) or "not included"
    lines = [
        "---",
        "library_name: transformers",
        "tags: [substrate-lm, custom_code, frozen-embeddings]",
        "---",
        f"# {name}",
        "",
        "A GPT-like decoder whose token-embedding table is a fixed, non-semantic substrate, built with",
        "[substrate-lm](https://github.com/) after A. Bochkov, *Emergent Semantics Beyond Token Embeddings*",
        "(TMLR 2025) and *Growing Transformers* (arXiv 2507.07129).",
        "",
        "## Model summary",
        "- Architecture: decoder-only Transformer (GPT-like), pre-norm LayerNorm blocks",
        f"- Hidden size (`d_model`): {c.d_model}",
        f"- Layers: {c.n_layer}",
        f"- Heads: {c.n_head} (head size {c.head_size})",
        f"- Context length: {c.block_size}",
        f"- Positional encoding: rotary embeddings (theta {c.rope_theta:g}, full head dimension)",
        f"- MLP: GELU, {c.mlp_ratio} x d_model = {c.intermediate_size}",
        f"- Vocabulary size: {c.vocab_size:,}",
        f"- Tokenizer: {tok}",
        f"- Input embeddings: `token_embeddings` = nn.Embedding({c.vocab_size}, {c.n_embed}), "
        f"substrate kind `{c.substrate_kind}`, {frozen}, {widen}",
        "- Output head: not tied to the input embeddings (trained separately)",
        "",
        "## Parameters",
        f"- total: {_fmt(counts['total'])} ({counts['total']:,})",
        f"- trainable: {_fmt(counts['trainable'])} ({counts['trainable']:,})",
        f"- frozen: {_fmt(counts['frozen'])} ({counts['frozen']:,})",
        "",
        "## Substrate",
        f"- kind: `{c.substrate_kind}`, width n_embed = {c.n_embed}, scale = {c.scale}",
        f"- fingerprint: `{c.substrate_fingerprint or 'not recorded'}` (sha256 of the float32 table;",
        "  loading refuses a table that does not match it)",
    ]
    if meta_lines:
        lines.append("- provenance:")
        lines.append(meta_lines.rstrip("\n"))
    lines += [
        "",
        "## How to use (Transformers)",
        LOAD_SNIPPET.format(path=name),
        "Generation samples by default (`generation_config.json`: do_sample true, temperature 1.0), as the",
        "papers' evaluation does; pass `do_sample=False` for greedy decoding.",
        "",
        "## Verify the substrate (sanity check)",
        VERIFY_SNIPPET.format(path=name),
        "## Intended use",
        "Research-only checkpoint for studying emergent semantics over a frozen embedding substrate.",
        "Not intended for production deployment (no safety or instruction tuning).",
    ]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def _sync_special_tokens(model: SubstrateForCausalLM, tokenizer) -> None:
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            setattr(model.config, attr, value)
            if model.generation_config is not None:
                setattr(model.generation_config, attr, value)


def write_model_dir(out_dir: str | os.PathLike, write, overwrite: bool = True) -> Path:
    """Assemble a model directory next to ``out_dir`` with ``write(tmp_dir)``, then move it into place.

    Every file is fsynced before the rename, so an interrupted export never leaves a half-written
    model where a good one was.

    Raises:
        SubstrateError: ``out_dir`` exists and is not empty while ``overwrite`` is False.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SubstrateError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a model directory is as readable as any other
    try:
        write(tmp)
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_model(
    model: SubstrateForCausalLM,
    out_dir: str | os.PathLike,
    tokenizer=None,
    name: str | None = None,
    card_extra: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` (and ``tokenizer``) as a Hugging Face directory; returns its path.

    Raises:
        SubstrateError: the tokenizer and model vocabularies disagree, or ``out_dir`` exists and
            ``overwrite`` is False.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SubstrateError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    if tokenizer is not None and len(tokenizer) != model.config.vocab_size:
        raise SubstrateError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}; "
            f"export with the tokenizer the model was trained with"
        )
    model.verify_substrate()
    if tokenizer is not None:
        _sync_special_tokens(model, tokenizer)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(model, name or out.name, tokenizer, card_extra), encoding="utf-8")

    return write_model_dir(out, write, overwrite)
