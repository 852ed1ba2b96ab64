"""The real 335M model (``paper-1024-bit``) end to end on a CPU, through the CLI (issue 22, part 2).

Every phase is the real ``substrate-lm`` command in its own subprocess, timed, with that process's
peak resident memory (``os.wait4``'s ``ru_maxrss`` of exactly that child):

1. ``corpus world``        the built-in semantic world (``--world-size``, default 2MB, English only)
2. ``tokenizer build``     the published bvv241-2-3 (65,536 ids) from its n-gram file (``--ngrams``)
3. ``data prepare``        the world's text -> uint16 token shards with that tokenizer
4. ``train`` reference     ``--config paper-1024-bit`` with local data, a short schedule
                           (``--steps``, default 20), bf16 autocast, compile off, no accumulation,
                           a loss record every step, validation only at the end
5. ``train`` killed        the same run in a second folder with a checkpoint every ``--kill-at``
                           steps; SIGKILLed as soon as ``checkpoints/index.json`` lists step
                           ``--kill-at`` (the trainer is then already in the next step)
6. ``train --resume``      ``train --config RUN --resume`` to the last step
7. bit-identity            the resumed run's logged losses of steps k+1..N must equal the reference
                           run's exactly (``==`` on the JSON floats, no tolerance); also the
                           validation loss at the end
8. ``export``              the resumed run -> a Hugging Face folder
9. model card              the Model_1024_BIT card's verification script, pointed at the local
                           export, in a fresh ``python -s`` process: AutoTokenizer and
                           AutoModelForCausalLM (``trust_remote_code=True``), config fields, table
                           shape (65536, 1024), ``'A'`` -> id 65, every entry exactly 0 or 1
10. ``eval``               the world's held-out questions (world-mc, world-short), both protocols,
                           ``--limit`` items each
11. ``analyze``            layer-wise probes of the world's entities on the export (few items)

The reference run is a full second training of the same length rather than a comparison against
recorded numbers: the reference must come from this code, this torch and this CPU (bf16 kernels
differ between CPUs), and at 20 steps it costs one more training.

    .venv/bin/python bench/bench_335m_cpu.py --out /tmp/b335 --md benchmarks/2026-12-06-335m-cpu.md
    .venv/bin/python bench/bench_335m_cpu.py --out /tmp/b335s --n-layer 1 --steps 4 --kill-at 2  # smoke

Writes ``results.json`` into ``--out`` and, with ``--md``, a markdown report. Exit status 0 only
when every phase ran, the resume was bit-identical and the card check passed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NGRAMS = Path("/work/shared/data/bvv241/ngrams-2-3.txt")

# The model card's verification script, with the hub id replaced by the local export folder and
# its printed highlights turned into checks. Runs in a fresh interpreter (python -s).
CARD_SCRIPT = r'''
import json, sys
import torch
from transformers import AutoTokenizer, AutoModelForCausalLM

repo_id = sys.argv[1]
expect = json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(repo_id)
model = AutoModelForCausalLM.from_pretrained(repo_id, trust_remote_code=True)
model.eval()
print("vocab_size:", tokenizer.vocab_size)
cfg = {k: getattr(model.config, k) for k in ["vocab_size", "n_embed", "d_model", "n_layer", "n_head", "scale"]}
print("config:", cfg)
W = model.token_embeddings.weight.detach().cpu()
print("token_embeddings.weight shape:", tuple(W.shape))
text = "A"
ids = tokenizer.encode(text, add_special_tokens=False)
tokens = tokenizer.convert_ids_to_tokens(ids)
print(f"text={text!r}")
print("ids:", ids)
print("tokens:", tokens)
tid = ids[0]
e1024 = W[tid]
print("first 32 of the embedding for token id", tid, ":", [int(v) for v in e1024[:32].tolist()])
uniq = torch.unique(e1024)
print("unique values in e1024", uniq.tolist())
is_binary = torch.all((e1024 == 0) | (e1024 == 1)).item()
print("is strictly binary (0/1):", is_binary)
is_binary_global = torch.all((W == 0) | (W == 1)).item()
num_non_binary = torch.numel(W) - torch.sum((W == 0) | (W == 1)).item()
print("is binary globally (0/1):", is_binary_global)
print("non-binary entries:", int(num_non_binary))
print("requires_grad:", model.token_embeddings.weight.requires_grad)
rows_unique = torch.unique(W, dim=0).shape[0]
print("distinct rows:", rows_unique)
checks = {
    "vocab_size": tokenizer.vocab_size == 65536,
    "config": cfg == expect,
    "shape": tuple(W.shape) == (65536, 1024),
    "A_is_65": ids == [65] and tokens == ["A"],
    "row_binary": bool(is_binary) and uniq.tolist() == [0.0, 1.0],
    "table_binary": bool(is_binary_global) and int(num_non_binary) == 0,
    "collision_free": rows_unique == W.shape[0],
}
print("CHECKS " + json.dumps(checks))
sys.exit(0 if all(checks.values()) else 1)
'''


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="work folder (world, tokenizer, data, runs, export, logs)")
    p.add_argument("--md", type=Path, help="write the markdown report here")
    p.add_argument("--ngrams", type=Path, default=DEFAULT_NGRAMS, help=f"bvv241-2-3 n-gram file (default {DEFAULT_NGRAMS})")
    p.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    p.add_argument("--kill-at", type=int, default=10, help="checkpoint step after which the run is killed (default 10)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--batch-size", type=int, default=1, help="sequences per step (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every phase (default 2)")
    p.add_argument("--world-size", default="2MB", help="size of the built-in world corpus (default 2MB)")
    p.add_argument("--limit", type=int, default=4, help="eval items per world benchmark (default 4)")
    p.add_argument("--analyze-items", type=int, default=60, help="analyze --max-items (default 60)")
    p.add_argument("--n-layer", type=int, default=0, help="override the preset's 16 layers (smoke runs only)")
    p.add_argument("--snapshot", action="store_true",
                   help="copy src/ into <out>/src first and run every phase from that copy (PYTHONPATH), so "
                        "edits to the working tree during the run cannot change it")
    p.add_argument("--skip-reference", action="store_true",
                   help="reuse <out>/runs/reference from an earlier invocation (same settings)")
    args = p.parse_args(argv)
    if not 0 < args.kill_at < args.steps:
        p.error("--kill-at must be between 1 and --steps - 1")
    if min(args.seq_len, args.batch_size, args.threads) < 1:
        p.error("--seq-len, --batch-size and --threads must be >= 1")
    if not args.ngrams.is_file():
        p.error(f"n-gram file {args.ngrams} not found: pass --ngrams PATH to the published ngrams-2-3.txt "
                "(bvv241-2-3's statistics file)")
    return args


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("substrate-lm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "substrate_lm.cli.main"]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


class Phase:
    """A subprocess with its wall time and peak RSS (``ru_maxrss`` of that child, via ``os.wait4``)."""

    def __init__(self, name: str, cmd: list[str], logdir: Path, env: dict):
        self.name, self.cmd = name, cmd
        self.log = logdir / f"{name}.log"
        self.load_before = loadavg()
        self.t0 = time.perf_counter()
        self.fh = open(self.log, "w", encoding="utf-8")
        self.fh.write("$ " + " ".join(cmd) + "\n")
        self.fh.flush()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}  (load {self.load_before})", flush=True)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.fh, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(logdir.parent))

    def running(self) -> bool:
        """Whether the child still runs; reaps it (keeping its rusage) when it has ended."""
        if self.proc.returncode is not None:
            return False
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped = (status, usage)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return False

    def wait(self) -> dict:
        if getattr(self, "_reaped", None):
            status, usage = self._reaped
        else:
            _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.fh.close()
        rec = {"phase": self.name, "rc": self.proc.returncode, "wall_s": round(time.perf_counter() - self.t0, 2),
               "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "user_s": round(usage.ru_utime, 1),
               "sys_s": round(usage.ru_stime, 1), "load_before": self.load_before, "load_after": loadavg(),
               "log": str(self.log)}
        print(f"    -> rc {rec['rc']}, {rec['wall_s']} s, peak RSS {rec['peak_rss_mib']} MiB "
              f"(load {rec['load_after']})", flush=True)
        return rec


def run_phase(name, cmd, logdir, env, results, *, check=True) -> dict:
    rec = Phase(name, cmd, logdir, env).wait()
    results["phases"].append(rec)
    if check and rec["rc"] != 0:
        tail = Path(rec["log"]).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise SystemExit(f"phase {name} failed (rc {rec['rc']}); last lines of {rec['log']}:\n" + "\n".join(tail))
    return rec


def read_log(run: Path) -> dict:
    """Train losses and step times by step, and the last validation record, from log.jsonl."""
    train, val = {}, None
    for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("event") == "train":
            train[r["step"]] = r
        elif r.get("event") == "val":
            val = r
    return {"train": train, "val": val}


def checkpoint_steps(run: Path) -> list[int]:
    """Steps of the complete checkpoints of a run: ``step-NNNNNNNN`` folders (a checkpoint is
    written into a hidden temp folder and renamed into place only when complete)."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and p.name[5:].isdigit())


def train_overrides(args, data_dir: Path, tok_dir: Path, run_dir: Path, ckpt_interval: int) -> list[str]:
    o = ["--run.dir", str(run_dir), "--threads", str(args.threads), "--device", "cpu",
         "--model.tokenizer", str(tok_dir),
         "--data.path", str(data_dir), "--data.sources", "[]",
         "--train.steps", str(args.steps), "--train.batch_size", str(args.batch_size),
         "--train.seq_len", str(args.seq_len), "--train.grad_accum", "1",
         "--train.warmup", str(max(1, args.steps // 4)), "--train.precision", "bf16", "--train.compile", "false",
         "--eval.interval", "0", "--eval.steps", "2",
         "--log.interval", "1", "--log.tensorboard", "false", "--log.progress", "false",
         "--log.sample_interval", "0", "--log.sample_tokens", "8",
         "--log.sample_prompts", '["Question: What is the capital of Japan?\\nAnswer:"]',
         "--checkpoint.interval", str(ckpt_interval), "--checkpoint.keep_last", "2"]
    if args.n_layer:
        o += ["--model.overrides", f"{{n_layer = {args.n_layer}}}"]
    return o


def step_stats(log: dict, first: int, last: int) -> dict:
    """Per-step wall time of steps first..last (log.interval 1, so each record is one step); the
    first step of a process includes its warm-up and is reported apart from the median."""
    recs = [log["train"][s] for s in range(first, last + 1) if s in log["train"]]
    if not recs:
        return {"n": 0, "first_step_s": None, "median_step_s": None, "min_step_s": None, "max_step_s": None,
                "tok_per_s_median": None, "mfu_median": None}
    steady = recs[1:] if len(recs) > 2 else recs

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else None

    times = [r["step_time"] for r in steady]
    mfus = [r["mfu"] for r in steady if r.get("mfu") is not None]
    return {"n": len(recs), "first_step_s": recs[0]["step_time"], "median_step_s": median(times),
            "min_step_s": min(times), "max_step_s": max(times),
            "tok_per_s_median": median([r["tok_per_s"] for r in steady]), "mfu_median": median(mfus)}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    S = cli()
    if args.snapshot:
        snap = out / "src"
        shutil.rmtree(snap, ignore_errors=True)
        shutil.copytree(REPO / "src", snap, ignore=shutil.ignore_patterns("__pycache__"))
        env["PYTHONPATH"] = str(snap) + os.pathsep + env.get("PYTHONPATH", "")
    import torch  # only for the version string and the CPU description

    cpu = "n/a"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0] if Path("/proc/cpuinfo").exists() else ""
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
               "amx": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags, "cores": os.cpu_count(),
               "torch": torch.__version__, "python": platform.python_version(),
               "args": {k: str(v) for k, v in vars(args).items()}, "load_start": loadavg(), "phases": []}
    del torch
    world, tok, data = out / "world", out / "tokenizer", out / "data"
    ref, run, export = out / "runs" / "reference", out / "runs" / "resumed", out / "export"
    t_all = time.perf_counter()

    if not (world / "world.json").exists():
        run_phase("corpus-world", S + ["corpus", "world", "--size", args.world_size, "--langs", "en",
                                       "--out", str(world), "--overwrite"], logs, env, results)
    if not (tok / "tokenizer_config.json").exists() and not (tok / "tokenizer.json").exists():
        run_phase("tokenizer-build", S + ["tokenizer", "build", "--ngrams", str(args.ngrams), "--out", str(tok),
                                          "--overwrite"], logs, env, results)
    if not (data / "meta.json").exists():
        run_phase("data-prepare", S + ["data", "prepare", "--source", f"world:{world}", "--tokenizer", str(tok),
                                       "--out", str(data), "--no-progress", "--overwrite"], logs, env, results)

    # the reference: an uninterrupted run of the same length and settings (checkpoint only at the end)
    if not args.skip_reference:
        shutil.rmtree(ref, ignore_errors=True)
        run_phase("train-reference", S + ["train", "--config", "paper-1024-bit"]
                  + train_overrides(args, data, tok, ref, 0), logs, env, results)

    # the same run with a checkpoint every --kill-at steps, SIGKILLed once step kill-at is saved
    shutil.rmtree(run, ignore_errors=True)
    ph = Phase("train-killed", S + ["train", "--config", "paper-1024-bit"]
               + train_overrides(args, data, tok, run, args.kill_at), logs, env)
    killed_at = None
    while ph.running():
        if args.kill_at in checkpoint_steps(run):
            os.kill(ph.proc.pid, signal.SIGKILL)
            killed_at = time.perf_counter() - ph.t0
            break
        time.sleep(0.05)
    rec = ph.wait()
    rec["killed_after_s"] = round(killed_at, 2) if killed_at is not None else None
    results["phases"].append(rec)
    if killed_at is None:
        raise SystemExit(f"the run ended (rc {rec['rc']}) before checkpoint {args.kill_at} appeared; see {rec['log']}")
    killed_log = read_log(run)
    results["kill"] = {"signal": "SIGKILL", "checkpoints_at_kill": checkpoint_steps(run),
                       "last_logged_step_before_kill": max(killed_log["train"]) if killed_log["train"] else None}

    run_phase("train-resume", S + ["train", "--config", str(run), "--resume", "--threads", str(args.threads),
                                   "--device", "cpu"], logs, env, results)

    ref_log, res_log = read_log(ref), read_log(run)
    k, n = args.kill_at, args.steps
    resumed = {s: res_log["train"][s]["loss"] for s in range(k + 1, n + 1) if s in res_log["train"]}
    reference = {s: ref_log["train"][s]["loss"] for s in range(k + 1, n + 1) if s in ref_log["train"]}
    before = {s: (res_log["train"][s]["loss"], ref_log["train"][s]["loss"]) for s in range(1, k + 1)
              if s in res_log["train"] and s in ref_log["train"]}
    mismatch = [s for s in range(k + 1, n + 1) if resumed.get(s) != reference.get(s) or s not in resumed]
    results["resume"] = {
        "kill_at": k, "steps": n, "compared_steps": f"{k + 1}..{n}",
        "bit_identical": not mismatch and len(resumed) == n - k,
        "mismatched_steps": mismatch,
        "steps_1_to_k_identical": all(a == b for a, b in before.values()) and len(before) == k,
        "val_loss_reference": (ref_log["val"] or {}).get("val_loss"),
        "val_loss_resumed": (res_log["val"] or {}).get("val_loss"),
        "losses_reference": {str(s): v for s, v in reference.items()},
        "losses_resumed": {str(s): v for s, v in resumed.items()},
        "first_loss": ref_log["train"].get(1, {}).get("loss"),
        "grad_norms_and_lrs_identical": all(
            (res_log["train"].get(s, {}).get("grad_norm"), res_log["train"].get(s, {}).get("lr"))
            == (ref_log["train"].get(s, {}).get("grad_norm"), ref_log["train"].get(s, {}).get("lr"))
            for s in range(k + 1, n + 1)),
    }
    results["resume"]["val_identical"] = (results["resume"]["val_loss_reference"]
                                          == results["resume"]["val_loss_resumed"] is not None)
    results["speed"] = {"reference": step_stats(ref_log, 1, n), "resumed": step_stats(res_log, k + 1, n),
                        "killed_run": step_stats(killed_log, 1, max(killed_log["train"] or [1]))}
    print(f"resume bit-identical over steps {k + 1}..{n}: {results['resume']['bit_identical']}"
          + (f" (mismatch at {mismatch})" if mismatch else ""), flush=True)

    shutil.rmtree(export, ignore_errors=True)
    run_phase("export", S + ["export", str(run), "--out", str(export)], logs, env, results)

    expect = {"vocab_size": 65536, "n_embed": 1024, "d_model": 1024, "n_layer": args.n_layer or 16,
              "n_head": 32, "scale": 1}
    (out / "verify_card.py").write_text(CARD_SCRIPT, encoding="utf-8")
    card = run_phase("card-verify", [sys.executable, "-s", str(out / "verify_card.py"), str(export),
                                     json.dumps(expect)], logs, env, results, check=False)
    text = Path(card["log"]).read_text(encoding="utf-8", errors="replace")
    checks = next((json.loads(line[7:]) for line in text.splitlines() if line.startswith("CHECKS ")), None)
    results["card"] = {"passed": card["rc"] == 0 and bool(checks) and all(checks.values()), "checks": checks,
                       "output": [line for line in text.splitlines()[1:] if not line.startswith("CHECKS ")][-20:]}

    ev_out, an_out = out / "eval", out / "analyze"
    shutil.rmtree(ev_out, ignore_errors=True)
    shutil.rmtree(an_out, ignore_errors=True)
    run_phase("eval", S + ["eval", "--model", str(export), "--bench", "world-mc,world-short", "--world", str(world),
                           "--protocol", "both", "--n-runs", "1", "--limit", str(args.limit), "--greedy",
                           "--device", "cpu", "--threads", str(args.threads), "--batch-size", "2", "--no-charts",
                           "--out", str(ev_out)], logs, env, results, check=False)
    ev_json = ev_out / "results.json"
    results["eval"] = json.loads(ev_json.read_text(encoding="utf-8")) if ev_json.exists() else None
    run_phase("analyze", S + ["analyze", "--model", str(export), "--world", str(world), "--out", str(an_out),
                              "--max-items", str(args.analyze_items), "--per-entity", "2", "--folds", "2",
                              "--maps", "none", "--batch-size", "4", "--device", "cpu",
                              "--threads", str(args.threads), "--quiet"], logs, env, results, check=False)
    an_json = an_out / "metrics.json"
    results["analyze"] = json.loads(an_json.read_text(encoding="utf-8")) if an_json.exists() else None
    results["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    results["load_end"] = loadavg()
    results["disk_mib"] = {p.name: round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20, 1)
                           for p in (ref, run, export) if p.exists()}

    (out / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(json.dumps({k: results[k] for k in ("resume", "card", "speed")}, indent=1, default=str)[:4000])
    print(f"results: {out / 'results.json'}")
    ok = results["resume"]["bit_identical"] and results["card"]["passed"] and all(
        p["rc"] == 0 or p["phase"] == "train-killed" for p in results["phases"])
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(results), encoding="utf-8")
        print(f"report: {args.md}")
    return 0 if ok else 1


def _fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def markdown(r: dict) -> str:
    a = r["args"]
    lines = [f"# The 335M Model_1024_BIT end to end on this CPU ({r['date'][:10]})", "",
             "Script: [`bench/bench_335m_cpu.py`](../bench/bench_335m_cpu.py), every phase the real CLI in its own "
             "process; peak RSS is that process's `ru_maxrss` (`os.wait4`).", "",
             f"- CPU: {r['cpu']}, {r['cores']} cores visible, AMX {'yes' if r['amx'] else 'no'} "
             f"(avx512_bf16 {'yes' if r['avx512_bf16'] else 'no'}); torch {r['torch']}, python {r['python']}",
             f"- settings: `paper-1024-bit`, {a['steps']} steps, micro-batch {a['batch_size']} x {a['seq_len']} tokens, "
             f"grad_accum 1, bf16 autocast, compile off, {a['threads']} threads; world {a['world_size']} (en); "
             f"kill after checkpoint {a['kill_at']}",
             f"- load average (1/5/15 min) at start {r['load_start']}, at end {r['load_end']}; total {r['total_wall_s']} s", "",
             "| phase | rc | wall s | peak RSS MiB | user s | load before -> after |", "|---|---|---|---|---|---|"]
    for p in r["phases"]:
        extra = f" (SIGKILL at {p['killed_after_s']} s)" if p.get("killed_after_s") is not None else ""
        lines.append(f"| {p['phase']}{extra} | {p['rc']} | {p['wall_s']} | {p['peak_rss_mib']:,.0f} | {p['user_s']} | "
                     f"{p['load_before']} -> {p['load_after']} |")
    lines += ["", "| training | first step s | median step s (after the first) | min-max s | tokens/s | MFU |",
              "|---|---|---|---|---|---|"]
    for name, s in r["speed"].items():
        lines.append(f"| {name} | {_fmt(s['first_step_s'])} | {_fmt(s['median_step_s'])} | "
                     f"{_fmt(s['min_step_s'])}-{_fmt(s['max_step_s'])} | {_fmt(s['tok_per_s_median'], '.1f')} | "
                     f"{_fmt(None if s['mfu_median'] is None else 100 * s['mfu_median'], '.2f')}% |")
    rs = r["resume"]
    lines += ["", f"**Resume:** bit-identical over steps {rs['compared_steps']}: **{rs['bit_identical']}** "
              f"(steps 1..{rs['kill_at']} identical too: {rs['steps_1_to_k_identical']}; final validation loss "
              f"{rs['val_loss_reference']} vs {rs['val_loss_resumed']}, identical: {rs['val_identical']}; "
              f"gradient norms and learning rates identical: {rs.get('grad_norms_and_lrs_identical')}). "
              f"Checkpoints when killed: {r['kill']['checkpoints_at_kill']}, last logged step before the kill: "
              f"{r['kill']['last_logged_step_before_kill']}.", "",
              "| step | reference loss | resumed loss |", "|---|---|---|"]
    for s, v in rs["losses_reference"].items():
        lines.append(f"| {s} | {v!r} | {rs['losses_resumed'].get(s)!r} |")
    c = r["card"]
    lines += ["", f"**Model card script on the export:** passed **{c['passed']}**; checks {c['checks']}", "", "```"]
    lines += [line if len(line) < 200 else line[:200] + " ..." for line in c["output"]]
    lines += ["```", ""]
    lines += eval_lines(r.get("eval")) + [""] + analyze_lines(r.get("analyze"))
    return "\n".join(lines) + "\n"


def eval_lines(ev: dict | None) -> list[str]:
    if not ev:
        return ["**eval:** no results.json (see the phase's log)."]
    out = ["**eval** (`--protocol both --n-runs 1 --greedy --limit N`, the world's held-out questions):", "",
           "| benchmark | items | paper protocol (generation), % | log-likelihood accuracy, % | seconds (paper / loglik) |",
           "|---|---|---|---|---|"]
    for model in ev.get("models", {}).values():
        for bench, res in model.get("results", {}).items():
            paper, ll = res.get("paper", {}), res.get("loglik", {})
            secs = model.get("seconds", {}).get(bench, {})
            out.append(f"| {bench} | {paper.get('n_items', ll.get('n_items'))} | {_fmt(paper.get('mean'), '.2f')} | "
                       f"{_fmt(ll.get('acc'), '.2f')} | {_fmt(secs.get('paper'), '.1f')} / {_fmt(secs.get('loglik'), '.1f')} |")
    return out


def analyze_lines(an: dict | None) -> list[str]:
    if not an:
        return ["**analyze:** no metrics.json (see the phase's log)."]
    pr = an.get("probe", {})
    acc = ", ".join(f"{layer}: {a:.2f}" for layer, a in zip(an.get("layers", []), pr.get("accuracy", [])))
    return [f"**analyze** ({an.get('items', {}).get('n')} probe items of {an.get('items', {}).get('n_entities')} "
            f"entities, {pr.get('n_splits')}-fold CV grouped by entity, {pr.get('n_classes')} classes, chance "
            f"{_fmt(pr.get('chance_majority'), '.2f')}; {_fmt(an.get('seconds'), '.1f')} s inside the command): "
            f"probe accuracy by layer {acc}. After a schedule this short "
            "(see the settings) these numbers show that the path runs on the export, not that anything was learned."]


if __name__ == "__main__":
    sys.exit(main())
