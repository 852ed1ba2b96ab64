"""``substrate-lm compose | grow``: merge experts on a shared substrate, grow models layer by layer."""

from __future__ import annotations

import json
import os
import sys

from ..errors import SubstrateError
from .common import (RUN_KEYS, add_runtime_args, add_settings_args, apply_runtime, check_output_dir, load_settings,
                     nonneg_int, positive_float, positive_int, runtime_overrides, settings_overrides)


def register(sub) -> None:
    p = sub.add_parser("compose", help="merge experts that share a frozen substrate by averaging their logits")
    p.add_argument("--expert", action="append", required=True, metavar="DIR",
                   help="an expert model directory (repeat: at least two)")
    p.add_argument("--weights", help="comma-separated mixing weights, one per expert (normalised; default equal)")
    p.add_argument("--out", required=True, help="output directory of the composed model")
    p.add_argument("--adapter", action="store_true",
                   help="add a trainable fusion adapter (per-position mixing weights; starts at --weights)")
    p.add_argument("--adapter-hidden", type=nonneg_int, default=0, help="MLP width of the adapter (0: linear)")
    p.add_argument("--adapter-data", metavar="DIR",
                   help="prepared token shards to train the adapter on (implies --adapter)")
    p.add_argument("--adapter-steps", type=positive_int, default=200, help="adapter training steps")
    p.add_argument("--finetune-steps", type=nonneg_int, default=0,
                   help="then fine-tune the whole merged model briefly for this many steps (needs --adapter-data)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate of adapter training (fine-tuning uses lr/10)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--seq-len", type=positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    add_runtime_args(p)  # the device trains the adapter; the experts are loaded and saved on the CPU
    p.add_argument("--run-dir", metavar="DIR",
                   help="keep the adapter training runs (logs, checkpoints) in DIR/adapter and DIR/finetune; "
                        "default: a temporary folder, removed afterwards")
    p.add_argument("--resume", action="store_true", help="continue the adapter training runs in --run-dir")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("grow", help="grow a model layer by layer on a frozen substrate (resumable; "
                                    "each stage is a Trainer run, torchrun-able)")
    p.description = ("Grow a model block by block from a growth config (a TOML file or a recipe name); any "
                     "setting is overridden as --section.key VALUE (e.g. --train.steps 50 --data.path "
                     "data/tiny); --help-config lists them all.")
    add_settings_args(p, old_set="")
    p.add_argument("--config", help="growth TOML file or recipe name (grow-tiny, grow-paper-9x3)")
    p.add_argument("--resume", action="store_true", help="continue the run in run.dir (finished stages are skipped)")
    add_runtime_args(p, settings="run", cuda_index=False)
    p.set_defaults(func=cmd_grow)


def parse_weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    import math

    try:
        weights = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SubstrateError(f"--weights {text!r} is not a comma-separated list of numbers, e.g. 0.5,0.5") from None
    if not weights:
        raise SubstrateError("--weights is empty; pass one number per expert, e.g. 0.5,0.5")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise SubstrateError(f"--weights {text!r}: weights must be finite and >= 0, e.g. 0.5,0.5")
    if sum(weights) <= 0:
        raise SubstrateError(f"--weights {text!r} sum to 0; at least one weight must be positive")
    return weights


def _quiet_transformers() -> None:
    """No per-file "Loading weights" bars between our own progress lines."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def cmd_compose(args) -> int:
    _quiet_transformers()
    from ..docking import compose, save_composed
    from ..docking.compose import summary

    if args.resume and not args.run_dir:
        raise SubstrateError("--resume needs --run-dir DIR (the folder of the adapter run to continue)")
    if args.run_dir and not args.resume:
        check_output_dir(args.run_dir, "--run-dir", remedy="or --resume to continue the adapter runs in it")
    if args.finetune_steps and not args.adapter_data:
        raise SubstrateError("--finetune-steps needs --adapter-data DIR (the tokens to fine-tune on)")
    args.device = apply_runtime(args)  # --device and --threads
    weights = parse_weights(args.weights)
    if len(args.expert) < 2:
        raise SubstrateError(f"composition needs at least two experts, got {len(args.expert)}; pass --expert DIR twice or more")
    if weights is not None and len(weights) != len(args.expert):
        raise SubstrateError(f"--weights gives {len(weights)} weights for {len(args.expert)} experts; give one weight per expert")
    check_output_dir(args.out, overwrite=args.overwrite)
    fusion = "adapter" if (args.adapter or args.adapter_data) else "mean"
    model, tok = compose(args.expert, weights=weights, fusion=fusion,
                         adapter_hidden=args.adapter_hidden, return_tokenizer=True)
    trained = {}
    if args.adapter_data:
        trained = _train_adapter(args, model)
    out = save_composed(model, args.out, tokenizer=tok, overwrite=args.overwrite)
    info = summary(model, out)
    for key, r in trained.items():
        info[key] = {k: (v["loss"] if isinstance(v, dict) else v) for k, v in r.items()
                     if k in ("val_before", "val_trained", "val_after", "trainable", "kept")}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"composed {len(info['experts'])} experts -> {out} ({info['fusion']})")
    for i, e in enumerate(info["experts"], start=1):
        print(f"  expert {i}: {e['source']}  layers {e['n_layer']}  d_model {e['d_model']}  weight {e['weight']:.4f}")
    s = info["substrate"]
    print(f"  shared substrate: {s['kind']}, n_embed {s['n_embed']}, vocab {s['vocab_size']:,}, {s['fingerprint']}")
    print(f"  parameters: {info['parameters']['total']:,} (the substrate stored once)")
    print(f"  tokenizer: {'copied' if tok is not None else 'none (the experts have none)'}")
    for key in trained:
        r = info[key]
        if r.get("val_before") is None:
            print(f"  {key}: trained without a validation split, so it was kept unchecked "
                  f"(prepare --adapter-data with a val split to compare)")
        elif r["kept"] == "before":
            print(f"  {key}: val loss {r['val_before']:.4f} before, {r['val_trained']:.4f} trained: training made "
                  f"it worse, so the model before it (val {r['val_after']:.4f}) was kept")
        else:
            print(f"  {key}: val loss {r['val_before']:.4f} -> {r['val_trained']:.4f} (kept)")
    return 0


def _train_adapter(args, model) -> dict:
    """Train the adapter (then optionally fine-tune) with the Trainer; the summaries of both runs."""
    import contextlib
    import tempfile
    from pathlib import Path

    from ..data import TokenShards
    from ..docking import fusion_run_config, train_fusion

    train = TokenShards(args.adapter_data, split="train")
    try:
        val = TokenShards(args.adapter_data, split="val")
        val = val if len(val) > args.seq_len else None
    except SubstrateError:
        val = None
    if not str(args.device).startswith(("cpu", "cuda")):
        raise SubstrateError(f"--device {args.device}: adapter training runs on cpu or cuda")
    device = "cuda" if str(args.device).startswith("cuda") else "cpu"

    def log(r):
        print(f"  step {r['step']} loss {r['loss']:.4f}", file=sys.stderr)

    trained = {}
    keep = contextlib.nullcontext(args.run_dir) if args.run_dir else tempfile.TemporaryDirectory(prefix="fusion-")
    with keep as root:
        common = dict(batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed, device=device,
                      log_interval=max(1, args.adapter_steps // 20))
        cfg = fusion_run_config(Path(root) / "adapter", steps=args.adapter_steps, lr=args.lr,
                                checkpoint_interval=100, **common)
        print(f"training the fusion adapter for {args.adapter_steps} steps (run folder {cfg.run_dir()})",
              file=sys.stderr)
        trained["adapter"] = train_fusion(model, train, cfg, train="adapter", val=val, log=log, resume=args.resume)
        if args.finetune_steps:
            cfg = fusion_run_config(Path(root) / "finetune", steps=args.finetune_steps, lr=args.lr / 10,
                                    checkpoint_interval=100, **{**common, "seed": args.seed + 1})
            print(f"fine-tuning the merged model for {args.finetune_steps} steps", file=sys.stderr)
            trained["finetune"] = train_fusion(model, train, cfg, train="experts", val=val, log=log,
                                               resume=args.resume)
    model.to("cpu")
    return trained


def cmd_grow(args) -> int:
    from ..docking import load_grow_config, run_growth
    from ..docking.grow_config import ENGINE

    args.overrides = runtime_overrides(args, settings_overrides(args), RUN_KEYS)
    cfg = load_settings(args, ENGINE, load_grow_config,
                        missing="pass --config FILE|RECIPE (recipes: grow-tiny, grow-paper-9x3)")
    if cfg is None:
        return 0
    _quiet_transformers()
    result = run_growth(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun rank 0 reports
    print(result["table"])
    print(f"\nresults: {result['paths']['markdown']}  final model: {result['info']['final_model']}")
    return 0
