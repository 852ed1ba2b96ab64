"""Export a model as a self-contained Hugging Face directory.

The directory holds ``config.json`` (with ``auto_map`` and the sha256 of every weight file), the
configuration and modeling files, ``model.safetensors``, ``generation_config.json``, the tokenizer
files when a tokenizer is given (its ``model_max_length`` is the model's context length), a model
card ``README.md`` in the style of the published cards, and ``substrate_export.json``: the list of
files the export wrote with their sha256. It loads anywhere with::

    AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)

and, with substrate-lm installed, with :func:`substrate_lm.loading.load_model_dir` (our own
classes, no code from the folder is run).

Safety of ``--out``: a missing or empty folder is written; a non-empty one is refused unless
``overwrite`` is given, and even then it is replaced only when it is recognisably one of our
exports (a valid ``substrate_export.json`` that lists every file in it). Nothing the tool did not
write is ever deleted. The new directory is assembled next to its destination and moved into place
at the end, so an interrupted export never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from . import __version__
from .errors import SubstrateError
from .fsutil import _umask, atomic_write_json, clean_debris, disk_error, fsync_dir, hold_folder, in_use, read_json, sha256_file
from .modeling import SubstrateForCausalLM
from .tokenizer.identity import CONFIG_KEY as TOKENIZER_KEY
from .tokenizer.identity import tokenizer_fingerprint

#: The file an export writes last, listing every file it wrote (name -> "sha256:<hex>").
EXPORT_MANIFEST = "substrate_export.json"
MANIFEST_FORMAT = "substrate-lm/export"

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
    tok = tokenizer_description(tokenizer)
    lines = [
        "---",
        "library_name: transformers",
        "tags: [substrate-lm, custom_code, frozen-embeddings]",
        "---",
        f"# {name}",
        "",
        "A GPT-like decoder whose token-embedding table is a fixed, non-semantic substrate, built with",
        "substrate-lm after A. Bochkov, *Emergent Semantics Beyond Token Embeddings*",
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
        "  loading refuses a table that does not match it; `config.json` also records the sha256 of",
        "  every weight file, checked on load)",
    ]
    if meta_lines:
        lines.append("- provenance:")
        lines.append(meta_lines.rstrip("\n"))
    lines += [
        "",
        "## How to use (Transformers)",
        LOAD_SNIPPET.format(path=name),
        "With substrate-lm installed, `substrate_lm.loading.load_model_dir(path)` loads the folder with",
        "the package's own classes and never runs the `.py` files in it.",
        "",
        "Generation samples by default (`generation_config.json`: do_sample true, temperature 1.0), as the",
        "papers' evaluation does; pass `do_sample=False` for greedy decoding.",
        "",
        "## Verify the substrate (sanity check)",
        VERIFY_SNIPPET.format(path=name),
        "## Intended use",
        "Research-only checkpoint for studying emergent semantics over a frozen embedding substrate.",
        "Not intended for production deployment: no safety tuning"
        + ("; the training it had, fine-tuning included, is described below." if extra
           else " and no instruction tuning."),
    ]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def tokenizer_description(tokenizer) -> str:
    """What the card says about the tokenizer: its hub id when it came from the hub, never a local path."""
    if tokenizer is None:
        return "not included"
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    size = f"{len(tokenizer):,} ids" if hasattr(tokenizer, "__len__") else ""
    is_hub_id = (name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)
                 and all(part and part.replace("-", "").replace("_", "").replace(".", "").isalnum()
                         for part in name.split("/")))
    where = f"`{name}`, " if is_hub_id else ""
    return f"{where}included in this folder ({size})" if size else f"{where}included in this folder"


def _sync_special_tokens(model, tokenizer) -> None:
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            setattr(model.config, attr, value)
            if model.generation_config is not None:
                setattr(model.generation_config, attr, value)


def save_tokenizer(tokenizer, directory: Path, context_length: int | None) -> None:
    """``tokenizer.save_pretrained(directory)`` with ``model_max_length`` set to the model's context."""
    tokenizer.save_pretrained(directory)
    cfg = Path(directory) / "tokenizer_config.json"
    if context_length and cfg.is_file():
        data = json.loads(cfg.read_text(encoding="utf-8"))
        data["model_max_length"] = int(context_length)
        cfg.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_export_manifest(directory: str | os.PathLike) -> dict | None:
    """The export manifest of ``directory`` (``{"format", "files": {name: sha256}}``) or None if absent/invalid."""
    data = read_json(Path(directory) / EXPORT_MANIFEST, missing=None, corrupt=None, kind=dict)
    if data is None or data.get("format") != MANIFEST_FORMAT:
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not files or not all(
            isinstance(k, str) and isinstance(v, str) and k == os.path.basename(k) and k not in ("", ".", "..")
            for k, v in files.items()):
        return None
    return data


def _out_path(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as an absolute path (symbolic links are not followed), refused when unusable."""
    raw = Path(out_dir)
    if raw.is_symlink():
        raise SubstrateError(f"{raw} is a symbolic link; pass the real folder as --out")
    out = Path(os.path.abspath(raw))
    if not out.name or out == out.parent:
        raise SubstrateError(f"{raw} cannot be an output folder; pass a new folder name")
    if out.exists() and not out.is_dir():
        raise SubstrateError(f"{raw} exists and is not a folder; choose another --out")
    return out


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool, protect=()) -> Path:
    """Refuse an output folder the export must not replace; returns its absolute path.

    A missing or empty folder is fine. A non-empty folder needs ``overwrite`` and must be one of our
    exports: a valid manifest listing every entry in it (plain files only). ``protect`` lists paths
    (e.g. the checkpoint being exported) that must not lie inside ``out_dir``.

    Raises:
        SubstrateError: one line naming the folder and what to do.
    """
    out = _out_path(out_dir)
    for p in protect:
        pp = Path(os.path.abspath(p))
        if pp == out or out in pp.parents:
            raise SubstrateError(f"--out {out_dir} contains the source {p}; choose an --out outside it")
    if not out.exists():
        return out
    entries = sorted(out.iterdir())
    if not entries:
        return out
    if not overwrite:
        raise SubstrateError(f"{out_dir} already exists and is not empty; choose another --out or pass --overwrite")
    manifest = read_export_manifest(out)
    if manifest is None:
        raise SubstrateError(
            f"{out_dir} is not empty and is not a substrate-lm export (no valid {EXPORT_MANIFEST}); --overwrite "
            f"replaces only folders this tool wrote: choose another --out"
        )
    listed = set(manifest["files"]) | {EXPORT_MANIFEST}
    foreign = [e.name for e in entries if e.name not in listed or e.is_symlink() or not e.is_file()]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SubstrateError(
            f"{out_dir} holds entries substrate-lm did not write ({shown}); move them out or choose another --out"
        )
    return out


def _remove_listed(folder: Path, names) -> None:
    """Delete the listed plain files of ``folder`` and then the folder if that left it empty."""
    for name in names:
        f = folder / name
        if f.is_file() and not f.is_symlink():
            f.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in it (a file the user put there meanwhile): keep it


def write_model_dir(out_dir: str | os.PathLike, write, overwrite: bool = True, protect=()) -> Path:
    """Assemble a model directory next to ``out_dir`` with ``write(tmp_dir)``, then move it into place.

    Every file is fsynced and hashed into :data:`EXPORT_MANIFEST` before the rename, so an
    interrupted export never leaves a half-written model where a good one was. An existing
    ``out_dir`` is replaced only as :func:`check_out_dir` allows, and only the files its manifest
    lists are deleted.

    Raises:
        SubstrateError: ``out_dir`` may not be replaced (see :func:`check_out_dir`).
    """
    out = check_out_dir(out_dir, overwrite, protect)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_export_debris(out)
        out = check_out_dir(out_dir, overwrite, protect)  # a restored previous export needs --overwrite too
        return _write_model_dir(out, write, overwrite, protect)
    except OSError as exc:  # a full disk, a read-only folder: one line; the old export is intact
        raise disk_error(exc, f"the model folder {out}", fix="run the command again") from None


def _write_model_dir(out: Path, write, overwrite: bool, protect) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    held = [hold_folder(tmp)]  # a live export's folder is never taken for debris by another run
    umask = _umask()
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a model directory is as readable as any other
    try:
        write(tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            if not f.is_file() or f.is_symlink() or f.name == EXPORT_MANIFEST:
                raise SubstrateError(f"export wrote an unexpected entry {f.name}; nothing was replaced")
            os.chmod(f, 0o666 & ~umask)  # writers that use mkstemp (safetensors) create 0600
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.name] = "sha256:" + sha256_file(f)
        atomic_write_json(tmp / EXPORT_MANIFEST, {"format": MANIFEST_FORMAT, "version": 1,
                                                  "package_version": __version__, "files": files})
        old = None
        if out.exists() and any(out.iterdir()):
            check_out_dir(out, overwrite, protect)  # again, right before the swap
            manifest = read_export_manifest(out)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            held.append(hold_folder(old))
            os.replace(out, old)  # onto the fresh empty folder
            os.replace(tmp, out)
            _remove_listed(old, [*manifest["files"], EXPORT_MANIFEST])
        else:
            os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for fd in held:
            if fd is not None:
                os.close(fd)
    return out


def clean_export_debris(out: Path) -> int:
    """Remove what a killed export of ``out`` left beside it; returns how many entries went.

    An export assembles ``.<name>.tmp-*`` next to ``out`` and, when it replaces a previous export,
    parks that one in ``.<name>.old-*`` for the swap. A killed run leaves them behind (up to a full
    model copy each). Temp folders no live export holds are deleted; a parked previous export is
    moved back to ``out`` when the kill came between the two renames (``out`` missing), otherwise
    only the files its manifest lists are deleted (see :func:`_remove_listed`).
    """
    removed = clean_debris(out.parent, names=(), prefixes=(f".{out.name}.tmp-",))
    for old in sorted(out.parent.glob(f".{glob.escape(out.name)}.old-*")):
        if old.is_symlink() or not old.is_dir() or in_use(old):
            continue
        manifest = read_export_manifest(old)
        if manifest is None:
            continue  # not a parked export of ours: never touched
        if not out.exists() and not out.is_symlink():
            os.replace(old, out)  # the swap was cut between its renames: the previous export is back
            continue
        _remove_listed(old, [*manifest["files"], EXPORT_MANIFEST])
        removed += 1
    return removed


def export_model(
    model: SubstrateForCausalLM,
    out_dir: str | os.PathLike,
    tokenizer=None,
    name: str | None = None,
    card_extra: str | None = None,
    overwrite: bool = True,
    protect=(),
) -> Path:
    """Write ``model`` (and ``tokenizer``) as a Hugging Face directory; returns its path.

    Args:
        overwrite: allow replacing a non-empty ``out_dir`` that is one of our exports (never
            anything else; see :func:`check_out_dir`).
        protect: paths that must not lie inside ``out_dir`` (e.g. the run being exported).

    Raises:
        SubstrateError: the tokenizer and model vocabularies disagree, a frozen table fails its
            fingerprint, or ``out_dir`` may not be replaced.
    """
    check_out_dir(out_dir, overwrite, protect)
    out = _out_path(out_dir)
    if tokenizer is not None and len(tokenizer) != model.config.vocab_size:
        raise SubstrateError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}; "
            f"export with the tokenizer the model was trained with"
        )
    try:
        model.verify_substrate()
    except ValueError as exc:
        raise SubstrateError(str(exc).splitlines()[0]) from None
    if tokenizer is not None:
        _sync_special_tokens(model, tokenizer)
        # the tokenizer's identity: loading refuses another tokenizer with this model
        setattr(model.config, TOKENIZER_KEY, tokenizer_fingerprint(tokenizer))

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp, model.config.block_size)
        (tmp / "README.md").write_text(model_card(model, name or out.name, tokenizer, card_extra), encoding="utf-8")

    return write_model_dir(out, write, overwrite, protect)
