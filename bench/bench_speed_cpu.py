"""CPU speed, side by side: ours vs GPT-NeoX (transformers) vs nanoGPT (its published model.py).

One process, one torch thread by default, the configurations taking turns (A B C A B C ...) so
load from other jobs hits all of them alike; medians and ratios are printed. Shape (issue 16):
4 layers, 4 heads, d_model 256, context 256, vocab 65,536, untied head for ours and GPT-NeoX (the
same weights, ``substrate_lm.convert.to_gpt_neox``; frozen input table in both), nanoGPT as
published (tied head, learned positions, its ``configure_optimizers``).

* train step = forward + backward + gradient clipping + AdamW, batch 8 x 256; ours in fp32 and
  under bf16 autocast with the trainer's loss (``training.causal_lm_loss``, chunked) and
  ``training.build_optimizer``; GPT-NeoX with full logits + cross-entropy and the same optimizer;
  nanoGPT with ``model(x, y)`` and its own optimizer; losses of a learnable synthetic corpus are
  recorded so the curves can be compared (same data for everyone, ours fp32 and bf16 from the
  same initial weights);
* generation: greedy, KV cache where the model has one (nanoGPT recomputes, as published), batch
  1 (16-token prompt) and batch 8 (left-padded prompts of 8..16 tokens), at the default settings
  (``model.generate(ids, max_new_tokens=n, do_sample=False)``); ours also through HF's loop;
* peak memory: peak RSS growth of one training step, a fresh subprocess per configuration.

nanoGPT is never vendored: ``--nanogpt-source`` names its ``model.py`` (a path or a URL; default
the file on karpathy/nanoGPT's master branch, which is archived, downloaded once into
``~/.cache/substrate-lm/``; the sha256 of the file measured is printed)
and the module is imported from that file at run time. Without it the nanoGPT column is skipped
with a note.

    .venv/bin/python bench/bench_speed_cpu.py [--nanogpt-source PATH_OR_URL] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench_train import cpu_name, peak_rss_bytes, reset_peak_rss, rss_bytes  # same folder

# nanoGPT's published model.py (its master branch; nanoGPT is archived). The sha256 of the file used
# is printed with every result, so a run says exactly which source it measured.
NANOGPT_URL = "https://raw.githubusercontent.com/karpathy/nanoGPT/master/model.py"
CACHE = Path.home() / ".cache" / "substrate-lm" / "nanogpt"
SHAPE = dict(vocab=65536, d_model=256, n_layer=4, n_head=4, block=256)


def load_nanogpt(source: str):
    """nanoGPT's ``model`` module imported from ``source`` (path or URL), or ``(None, why)``."""
    path = Path(source).expanduser()
    if "://" in source:
        path = CACHE / hashlib.sha256(source.encode()).hexdigest()[:16] / "model.py"
        if not path.is_file():
            try:
                with urllib.request.urlopen(source, timeout=20) as resp:
                    text = resp.read()
            except OSError as exc:
                return None, f"nanoGPT skipped: could not download {source} ({type(exc).__name__}: {exc})"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(text)
            os.replace(tmp, path)
    if not path.is_file():
        return None, f"nanoGPT skipped: {source} is not a file; pass --nanogpt-source PATH_OR_URL"
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    mod = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(mod)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return mod, f"nanoGPT model.py from {source} (sha256 {digest})"


# ----------------------------------------------------------------------------------------------
# models


def build_ours_and_neox():
    import torch

    from substrate_lm.convert import to_gpt_neox
    from substrate_lm.modeling import SubstrateConfig, SubstrateForCausalLM

    torch.manual_seed(0)
    s = SHAPE
    ours = SubstrateForCausalLM(SubstrateConfig(
        vocab_size=s["vocab"], n_embed=s["d_model"], d_model=s["d_model"], n_layer=s["n_layer"],
        n_head=s["n_head"], block_size=s["block"]))
    ours.set_substrate((torch.rand(s["vocab"], s["d_model"], generator=torch.Generator().manual_seed(1)) > 0.5).float(),
                       kind="bits")
    neox = to_gpt_neox(ours)
    neox.gpt_neox.embed_in.weight.requires_grad_(False)  # frozen like ours: compare implementations
    return ours, neox


def build_nanogpt(mod):
    import torch

    torch.manual_seed(0)
    s = SHAPE
    cfg = mod.GPTConfig(block_size=s["block"], vocab_size=s["vocab"], n_layer=s["n_layer"], n_head=s["n_head"],
                        n_embd=s["d_model"], dropout=0.0, bias=False)
    with contextlib.redirect_stdout(io.StringIO()):
        return mod.GPT(cfg)


def batches(n: int, batch: int, seq: int, vocab: int):
    """A learnable synthetic corpus: a noisy bigram chain over 1,024 token ids (same for everyone)."""
    import torch

    g = torch.Generator().manual_seed(123)
    succ = torch.randint(0, vocab, (vocab,), generator=g)  # each token's usual successor
    out = []
    for _ in range(n):
        x = torch.empty(batch, seq + 1, dtype=torch.long)
        x[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        noise = torch.rand(batch, seq, generator=g) < 0.2
        rnd = torch.randint(0, vocab, (batch, seq), generator=g)
        for t in range(seq):
            x[:, t + 1] = torch.where(noise[:, t], rnd[:, t], succ[x[:, t]])
        out.append((x[:, :-1].contiguous(), x[:, 1:].contiguous()))
    return out


class Trainer:
    """One configuration's step: loss, backward, clipping, optimizer."""

    def __init__(self, kind: str, precision: str, model, lr: float = 1e-3):
        import torch

        from substrate_lm.training import build_optimizer

        self.kind, self.bf16, self.model = kind, precision == "bf16", model.train()
        self.params = [p for p in model.parameters() if p.requires_grad]
        if kind == "nanogpt":
            with contextlib.redirect_stdout(io.StringIO()):
                self.opt = model.configure_optimizers(0.1, lr, (0.9, 0.95), "cpu")
        else:
            self.opt = build_optimizer(model, lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
        self.times: list[float] = []
        self.losses: list[float] = []
        self.torch = torch

    def step(self, x, y, record: bool) -> None:
        import torch.nn.functional as F

        from substrate_lm.training import causal_lm_loss

        torch = self.torch
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if self.kind == "ours":
                loss = causal_lm_loss(self.model, x, y)
            elif self.kind == "neox":
                logits = self.model(input_ids=x, use_cache=False).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            else:
                loss = self.model(x, y)[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if record:
            self.times.append(time.perf_counter() - t0)
        self.losses.append(value)


def measure_training(args, nanogpt) -> dict:
    import copy

    ours, neox = build_ours_and_neox()
    configs = [("ours", "bf16", copy.deepcopy(ours)), ("ours", "fp32", ours),
               ("neox", "fp32", neox), ("neox", "bf16", copy.deepcopy(neox))]
    if nanogpt is not None:
        configs += [("nanogpt", "fp32", build_nanogpt(nanogpt)), ("nanogpt", "bf16", build_nanogpt(nanogpt))]
    runners = [Trainer(k, p, m) for k, p, m in configs]
    data = batches(args.warmup + args.steps, args.batch, args.seq, SHAPE["vocab"])
    for i, (x, y) in enumerate(data):
        for r in runners:  # round robin: load spikes hit every configuration alike
            r.step(x, y, record=i >= args.warmup)
    return {f"{r.kind} {'bf16' if r.bf16 else 'fp32'}": {"step_s": statistics.median(r.times), "losses": r.losses}
            for r in runners}


# ----------------------------------------------------------------------------------------------
# generation


def measure_generation(args, nanogpt) -> dict:
    import torch

    ours, neox = build_ours_and_neox()
    ours.eval()
    neox.eval()
    g = torch.Generator().manual_seed(7)
    prompt = torch.randint(1, SHAPE["vocab"], (1, 16), generator=g)
    lens = [8 + (i * 3) % 9 for i in range(args.gen_batch)]
    width = max(lens)
    bids = torch.zeros((args.gen_batch, width), dtype=torch.long)
    bmask = torch.zeros_like(bids)
    for r, n in enumerate(lens):  # left padding
        bids[r, width - n:] = torch.randint(1, SHAPE["vocab"], (n,), generator=g)
        bmask[r, width - n:] = 1
    n = args.new_tokens
    kw = dict(max_new_tokens=n, do_sample=False, pad_token_id=0)
    nano = build_nanogpt(nanogpt).eval() if nanogpt is not None else None

    def ours_hf():
        ours.fast_greedy = False
        try:
            return ours.generate(prompt, **kw)
        finally:
            ours.fast_greedy = True

    cases = {
        "ours b1": (lambda: ours.generate(prompt, **kw), n),
        "neox b1": (lambda: neox.generate(prompt, **kw), n),
        "ours b1 (HF loop)": (ours_hf, n),
        f"ours b{args.gen_batch}": (lambda: ours.generate(bids, attention_mask=bmask, **kw), n * args.gen_batch),
        f"neox b{args.gen_batch}": (lambda: neox.generate(bids, attention_mask=bmask, **kw), n * args.gen_batch),
    }
    if nano is not None:
        cases["nanogpt b1 (no KV cache)"] = (lambda: nano.generate(prompt, n, top_k=1), n)
    times = {k: [] for k in cases}
    outs = {}
    with torch.no_grad():
        for k, (f, _) in cases.items():
            outs[k] = f()  # warm-up (and the ours screen is built here)
        for _ in range(args.gen_repeats):
            for k, (f, _) in cases.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    res = {k: {"tok_s": cases[k][1] / statistics.median(v)} for k, v in times.items()}
    res["_same_tokens"] = {
        "ours fast == ours HF loop (b1)": bool(torch.equal(outs["ours b1"], outs["ours b1 (HF loop)"])),
        "ours == neox (b1)": bool(torch.equal(outs["ours b1"], outs["neox b1"])),
        f"ours == neox (b{args.gen_batch})": bool(torch.equal(outs[f"ours b{args.gen_batch}"],
                                                              outs[f"neox b{args.gen_batch}"])),
    }
    return res


# ----------------------------------------------------------------------------------------------
# memory: one training step in a fresh process


def memory_worker(kind: str, precision: str, args) -> float:
    import gc

    import torch

    torch.set_num_threads(args.threads)
    nanogpt = load_nanogpt(args.nanogpt_source)[0] if kind == "nanogpt" else None
    if kind == "nanogpt":
        model = build_nanogpt(nanogpt)
    else:
        ours, neox = build_ours_and_neox()
        model = ours if kind == "ours" else neox
        del ours, neox
    r = Trainer(kind, precision, model)
    x, y = batches(1, args.batch, args.seq, SHAPE["vocab"])[0]
    r.step(x, y, record=False)  # optimizer state and allocator warm
    gc.collect()
    if not reset_peak_rss():
        raise OSError("cannot reset the peak RSS (/proc/self/clear_refs); Linux only")
    base = rss_bytes()
    r.step(x, y, record=False)
    return peak_rss_bytes() - base


def measure_memory(args, kinds) -> dict:
    out = {}
    for kind, prec in kinds:
        cmd = [sys.executable, __file__, "--memory-worker", kind, prec, "--nanogpt-source", args.nanogpt_source,
               "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        out[f"{kind} {prec}"] = json.loads(line[0][7:]) if line else None
        if not line:
            print(f"memory {kind} {prec} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt-source", default=NANOGPT_URL, help="nanoGPT model.py: a path or a URL")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared box)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--gen-repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["train", "generate", "memory"])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--memory-worker", nargs=2, metavar=("MODEL", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print("RESULT " + json.dumps(memory_worker(*args.memory_worker, args)))
        return
    nanogpt, note = load_nanogpt(args.nanogpt_source)
    info = {"note": note, "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "load_start": os.getloadavg(), "shape": SHAPE,
            "batch": args.batch, "seq": args.seq}
    print(note, flush=True)
    t0 = time.time()
    if "train" not in args.skip:
        tr = info["train"] = measure_training(args, nanogpt)
        base = tr.get("nanogpt fp32")
        for k, v in tr.items():
            ratios = f"x{tr['neox fp32']['step_s'] / v['step_s']:.2f} vs neox fp32"
            ratios += f", x{tr['neox bf16']['step_s'] / v['step_s']:.2f} vs neox bf16"
            if base:
                ratios += f", x{base['step_s'] / v['step_s']:.2f} vs nanogpt fp32"
                ratios += f", x{tr['nanogpt bf16']['step_s'] / v['step_s']:.2f} vs nanogpt bf16"
            print(f"train {k:13s} {v['step_s']:.3f} s/step ({ratios}); loss {v['losses'][0]:.3f} -> "
                  f"{v['losses'][-1]:.3f}", flush=True)
        a, b = tr["ours fp32"]["losses"], tr["ours bf16"]["losses"]
        print(f"loss curve ours bf16 vs fp32: max |diff| {max(abs(p - q) for p, q in zip(a, b)):.4f}", flush=True)
    if "generate" not in args.skip:
        ge = info["generate"] = measure_generation(args, nanogpt)
        for k, v in ge.items():
            if k.startswith("_"):
                continue
            ref = ge["neox b1"] if "b1" in k else ge[f"neox b{args.gen_batch}"]
            print(f"generate {k:26s} {v['tok_s']:8.1f} tok/s (x{v['tok_s'] / ref['tok_s']:.2f} vs neox)", flush=True)
        print(f"same tokens: {ge['_same_tokens']}", flush=True)
    if "memory" not in args.skip:
        kinds = [("ours", "bf16"), ("ours", "fp32"), ("neox", "fp32"), ("neox", "bf16")]
        if nanogpt is not None:
            kinds += [("nanogpt", "fp32"), ("nanogpt", "bf16")]
        mem = info["memory"] = measure_memory(args, kinds)
        for k, v in mem.items():
            if v is None:
                continue
            ratios = f"x{v / mem['neox fp32']:.2f} of neox fp32" if mem.get("neox fp32") else ""
            if mem.get("nanogpt fp32"):
                ratios += f", x{v / mem['nanogpt fp32']:.2f} of nanogpt fp32"
            print(f"memory {k:13s} {v / 2**20:7.0f} MiB peak step RSS growth ({ratios})", flush=True)
    info["load_end"] = os.getloadavg()
    info["seconds"] = time.time() - t0
    print(f"load average {info['load_start'][0]:.2f} -> {info['load_end'][0]:.2f}; {info['seconds']:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
