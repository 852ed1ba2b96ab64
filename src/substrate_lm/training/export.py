"""From a training checkpoint to a Hugging Face model folder (tokenizer and substrate included).

``substrate-lm export runs/tiny --out models/tiny`` picks the newest checkpoint that verifies,
rebuilds the model from the class and config recorded in it (only model classes of substrate-lm
or transformers are accepted, see :func:`~substrate_lm.training.build.model_from_spec`), loads the
weights (the frozen table among them, checked against its fingerprint) and writes the folder with
:func:`substrate_lm.export.export_model`. A sharded checkpoint of an FSDP2 run is assembled into the
full weights in this one process (:func:`~substrate_lm.training.checkpoint.load_checkpoint`), so
it exports to the same single folder.

``--out`` must be missing or empty; with ``overwrite`` it may also be a previous export (its
manifest lists every file in it). The run folder, a folder holding the checkpoint, or any folder
with files the tool did not write is never replaced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..data.encoding import load_tokenizer_any
from ..errors import SubstrateError
from ..export import check_out_dir, export_model, save_tokenizer, write_model_dir
from ..modeling import SubstrateForCausalLM
from ..tokenizer.identity import check_same_tokenizer, tokenizer_fingerprint
from .build import model_from_spec
from .checkpoint import Checkpoint, CheckpointCorrupt, load_checkpoint, resolve_checkpoint


def model_from_checkpoint(path: str | os.PathLike,
                          warn: Callable[[str], None] | None = None) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the trained model of a checkpoint (a step folder, a run folder or its checkpoints).

    Returns:
        ``(model, checkpoint)``: the model in eval mode on the CPU, and the loaded checkpoint
        (weights, step, config, ...; no optimizer state).
    """
    ckpt_path = resolve_checkpoint(path, warn=warn)
    try:
        ck = load_checkpoint(ckpt_path, load_optimizer=False)
    except CheckpointCorrupt as exc:
        raise SubstrateError(f"checkpoint {ckpt_path} is unusable: {exc}") from None
    spec = ck.state.get("model_spec")
    if not spec:
        raise SubstrateError(f"checkpoint {ckpt_path} records no model class/config; it was not "
                             "written by substrate-lm train")
    try:  # only substrate-lm / transformers model classes: a checkpoint never chooses code
        model = model_from_spec(spec)
    except SubstrateError as exc:
        raise SubstrateError(f"checkpoint {ckpt_path}: {exc}") from None
    except (ValueError, TypeError) as exc:  # a config that parses but does not validate
        raise SubstrateError(f"checkpoint {ckpt_path} records a model config that does not build: "
                             f"{' '.join(str(exc).split())[:200]}") from None
    missing, unexpected = model.load_state_dict(ck.model_state, strict=False)
    if any(".lora_" in k for k in unexpected):
        raise SubstrateError(f"checkpoint {ckpt_path} holds unmerged LoRA adapters (a `finetune --lora` run); "
                             f"export it with `substrate-lm finetune --out RUN_DIR --resume`, which merges "
                             f"them into RUN_DIR/model")
    if missing or unexpected:
        raise SubstrateError(f"checkpoint {ckpt_path} does not match its recorded model: missing "
                             f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}")
    model.eval()
    return model, ck


def _find_tokenizer(ck: Checkpoint) -> Any:
    """The run's tokenizer: the copy in the run folder, else the configured or recorded one."""
    run_dir = ck.path.parent.parent
    candidates = [run_dir / "tokenizer"]
    model_cfg = (ck.state.get("config") or {}).get("model") or {}
    if model_cfg.get("tokenizer"):
        candidates.append(model_cfg["tokenizer"])
    for cand in candidates:
        if isinstance(cand, Path) and not cand.is_dir():
            continue
        tok, _ = load_tokenizer_any(str(cand))
        return tok
    return None


def export_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike, tokenizer: Any = None,
                      warn: Callable[[str], None] | None = None, overwrite: bool = False,
                      allow_foreign_tokenizer: bool = False) -> Path:
    """Export a checkpoint as a self-contained HF folder (``from_pretrained(..., trust_remote_code=True)``).

    Args:
        path: step folder, ``checkpoints`` folder or run folder (newest valid checkpoint).
        out_dir: destination folder: missing or empty, or with ``overwrite`` a previous export.
        tokenizer: tokenizer to include; default: the run's copy (``<run>/tokenizer``).
        warn: receives one line per skipped corrupt checkpoint.
        overwrite: allow replacing a previous export at ``out_dir`` (never any other folder).
        allow_foreign_tokenizer: include ``tokenizer`` even when the run's data was prepared with
            another one (refused otherwise).

    Raises:
        SubstrateError: ``out_dir`` may not be written, the checkpoint is unusable, or
            ``tokenizer`` is not the one the run's data was prepared with.
    """
    protect = [Path(path)]
    check_out_dir(out_dir, overwrite, protect)  # before the (slow) load: refuse early
    model, ck = model_from_checkpoint(path, warn=warn)
    protect.append(ck.path)
    if tokenizer is None:
        tokenizer = _find_tokenizer(ck)
    else:  # the run's data records its tokenizer: another one would be recorded in the export
        check_same_tokenizer(ck.state.get("data_tokenizer"), tokenizer_fingerprint(tokenizer),
                             owner=f"checkpoint {ck.path} (its training data)", other="--tokenizer",
                             flag="--allow-foreign-tokenizer", allow=allow_foreign_tokenizer,
                             warn=(lambda m: warn(m.removeprefix("warning: "))) if warn else None)
    val = ck.state.get("val_loss")
    extra = (f"## Training\nExported from `{ck.path.name}` of a substrate-lm run: "
             f"{ck.step} optimizer steps, {int(ck.state.get('tokens', 0)):,} training tokens"
             + (f", validation loss {val:.4f}" if val is not None else "") + ".")
    if isinstance(model, SubstrateForCausalLM):
        return export_model(model, out_dir, tokenizer=tokenizer, card_extra=extra, overwrite=overwrite,
                            protect=protect)
    # any other HF causal LM: save_pretrained (+ tokenizer), moved into place at the end
    block = getattr(model.config, "max_position_embeddings", None)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp, block if isinstance(block, int) else None)

    return write_model_dir(out_dir, write, overwrite, protect)
