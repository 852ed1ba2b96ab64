"""Fine-tune an exported model, in full or with LoRA, through the one :class:`Trainer`.

::

    from substrate_lm.training.finetune import finetune
    res = finetune("models/tiny", "sft.jsonl", "runs/sft", lora={"r": 8},
                   overrides={"train.steps": 300})
    res.model_dir        # runs/sft/model: a plain HF folder (LoRA merged), as `export` writes

The model folder is loaded with :func:`substrate_lm.loading.load_model_and_tokenizer` (hashes
checked, no code from the folder). The data is a prepared folder (``data prepare``, opened like
``train`` does) or an instruction file (:mod:`substrate_lm.data.instructions`: prompt/response
pairs with the prompt masked, or text). Settings are a :class:`~.config.RunConfig` (the same
``--section.key`` overrides as ``train``) started from :data:`FINETUNE_DEFAULTS`.

* Full fine-tuning trains every parameter except a frozen substrate table.
* LoRA (peft, through :func:`substrate_lm.components.lora.apply_lora`) adapts the ``targets`` linears
  of every block; only the LoRA matrices train. The Trainer gets the model with the adapters
  injected (so the chunked loss stays), and the export merges them (``merge_and_unload``).

The run folder holds the Trainer's files (``config.toml``, ``log.jsonl``, ``checkpoints/``), the
record ``finetune.json`` (base model path and weights sha256, data, method, LoRA settings) and at
the end ``model/``. ``resume=True`` rebuilds the same (LoRA-wrapped) model from the record, checks
that the base model and the data are unchanged and that no override changes the split or the
batches (:data:`RESUME_FIXED`), and continues from the newest checkpoint.

With an instruction file, validation scores every held-out example exactly once: the validation
split does not wrap around, and ``eval.steps`` covers it once across all ranks (a smaller
``eval.steps`` given by the caller scores a prefix). A new run validates the base model at step 0
(``Trainer(validate_first=True)``), so one log shows base -> tuned; the record keeps both
(``base_val_loss``, ``val_loss``).

Instruction batches are as wide as their longest example (:class:`~substrate_lm.data.instructions.InstructionSplit`),
not ``seq_len``: short examples cost their own length, and the trainer's ``tok_per_s`` counts the
tokens up to each row's last learned target (``learned_tok_per_s`` the learned ones), never padding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ..components.lora import LoraAdapter, apply_lora, check_lora
from ..data.encoding import tokenizer_identity
from ..data.instructions import load_instructions
from ..errors import SubstrateError
from ..export import export_model
from ..fsutil import atomic_write_json, atomic_write_text, disk_error, sha256_file
from ..loading import has_tokenizer, load_model_and_tokenizer, read_model_config
from ..settings import SettingsEngine
from .build import RunData, is_prepared, load_run_data
from .config import DataSection, apply_overrides, load_config, parse_override_args
from .trainer import Trainer

RECORD = "finetune.json"
EXPORT_DIR = "model"
RECORD_FORMAT = "substrate-lm-finetune"

#: RunConfig values a fine-tune starts from (before the caller's overrides).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "train.steps": 200,
    "train.lr": 1e-4,
    "train.min_lr": 1e-5,
    "train.warmup": 20,
    "train.weight_decay": 0.0,
    "train.batch_size": 8,
    "data.val_fraction": 0.05,
    "eval.interval": 50,
    "checkpoint.interval": 50,
    "log.sample_prompts": [],
}
#: ... and with LoRA on top of those (adapters start at zero and need a larger step).
LORA_DEFAULTS: dict[str, Any] = {"train.lr": 1e-3, "train.min_lr": 1e-4}
#: the LoRA settings a fine-tune starts from: the defaults of :class:`~substrate_lm.components.lora.LoraAdapter`
LORA_SETTINGS: dict[str, Any] = dataclasses.asdict(LoraAdapter())
#: Keys --model / --data / --out set; an override may not change them.
_FIXED = ("model.", "data.path", "data.sources", "data.world", "run.dir")
#: Keys that decide the data split or the batches: a resumed run must keep them.
RESUME_FIXED = ("data.val_fraction", "data.mode", "train.seed", "train.seq_len", "train.batch_size",
                "train.grad_accum")


@dataclass
class FinetuneResult:
    """What :func:`finetune` hands back."""

    run_dir: Path
    model_dir: Path | None
    """The exported model (``<run>/model``); None on ranks other than 0."""
    train: Any
    """The :class:`~.trainer.TrainResult`."""
    record: dict


def lora_engine():
    """The settings engine of the ``[lora]`` section (:class:`~substrate_lm.components.lora.LoraAdapter`)."""
    return SettingsEngine(LoraAdapter, name="lora", check=check_lora)


def _lora_object(lora: Mapping[str, Any] | bool | None):
    engine = lora_engine()
    given = {} if lora in (None, True, False) else dict(lora)
    return engine, engine.apply(engine.defaults(), {f"lora.{k}": v for k, v in given.items()})


def lora_settings(lora: Mapping[str, Any] | bool | None) -> dict | None:
    """Normalise ``lora`` (None/False: full fine-tuning; True or a mapping of ``r``, ``alpha``,
    ``dropout``, ``targets``: LoRA) to a plain dict, typed and checked by the settings engine."""
    if lora is None or lora is False:
        return None
    return dataclasses.asdict(_lora_object(lora)[1])


def describe_lora(lora: Mapping[str, Any] | bool | None = None) -> str:
    """The ``[lora]`` section with ``lora``'s values (``--help-config``)."""
    engine, obj = _lora_object(lora)
    return engine.describe(obj)


def apply_finetune_lora(model, settings: dict, seed: int = 0):
    """Inject LoRA into the ``targets`` linears of every block; returns the peft model.

    Every target must name a linear layer in the blocks (a one-line error lists them otherwise);
    the adapters' initialisation is seeded with ``seed``, so a resumed run rebuilds the same model.
    """
    linears = sorted({name.rsplit(".", 1)[-1] for name, mod in model.blocks.named_modules()
                      if isinstance(mod, nn.Linear)})
    bad = [t for t in settings["targets"] if t not in linears]
    if bad or not settings["targets"]:
        raise SubstrateError(f"LoRA targets {bad or settings['targets']} name no linear layer of the blocks; "
                             f"choose from {', '.join(linears)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return apply_lora(model, int(model.config.n_layer), r=settings["r"], alpha=settings["alpha"],
                          dropout=settings["dropout"], targets=settings["targets"])


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _override_dict(overrides: list[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    if not overrides:
        return {}
    items = (parse_override_args(list(overrides)) if isinstance(overrides, (list, tuple))
             else dict(overrides))
    fixed = [k for k in items if k.startswith(_FIXED)]
    if fixed:
        raise SubstrateError(f"--{fixed[0]} cannot be set for a fine-tune: the model, data and run folder come "
                             "from --model, --data and --out")
    return items


def _as_overrides(overrides):
    """Overrides as :func:`~.config.load_config` takes them: CLI-style text stays a list."""
    if not overrides:
        return None
    return list(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides)


def finetune_config(overrides: list[str] | Mapping[str, Any] | None = None, *, lora: bool = False,
                    block_size: int | None = None):
    """The :class:`~.config.RunConfig` of a new fine-tune: :data:`FINETUNE_DEFAULTS` (and
    :data:`LORA_DEFAULTS`), ``train.seq_len`` min(256, ``block_size``), then ``overrides``.

    A ``train.lr`` override without ``train.min_lr`` keeps the defaults' 10:1 decay.
    """
    items = _override_dict(overrides)
    start = {**FINETUNE_DEFAULTS, **(LORA_DEFAULTS if lora else {})}
    if block_size:
        start["train.seq_len"] = min(256, int(block_size))
    if "train.lr" in items and "train.min_lr" not in items:
        try:
            lr = float(items["train.lr"])
        except (TypeError, ValueError):
            lr = None  # apply_overrides names the bad value
        if lr is not None and lr > 0 and math.isfinite(lr):
            start["train.lr"], start["train.min_lr"] = lr, lr / 10
    cfg = load_config(None, start)
    if items:
        cfg = apply_overrides(cfg, _as_overrides(overrides))
    return cfg


def _base_identity(model_dir: Path) -> dict:
    """Path, weights sha256 and substrate fingerprint of the base model folder (from its config.json)."""
    cfg = read_model_config(model_dir)
    if cfg.get("model_type") != "substrate_lm":
        raise SubstrateError(f"{model_dir} holds a {cfg.get('model_type')!r} model; finetune takes a substrate-lm "
                             "model folder (written by init, export or finetune)")
    sha = cfg.get("weights_sha256")
    if not sha and (model_dir / "model.safetensors").is_file():
        sha = {"model.safetensors": "sha256:" + sha256_file(model_dir / "model.safetensors")}
    return {"base_model": str(model_dir), "base_weights_sha256": sha,
            "base_substrate_fingerprint": cfg.get("substrate_fingerprint")}


def _check_new_run_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SubstrateError(f"--out {out} is a file; pass a folder path for the run")
    if out.is_dir() and any(out.iterdir()):
        hint = " (it is a fine-tune run: pass --resume to continue it)" if (out / RECORD).is_file() else ""
        raise SubstrateError(f"--out {out} is not empty{hint}; choose a new or empty folder")


def _read_record(out: Path) -> dict:
    path = out / RECORD
    if not path.is_file():
        raise SubstrateError(f"{out} is not a fine-tune run folder (no {RECORD}); start one without --resume")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SubstrateError(f"{path} is unreadable ({type(exc).__name__}); start a new run folder") from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise SubstrateError(f"{path} is not a substrate-lm fine-tune record; start a new run folder")
    return rec


def _load_data(source: Path, tokenizer: Any, cfg, warn: Callable[[str], None]):
    """``(RunData, record fields)`` for a prepared folder or an instruction file."""
    ident = tokenizer_identity(tokenizer)
    if source.is_dir() and is_prepared(source):
        data = load_run_data(DataSection(path=str(source)), progress=False)
        recorded = (data.meta.get("tokenizer") or {}).get("fingerprint")
        if recorded and recorded != ident["fingerprint"]:
            raise SubstrateError(f"{source} was tokenised with {data.meta['tokenizer'].get('name')}, not the model's "
                                 "tokenizer; prepare the data with the model folder as --tokenizer")
        return data, {"data": str(source), "data_kind": "prepared"}
    if source.is_dir():
        raise SubstrateError(f"{source} holds no prepared data (no finished meta.json/manifest); pass a folder "
                             "written by `substrate-lm data prepare` or a JSONL file of instructions")
    inst = load_instructions(source, tokenizer, seq_len=cfg.train.seq_len, val_fraction=cfg.data.val_fraction,
                             seed=cfg.train.seed, warn=warn)
    data = RunData(train=inst.train, val=inst.val, path=source,
                   meta={"format": "instructions", "tokenizer": ident}, stats={"instructions": inst.stats})
    return data, {"data": str(source), "data_kind": "instructions",
                  "data_sha256": "sha256:" + sha256_file(source), "examples": inst.stats}


def finetune(model_dir: str | os.PathLike | None, data: str | os.PathLike | None, out: str | os.PathLike, *,
             lora: Mapping[str, Any] | bool | None = None,
             overrides: list[str] | Mapping[str, Any] | None = None, resume: bool = False,
             callbacks: Iterable[Callable[[dict], None]] = (),
             warn: Callable[[str], None] = _stderr) -> FinetuneResult:
    """Fine-tune ``model_dir`` on ``data`` in the run folder ``out``; export ``out/model``.

    Args:
        model_dir: an exported substrate-lm model folder (with its tokenizer). With ``resume``,
            None takes the one recorded in ``finetune.json``.
        data: a prepared data folder or an instruction JSONL file (None with ``resume``: recorded).
        out: the run folder: missing or empty, or (``resume``) an earlier fine-tune's folder.
        lora: None/False for full fine-tuning; True or ``{"r", "alpha", "dropout", "targets"}``
            for LoRA (defaults :data:`LORA_SETTINGS`). With ``resume`` it must match the record
            (None takes the recorded setting).
        overrides: RunConfig overrides (``{"train.steps": 50}`` or ``["--train.lr", "1e-4"]``) on
            top of :data:`FINETUNE_DEFAULTS`, or on top of the run's saved config when resuming.
        resume: continue the run in ``out`` from its newest valid checkpoint.
        callbacks: passed to the :class:`~.trainer.Trainer` (an exception there stops the run).
        warn: receives one-line notes (cut or dropped examples).

    Raises:
        SubstrateError: a bad model folder, data, setting or run folder (one line each).
    """
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
    items = _override_dict(overrides)
    settings = lora_settings(lora)
    record: dict = {}
    if resume:
        record = _read_record(out)
        if model_dir is None:
            model_dir = record.get("base_model")
        if data is None:
            data = record.get("data")
        if lora is None:
            settings = record.get("lora")
        elif settings != record.get("lora"):
            raise SubstrateError(f"{out} was started with LoRA settings {record.get('lora')}; resume with the same "
                                 "settings (or omit them)")
        if not (out / "config.toml").is_file():
            raise SubstrateError(f"{out} has no config.toml (damaged run folder); start a new run elsewhere")
        cfg = load_config(out / "config.toml", _as_overrides(overrides))
        _check_resume_keys(load_config(out / "config.toml"), cfg, out)
        cfg.run.dir = str(out)
    elif _is_main():  # other ranks under torchrun would see rank 0's first files
        _check_new_run_dir(out)
    if model_dir is None or data is None:
        raise SubstrateError("pass --model DIR and --data SRC (a JSONL file or a prepared data folder)")
    model_path = Path(os.path.abspath(os.path.expanduser(os.fspath(model_dir))))
    source = Path(os.path.abspath(os.path.expanduser(os.fspath(data))))
    base = _base_identity(model_path)
    if resume:
        if record.get("base_weights_sha256") != base["base_weights_sha256"]:
            raise SubstrateError(f"the weights of {model_path} differ from those {out} started from (recorded "
                                 f"{record.get('base_model')}); resume with the same base model")
    if not has_tokenizer(model_path):
        raise SubstrateError(f"{model_path} holds no tokenizer (tokenizer.json); export the model with its tokenizer")
    if not source.exists():
        raise SubstrateError(f"--data {source} does not exist; pass a JSONL file or a prepared data folder")
    if source.resolve() == out.resolve() or out in source.resolve().parents:
        raise SubstrateError(f"--data {source} lies inside --out {out}; choose an --out elsewhere")
    if model_path == out or out in model_path.parents:
        raise SubstrateError(f"--model {model_path} lies inside --out {out}; choose an --out elsewhere")
    if model_path in out.parents or model_path.resolve() in out.resolve().parents:
        raise SubstrateError(f"--out {out} lies inside --model {model_path}; choose an --out outside the model folder")
    if "data.val_fraction" in items and source.is_dir():
        raise SubstrateError(f"--data {source} is a prepared folder whose validation split `data prepare` fixed; "
                             "drop --val-fraction (it applies to instruction files)")

    model, tokenizer = load_model_and_tokenizer(model_path)
    if not resume:
        cfg = finetune_config(overrides, lora=bool(settings), block_size=int(model.config.block_size))
        cfg.run.name = out.name
        cfg.run.dir = str(out)
    cfg.model.init_from = str(model_path)
    cfg.data.path = str(source)
    if cfg.dist.strategy == "fsdp2":
        raise SubstrateError("finetune does not shard with FSDP2 (the export merges a full model); "
                             "use dist.strategy ddp or none")
    if cfg.train.seq_len > model.config.block_size:
        raise SubstrateError(f"train.seq_len {cfg.train.seq_len} exceeds the model's context length "
                             f"{model.config.block_size}; lower --seq-len")
    run_data, data_fields = _load_data(source, tokenizer, cfg, warn)
    if resume and record.get("data_sha256") and data_fields.get("data_sha256") != record["data_sha256"]:
        raise SubstrateError(f"{source} changed since {out} started (sha256 differs); resume with the same data")
    eval_all = None
    if run_data.val is not None and hasattr(run_data.val, "examples"):
        eval_all = _plan_eval(cfg, len(run_data.val), items, record.get("eval_all", False) if resume else True)

    model.requires_grad_(True)
    model.token_embeddings.weight.requires_grad_(not model.config.substrate_frozen)
    peft_model = None
    train_model = model
    if settings:
        peft_model = apply_finetune_lora(model, settings, seed=cfg.train.seed)
        train_model = peft_model.get_base_model()  # the same modules, adapters injected
    n_train = sum(p.numel() for p in train_model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in train_model.parameters())
    # a resumed run refreshes what may have moved (the paths, the data stats) and keeps the rest
    record = {**({"format": RECORD_FORMAT, "version": 1} if not resume else record), **base, **data_fields,
              "method": "lora" if settings else "full", "lora": settings,
              "trainable_parameters": n_train, "parameters": n_all,
              "tokenizer_fingerprint": run_data.meta.get("tokenizer", {}).get("fingerprint"),
              **({"eval_all": eval_all} if eval_all is not None else {})}
    if _is_main():
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / RECORD, record)
            if not resume:
                atomic_write_text(out / "config.toml", cfg.to_toml())  # the Trainer rewrites it; resume needs it
        except OSError as exc:
            raise disk_error(exc, f"the run folder {out}") from None

    # validation at step 0 scores the base model, so the log (and the record) show base -> tuned
    result = Trainer(cfg, model=train_model, tokenizer=tokenizer, data=run_data, resume=resume,
                     callbacks=callbacks, validate_first=True).fit()
    if not _is_main():
        return FinetuneResult(run_dir=out, model_dir=None, train=result, record=record)
    final = peft_model.merge_and_unload() if peft_model is not None else result.model
    final = final.cpu().eval()
    final.requires_grad_(False)
    how = (f"LoRA (r {settings['r']}, alpha {settings['alpha']:g}, dropout {settings['dropout']:g}, targets "
           f"{', '.join(settings['targets'])} in every block), merged" if settings else "full fine-tuning")
    val = (result.val or {}).get("val_loss")
    base_val = next((r["val_loss"] for r in result.history if r.get("event") == "val" and r.get("step") == 0),
                    record.get("base_val_loss"))  # a resumed run logged it before
    extra = (f"## Fine-tuning\nFine-tuned from `{model_path}` ({how}) on `{source}`: {result.step} optimizer steps"
             + (f", validation loss {val:.4f}" if val is not None else "")
             + (f" (base model {base_val:.4f})" if val is not None and base_val is not None else "") + ".")
    model_out = export_model(final, out / EXPORT_DIR, tokenizer=tokenizer, card_extra=extra, overwrite=True,
                             protect=[out / "checkpoints"])
    record = {**record, "export": EXPORT_DIR, "steps": result.step, "base_val_loss": base_val, "val_loss": val,
              "best_val_loss": result.best_val_loss}
    atomic_write_json(out / RECORD, record)
    return FinetuneResult(run_dir=out, model_dir=model_out, train=result, record=record)


def _check_resume_keys(saved, cfg, out: Path) -> None:
    """Refuse overrides of a resumed run that change its data split or batches (:data:`RESUME_FIXED`)."""
    changed = []
    for key in RESUME_FIXED:
        sec, name = key.split(".")
        old, new = getattr(getattr(saved, sec), name), getattr(getattr(cfg, sec), name)
        if old != new:
            changed.append(f"{key} {old} -> {new}")
    if changed:
        raise SubstrateError(f"--resume cannot change {', '.join(changed)} of {out}: they decide the data split "
                             "and batches; drop them (train.steps, log.*, checkpoint.*, eval.*, run.device and "
                             "run.threads may change)")


def _plan_eval(cfg, n_val: int, items: Mapping[str, Any], auto: bool) -> bool:
    """Set ``eval.steps`` (and a new run's ``eval.batch_size``) so that one evaluation covers the
    ``n_val`` held-out examples once over all ranks; a caller's smaller ``eval.steps`` is kept.
    Returns whether the steps are automatic (recorded, so a resume recomputes them)."""
    if auto and "eval.batch_size" not in items and "eval.steps" not in items:
        cfg.eval.batch_size = min(cfg.eval.batch_size or cfg.train.batch_size, n_val)
    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    # one evaluation batch is the global batch: eval batch x ranks x grad_accum rows (trainer.evaluate)
    needed = max(1, math.ceil(n_val / ((cfg.eval.batch_size or cfg.train.batch_size) * world
                                       * cfg.train.grad_accum)))
    if "eval.steps" in items or not auto:
        cfg.eval.steps = min(cfg.eval.steps, needed)  # more would only score empty rows
        return False
    cfg.eval.steps = needed
    return True


def _is_main() -> bool:
    """Rank 0 (or no torchrun): the process that writes the record and the export."""
    return int(os.environ.get("RANK", "0") or 0) == 0


__all__ = ["FINETUNE_DEFAULTS", "LORA_DEFAULTS", "LORA_SETTINGS", "RESUME_FIXED", "FinetuneResult",
           "apply_finetune_lora", "describe_lora", "finetune", "finetune_config", "lora_engine", "lora_settings"]
