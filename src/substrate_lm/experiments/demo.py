"""``substrate-lm demo``: the papers' central experiment on a laptop, with one HTML report.

Same backbone, same data, same seed and steps; only the frozen token-embedding table differs:

* random collision-free bits (the papers' 1024-BIT model, at the demo's width d_model),
* Unifont glyph bitmaps -> PCA -> unit rows (UNI_GLYPH; when GNU Unifont is installed),
* the token id's own 16 bits, widened by repeat_interleave (16-BIT),
* a trainable table (the unfrozen baseline).

Pipeline (each step a folder the next reads, so a rerun resumes and skips what is done):
built-in semantic world -> its bvv241-layout tokenizer -> uint16 shards -> one model per substrate
(trained by the project trainer) -> export -> validation loss / bits per character and the world's
held-out questions under both protocols -> layer-wise analysis (linear probes of the entities'
categories with entity-held-out folds, CKA against the trainable baseline) -> ``report.html``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import SubstrateError
from .ablate import AblationConfig, run_ablation

# name shown in the report -> substrate spec
FULL_SUBSTRATES = {
    "random bits (1024-BIT)": "bits",
    "uni-glyph (UNI_GLYPH)": "glyph",
    "token-id 16 bits (16-BIT)": "16-bit",
    "trainable (UNFROZEN)": "unfrozen",
}
BASELINE = "unfrozen"


@dataclass
class DemoSettings:
    """Sizes of one demo run; ``quick()`` and ``full()`` are the two built-in ones."""

    world_size: str
    d_model: int
    n_layer: int
    n_head: int
    block_size: int
    steps: int
    batch_size: int
    lr: float
    warmup: int
    precision: str
    eval_interval: int
    n_runs: int
    limit: int
    analysis_items: int
    maps: tuple[str, ...]
    substrates: dict[str, str] = field(default_factory=lambda: dict(FULL_SUBSTRATES))
    prompts: tuple[str, ...] = ("Question: Where does ", "Вопрос: ", "问题：")

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(
            world_size="200KB", d_model=64, n_layer=2, n_head=4, block_size=64, steps=30, batch_size=8,
            lr=3e-3, warmup=5, precision="fp32", eval_interval=15, n_runs=2, limit=16, analysis_items=200,
            maps=("pca",),
        )

    @classmethod
    def full(cls) -> "DemoSettings":
        return cls(
            world_size="1MB", d_model=64, n_layer=4, n_head=4, block_size=128, steps=200, batch_size=16,
            lr=2e-3, warmup=20, precision="bf16", eval_interval=50, n_runs=5, limit=100, analysis_items=900,
            maps=("pca", "tsne"),
        )


def unifont_available(font: str | None = None) -> bool:
    candidates = [font] if font else ["/usr/share/fonts/opentype/unifont/unifont.otf", "/usr/share/unifont/unifont.hex"]
    return any(c and os.path.isfile(c) for c in candidates)


def demo_ablation(settings: DemoSettings, out: Path, seed: int) -> AblationConfig:
    """The demo as an ablation grid: one preset, one corpus, one seed, several substrates."""
    s = settings
    return AblationConfig(
        out=str(out),
        recipe="tiny",
        substrates=list(s.substrates.values()),
        seeds=[seed],
        presets=["tiny"],
        corpora=[f"world:{s.world_size}"],
        benches=["world-mc", "world-short"],
        protocol="both",
        n_runs=s.n_runs,
        limit=s.limit,
        data_seed=seed,
        overrides={
            "model.overrides.d_model": s.d_model,
            "model.overrides.n_layer": s.n_layer,
            "model.overrides.n_head": s.n_head,
            "model.overrides.block_size": s.block_size,
            "train.steps": s.steps,
            "train.batch_size": s.batch_size,
            "train.seq_len": s.block_size,
            "train.lr": s.lr,
            "train.min_lr": s.lr / 10,
            "train.warmup": s.warmup,
            "train.precision": s.precision,
            "eval.interval": s.eval_interval,
            "eval.steps": 8,
            "log.interval": max(1, s.steps // 20),
            "log.sample_interval": 0,
            "log.tensorboard": False,
            "checkpoint.interval": max(10, s.steps // 2),
            "checkpoint.keep_last": 1,
        },
    )


def generations(model, tokenizer, prompts, max_new_tokens: int = 32) -> list[dict]:
    """Greedy continuations of a few prompts (what the model learned to say)."""
    import torch

    out = []
    for p in prompts:
        ids = torch.tensor([tokenizer.encode(p, add_special_tokens=False)])
        with torch.no_grad():
            g = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append({"prompt": p, "continuation": tokenizer.decode(g[0, ids.shape[1] :].tolist(), skip_special_tokens=True)})
    return out


def run_demo(
    out_dir: str | os.PathLike = "runs/demo",
    quick: bool = False,
    seed: int = 0,
    font: str | None = None,
    log: Callable[[str], None] = print,
    overrides: dict | None = None,
    substrates: list[str] | None = None,
) -> Path:
    """Run the demo (resuming what is done) and write ``<out_dir>/report.html``; returns its path.

    Args:
        overrides: :class:`DemoSettings` fields to change (``{"steps": 600, "d_model": 64}``).
        substrates: keep only these specs (``["bits", "unfrozen"]``); the trainable baseline is
            always kept, since the CKA comparison is made against it.
    """
    import torch

    from ..analysis import analyze
    from .report import write_demo_report

    t0 = time.time()
    out = Path(out_dir)
    settings = DemoSettings.quick() if quick else DemoSettings.full()
    for key, value in (overrides or {}).items():
        if key not in DemoSettings.__dataclass_fields__ or key in ("substrates", "prompts"):
            raise SubstrateError(f"unknown demo setting {key!r}; valid: {', '.join(sorted(vars(settings)))}")
        setattr(settings, key, type(getattr(settings, key))(value))
    if substrates:
        unknown = set(substrates) - set(settings.substrates.values())
        if unknown:
            raise SubstrateError(f"unknown demo substrate(s) {', '.join(sorted(unknown))}; choose from "
                                 f"{', '.join(settings.substrates.values())}")
        settings.substrates = {k: v for k, v in settings.substrates.items() if v in substrates or v == BASELINE}
    if not unifont_available(font):
        settings.substrates = {k: v for k, v in settings.substrates.items() if v != "glyph"}
        log("note: GNU Unifont not found (apt-get install unifont fonts-unifont); skipping the uni-glyph model")
    threads = torch.get_num_threads()
    log(f"substrate-lm demo ({'quick' if quick else 'full'}): {len(settings.substrates)} models, "
        f"{settings.steps} steps each, world {settings.world_size}, {threads} CPU threads -> {out}")
    ab = run_ablation(demo_ablation(settings, out, seed), log=log, keep_models=True)
    corpus = next(iter(ab["corpora"].values()))
    by_spec = {r["cell"]["substrate"]: r for r in ab["results"]}

    # models of finished cells that were skipped on a rerun are reloaded from their export
    models = {}
    for name, spec in settings.substrates.items():
        r = by_spec[spec]
        if "_model" in r:
            models[name] = (r["_model"], r["_tokenizer"])
        else:
            from ..cli.model_cmds import load_model_dir, load_tokenizer_for

            models[name] = (load_model_dir(r["model_dir"]), load_tokenizer_for(r["model_dir"]))

    baseline_name = next(n for n, s in settings.substrates.items() if s == BASELINE)
    analyses = {}
    for name, spec in settings.substrates.items():
        adir = out / "analysis" / spec
        done = adir / "metrics.json"
        if done.is_file():
            analyses[name] = json.loads(done.read_text(encoding="utf-8"))
            continue
        log(f"analysing {name}: layer-wise probes, neighbour purity, CKA")
        model, tok = models[name]
        compare = None if spec == BASELINE else models[baseline_name]
        analyses[name] = analyze(
            model,
            tokenizer=tok,
            world_dir=corpus.world_dir,
            compare=compare[0] if compare else None,
            compare_tokenizer=compare[1] if compare else None,
            compare_name=baseline_name if compare else None,
            out_dir=adir,
            name=name,
            max_items=settings.analysis_items,
            seed=seed,
            maps=settings.maps,
            num_threads=1,
        )

    gens = {}
    for name, (model, tok) in models.items():
        gens[name] = generations(model, tok, settings.prompts, max_new_tokens=24 if quick else 40)

    report = write_demo_report(
        out,
        settings=settings,
        results={name: by_spec[spec] for name, spec in settings.substrates.items()},
        analyses=analyses,
        generations=gens,
        seconds=time.time() - t0,
        quick=quick,
    )
    log(f"done in {time.time() - t0:.0f} s; report: {report.resolve()}")
    return report

