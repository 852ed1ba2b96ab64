"""``substrate-lm info | init | generate``: create, describe and sample from models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SubstrateError
from .common import (add_runtime_args, add_settings_args, apply_runtime, apply_threads, override_keys,
                     refuse_shortcut_clash, settings_overrides)


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a model directory (config, parameter counts, substrate)")
    p.add_argument("model", nargs="?", help="model directory (omit with --presets)")
    p.add_argument("--presets", action="store_true", help="list the named presets with parameter counts")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a foreign model folder run its own .py files (never needed for substrate-lm folders)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("init", help="write an untrained model directory from a preset",
                       description="Write an untrained model folder. Model config fields are set as "
                                   "--model.overrides.KEY VALUE (e.g. --model.overrides.n_layer 4), as in "
                                   "train; --help-config lists the [model] settings.")
    add_settings_args(p, old_set="model.overrides.")
    p.add_argument("--preset", help="preset name (see `substrate-lm info --presets`); same as --model.preset")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", help="tokenizer directory or hub id; its vocabulary builds the substrate")
    p.add_argument("--substrate", help="substrate spec overriding the preset's (e.g. 16-bit, uni-glyph, trainable); "
                                       "same as --model.substrate")
    p.add_argument("--seed", type=int, default=0, help="seed of the backbone init and of random substrates")
    p.add_argument("--font", help="Unifont file for glyph substrates (default: the Debian unifont paths)")
    p.add_argument("--substrate-file", help="install a saved substrate (from `substrate build`) instead of building one")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out written by substrate-lm (other folders are never replaced)")
    add_runtime_args(p, device=False)  # the model is built on the CPU
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("generate", help="generate text from a model directory, streaming tokens "
                                        "(--interactive: a prompt loop on one loaded model)")
    p.add_argument("model", help="model directory (ours or any HF causal LM)")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="load the model once, then read prompts from stdin, one a line, and stream each "
                        "continuation; an empty line, :q or end of input (Ctrl-D) stops")
    p.add_argument("--tokenizer", help="tokenizer directory when the model directory has none")
    p.add_argument("--allow-foreign-tokenizer", action="store_true",
                   help="use --tokenizer even though it is not the tokenizer the model was made with "
                        "(every id then stands for another token)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (default: sample, as the papers)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    add_runtime_args(p)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a foreign model or tokenizer folder run its own .py files (never needed for ours)")
    p.set_defaults(func=cmd_generate)


# -- helpers -------------------------------------------------------------------------------------


def load_model_dir(path: str, device: str = "cpu", trust_remote_code: bool = False):
    """Load a model folder through :func:`substrate_lm.loading.load_model_dir` (one-line errors)."""
    from ..loading import load_model_dir as _load

    return _load(path, device=device, trust_remote_code=trust_remote_code)


def load_tokenizer_for(model_dir: str, tokenizer: str | None = None, trust_remote_code: bool = False):
    """The tokenizer in ``model_dir`` (or ``tokenizer``), loaded without running code from it."""
    from ..loading import has_tokenizer, load_tokenizer

    if tokenizer is None and not has_tokenizer(model_dir):
        raise SubstrateError(f"{model_dir} holds no tokenizer; pass --tokenizer DIR")
    return load_tokenizer(tokenizer or model_dir, trust_remote_code=trust_remote_code)


def check_prompts(prompts: list[str]) -> None:
    """Refuse prompts that are not valid UTF-8 (bytes the shell passed through undecoded)."""
    for i, text in enumerate(prompts, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SubstrateError(
                f"--prompt {i} is not valid UTF-8 text (undecodable bytes at character {exc.start}); pass UTF-8 text"
            ) from None


def check_generation_args(args) -> None:
    """Refuse sampling settings ``generate`` would reject later (after loading)."""
    import math

    if args.max_new_tokens < 1:
        raise SubstrateError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature > 0):
        raise SubstrateError(f"--temperature must be a positive number, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise SubstrateError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not (math.isfinite(args.top_p) and 0 < args.top_p <= 1):
        raise SubstrateError(f"--top-p must be in (0, 1], got {args.top_p}")


def _count(model) -> dict:
    from ..export import parameter_counts

    return parameter_counts(model)


# -- commands ------------------------------------------------------------------------------------


#: SubstrateConfig's defaults behind :func:`preset_counts` (a test checks the counts against the model's)
MLP_RATIO, BIAS = 4, False


def preset_counts(preset) -> dict[str, int]:
    """Parameter counts of a preset's model from its shape alone (no torch model, no transformers:
    ``info --presets`` starts in about a second). The table (vocab x n_embed; frozen unless
    trainable), per block two LayerNorms, qkv, attention out, MLP in and out (biases when
    ``bias``), the final LayerNorm and the untied head. ``tests/cli/test_startup.py`` checks these
    against ``parameters()`` of every preset's real model."""
    from ..substrates.registry import is_frozen

    bb = preset.shape
    d, v = bb.d_model, bb.vocab_size
    hidden = MLP_RATIO * d
    linear = 3 * d * d + d * d + d * hidden + hidden * d
    if BIAS:
        linear += 3 * d + d + hidden + d
    block = linear + 2 * 2 * d
    table = v * preset.n_embed
    total = table + bb.n_layer * block + 2 * d + d * v
    frozen = table if is_frozen(preset.kind) else 0
    return {"total": total, "trainable": total - frozen, "frozen": frozen}


def cmd_info(args) -> int:
    from ..presets import describe_presets

    if args.presets:
        rows = []
        for preset in describe_presets():
            counts = preset_counts(preset)
            rows.append({**preset.row(), **{f"params_{k}": v for k, v in counts.items()}})
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'preset':<11} {'substrate':<10} {'n_embed':>7} {'d_model':>7} {'layers':>6} {'total':>9} {'trainable':>10}")
            for r in rows:
                print(
                    f"{r['name']:<11} {r['substrate']:<10} {r['n_embed']:>7} {r['d_model']:>7} {r['n_layer']:>6} "
                    f"{r['params_total'] / 1e6:>8.1f}M {r['params_trainable'] / 1e6:>9.1f}M"
                )
        return 0
    if not args.model:
        raise SubstrateError("give a model directory, or --presets")
    model = load_model_dir(args.model, trust_remote_code=args.trust_remote_code)
    c = model.config
    info = {
        "path": str(Path(args.model).resolve()),
        "class": type(model).__name__,
        "config": {k: getattr(c, k, None) for k in ("vocab_size", "n_embed", "d_model", "n_layer", "n_head", "scale")},
        "block_size": getattr(c, "block_size", getattr(c, "max_position_embeddings", None)),
        "parameters": _count(model),
    }
    if hasattr(model, "token_embeddings"):
        from ..modeling import substrate_fingerprint

        fp = substrate_fingerprint(model.token_embeddings.weight)
        info["substrate"] = {
            "kind": c.substrate_kind,
            "frozen": c.substrate_frozen,
            "fingerprint": c.substrate_fingerprint,
            "fingerprint_matches": (fp == c.substrate_fingerprint) if c.substrate_fingerprint else None,
            "meta": c.substrate_meta,
        }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"model      {info['path']} ({info['class']})")
    print("config     " + ", ".join(f"{k}={v}" for k, v in info["config"].items()) + f", block_size={info['block_size']}")
    n = info["parameters"]
    print(f"parameters total {n['total']:,} | trainable {n['trainable']:,} | frozen {n['frozen']:,}")
    if "substrate" in info:
        s = info["substrate"]
        match = {True: "matches the table", False: "DOES NOT match the table", None: "not recorded"}[s["fingerprint_matches"]]
        print(f"substrate  {s['kind']} ({'frozen' if s['frozen'] else 'trainable'}), fingerprint {s['fingerprint']} ({match})")
    return 0


def init_settings(args):
    """The ``[model]`` settings of ``init``: flags and ``--model.KEY VALUE`` through the one engine."""
    from ..training.config import init_engine

    overrides = settings_overrides(args)
    bad = [o for o in overrides if o.startswith("--") and not o.startswith("--model.")]
    if bad:
        raise SubstrateError(f"init takes only [model] settings (--model.KEY VALUE); got {bad[0]}")
    flags = {f"model.{k}": v for k, v in (("preset", args.preset), ("substrate", args.substrate),
                                           ("tokenizer", args.tokenizer)) if v is not None}
    refuse_shortcut_clash({f"--{k.split('.', 1)[1]}": k for k in flags}, overrides)
    if "model.init_from" in override_keys(overrides):
        raise SubstrateError("init writes an untrained model; model.init_from is for train "
                             "(or use finetune to start from a trained model)")
    engine = init_engine()
    settings = engine.apply(engine.defaults(), overrides)
    return engine.apply(settings, flags) if flags else settings


def cmd_init(args) -> int:
    from ..export import export_model, parameter_counts

    settings = init_settings(args)
    if args.help_config:
        from ..training.config import init_engine

        print(init_engine().describe(settings))
        return 0
    m = settings.model
    if args.preset is None and not any(o.startswith("--model.preset") for o in args.overrides):
        raise SubstrateError("pass --preset NAME (see `substrate-lm info --presets`)")
    apply_threads(args)
    tok = None
    if m.tokenizer:
        from ..tokenizer import load_tokenizer

        tok = load_tokenizer(m.tokenizer)
    from ..factory import build_model
    from ..presets import check_override_keys

    check_override_keys(m.overrides)
    model = build_model(m.preset, m.substrate or None, tokenizer=tok, seed=args.seed, font=args.font,
                        overrides=dict(m.overrides), substrate_file=args.substrate_file)
    out = export_model(model, args.out, tokenizer=tok, overwrite=args.overwrite)
    n = parameter_counts(model)
    c = model.config
    print(
        f"wrote {out}: preset {m.preset}, substrate {c.substrate_kind} x{c.n_embed} "
        f"({'frozen' if c.substrate_frozen else 'trainable'}), {n['total']:,} parameters "
        f"({n['trainable']:,} trainable), fingerprint {c.substrate_fingerprint}"
    )
    return 0


QUIT = (":q", ":quit")  # besides an empty line and the end of input, these end --interactive


def _streamer(tok, out, skip_prompt: bool):
    """A transformers ``TextStreamer`` that writes to ``out`` (stdout, or a StringIO in tests)."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return Streamer(tok, skip_prompt=skip_prompt)


def generation_kwargs(args) -> dict:
    """``model.generate`` settings from the command line (sampling as the model's config says unless
    --greedy or a sampling flag is given)."""
    gen = dict(max_new_tokens=args.max_new_tokens)
    if args.greedy:
        gen["do_sample"] = False
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            gen[name] = getattr(args, name)
            gen.setdefault("do_sample", True)
    return gen


def stream_one(model, tok, prompt: str, gen: dict, device, out, *, what: str = "the prompt") -> None:
    """Generate from one prompt, streaming the text to ``out`` as it is decoded."""
    import torch

    from ..evaluation.models import encode_text

    # a literal "</s>" or "[INST]" in a prompt is text, never a control token
    ids = torch.tensor([encode_text(tok, prompt, add_special_tokens=False)], device=device)
    if ids.shape[1] == 0:
        raise SubstrateError(f"{what} is empty after tokenisation; give some text")
    try:
        model.generate(ids, attention_mask=torch.ones_like(ids), streamer=_streamer(tok, out, skip_prompt=False),
                       pad_token_id=tok.pad_token_id, **gen)
    except (ValueError, IndexError, RuntimeError) as exc:  # e.g. a foreign model past its context
        raise SubstrateError(f"generation failed: {' '.join(str(exc).split())[:240]}") from None


def interactive(model, tok, gen: dict, device, stdin=None, out=None, err=None) -> int:
    """The prompt loop of ``generate --interactive``: one prompt a line from ``stdin``, each continuation
    streamed to ``out``; stops at the end of input, an empty line or ``:q`` (Ctrl-C while a continuation
    is streaming stops that continuation only). Returns the prompts answered.

    A prompt that cannot be generated from (not UTF-8, empty after tokenisation, a foreign model past
    its context) is reported on ``err`` in one line and the loop goes on."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    tty = bool(getattr(stdin, "isatty", lambda: False)())
    if tty:
        err.write("prompt per line; an empty line, :q or Ctrl-D ends\n")
    answered = 0
    while True:
        if tty:
            err.write("> ")
            err.flush()
        try:
            line = stdin.readline()
        except UnicodeDecodeError as exc:
            raise SubstrateError(f"the input is not valid UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r}); "
                                 "pass UTF-8 (e.g. iconv -t UTF-8)") from None
        if not line:
            break
        prompt = line.rstrip("\r\n")
        if not prompt.strip() or prompt.strip() in QUIT:
            break
        try:
            check_prompts([prompt])
            stream_one(model, tok, prompt, gen, device, out)
            answered += 1
        except SubstrateError as exc:
            err.write(f"error: {exc}\n")
        except KeyboardInterrupt:  # Ctrl-C stops this continuation, not the loop
            out.write("\n")
            err.write("(stopped)\n")
    return answered


def cmd_generate(args) -> int:
    if not args.prompt and not args.interactive:
        raise SubstrateError("pass --prompt TEXT (repeat for a batch) or --interactive for a prompt loop")
    if args.prompt and args.interactive:
        raise SubstrateError("--prompt and --interactive exclude each other; type the prompts into the loop")
    args.device = apply_runtime(args)  # --device and --threads, before anything is loaded
    import torch

    check_prompts(args.prompt or [])
    check_generation_args(args)
    tok = load_tokenizer_for(args.model, args.tokenizer, args.trust_remote_code)
    model = load_model_dir(args.model, args.device, args.trust_remote_code)
    if args.tokenizer is not None:
        from ..loading import check_model_tokenizer

        check_model_tokenizer(args.model, tok, other=f"--tokenizer {args.tokenizer}",
                              allow=args.allow_foreign_tokenizer, warn=lambda m: print(m, file=sys.stderr))
    if len(tok) > model.config.vocab_size:
        raise SubstrateError(
            f"tokenizer has {len(tok)} tokens but the model only {model.config.vocab_size}; use the model's own tokenizer"
        )
    torch.manual_seed(args.seed)
    gen = generation_kwargs(args)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if args.interactive:
        interactive(model, tok, gen, args.device)
        return 0
    prompts = args.prompt
    if len(prompts) == 1:
        stream_one(model, tok, prompts[0], gen, args.device, sys.stdout, what="--prompt")
        sys.stdout.flush()
        return 0
    try:
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False, split_special_tokens=True,
                    verbose=False).to(args.device)
        out = model.generate(**batch, pad_token_id=tok.pad_token_id, **gen)
    except (ValueError, IndexError, RuntimeError) as exc:  # e.g. a foreign model past its context
        raise SubstrateError(f"generation failed: {' '.join(str(exc).split())[:240]}") from None
    for i, row in enumerate(out):
        text = tok.decode(row[batch["input_ids"].shape[1] :].tolist(), skip_special_tokens=True)
        print(f"[{i}] {prompts[i]}{text}")
    return 0
