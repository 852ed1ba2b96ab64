"""``substrate-lm demo``: the papers' central experiment on a laptop, with statistics and one HTML report.

Same backbone, same data, same steps and schedule; only the token-embedding table differs:

* random collision-free bits (the papers' 1024-BIT model, at the demo's width d_model),
* Unifont glyph bitmaps -> PCA -> unit rows (UNI_GLYPH; when GNU Unifont is installed),
* the token id's own 16 bits, widened by repeat_interleave (16-BIT),
* a trainable table (the unfrozen baseline).

Every model is trained on several seeds (the seed sets the backbone init and the data order; the
world is the same), so each figure is a mean with a 95% confidence interval and every finding in
the report is computed from that run's numbers (:mod:`.findings`).

The world is scaled to the budget: a few dozen entities whose facts the models see many times
over many epochs (a fact seen once cannot be learned), while the ground truth keeps held-out
question phrasings and two-hop questions. Its tokenizer is the bvv241 construction on a compact
id layout (:mod:`~substrate_lm.experiments.compact`): the same tokens and strings,
about 1,000 ids instead of 65,536, so the output head no longer dominates the compute.

Pipeline (each step a folder the next reads, so a rerun resumes and skips what is done):
semantic world -> its tokenizer -> uint16 shards -> one model per (substrate, seed), trained by the
project trainer -> export -> validation loss / bits per character and the world's held-out
questions under both protocols -> layer-wise analysis (linear probes of the entities' categories in
carrier sentences that do not reveal them, entity-held-out folds, control task; CKA against the
trainable baseline) -> statistics and findings -> ``report.html`` and ``results.json``.

Independent trainings (the (substrate, seed) cells, the docking experiment's experts and growth runs)
run ``jobs`` at a time, one process and one thread each (:mod:`.parallel`); the numbers are the same
for any ``jobs``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ..errors import SubstrateError
from ..settings import SettingsEngine
from . import findings as F
from .ablate import TOKENIZERS, AblationConfig, run_ablation

# name shown in the report -> substrate spec
FULL_SUBSTRATES = {
    "random bits (1024-BIT)": "bits",
    "uni-glyph (UNI_GLYPH)": "glyph",
    "token-id 16 bits (16-BIT)": "16-bit",
    "trainable (UNFROZEN)": "unfrozen",
}
BASELINE = "unfrozen"
# trained unless --substrates says otherwise: the two frozen tables the claims are about, and the baseline
DEFAULT_SPECS = ("bits", "glyph", "unfrozen")
MODES = ("quick", "full", "long")


@dataclass
class DemoSettings:
    """Sizes of one demo run; ``quick()``, ``full()`` and ``long()`` are the built-in ones.

    Every field can be changed on the command line as ``--demo.KEY VALUE`` (``langs`` and ``maps``
    take comma lists: ``--demo.langs en,ru``); ``demo --help-config`` lists them with their values.
    Loading and checking is the project's settings engine (:data:`ENGINE`).
    """

    world_size: str
    langs: tuple[str, ...]
    entities_per_cat: int
    qa_fraction: float
    mc_variants: int
    """Multiple-choice renderings (fresh distractors and option order) per training question."""
    mc_share: float
    """Share of the training question-answer items in the papers' multiple-choice format."""
    tokenizer: str
    d_model: int
    n_layer: int
    n_head: int
    block_size: int
    steps: int
    batch_size: int
    lr: float
    warmup: int
    precision: Literal["fp32", "bf16"]
    eval_interval: int
    seeds: int
    docking_seeds: int
    """Seeds of the docking experiment (the first ones of ``seeds``)."""
    n_runs: int
    limit: int
    per_entity: int
    maps: tuple[str, ...]
    # tiny models are bound by per-op overhead: one thread trains them faster than two on a 2-core
    # machine (13k vs 4k tokens/s measured with other jobs running); the cores are used by training
    # independent models side by side instead (``run_demo(jobs=...)``, ``--jobs``)
    threads: int = 1
    substrates: dict[str, str] = field(
        default_factory=lambda: {n: s for n, s in FULL_SUBSTRATES.items() if s in DEFAULT_SPECS})
    prompts: tuple[str, ...] = ("Question: Where does ", "The old story begins with ")

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(
            world_size="150KB", langs=("en",), entities_per_cat=6, qa_fraction=0.3, mc_variants=8, mc_share=0.5,
            tokenizer="compact",
            d_model=64, n_layer=2, n_head=4, block_size=128, steps=60, batch_size=16, lr=1e-2, warmup=6,
            precision="fp32", eval_interval=30, seeds=1, docking_seeds=1, n_runs=1, limit=60,
            per_entity=4, maps=("pca",),
        )

    @classmethod
    def full(cls) -> "DemoSettings":
        # chosen by experiment: benchmarks/2026-11-30-demo-configs.md
        return cls(
            world_size="150KB", langs=("en",), entities_per_cat=6, qa_fraction=0.3, mc_variants=8, mc_share=0.5,
            tokenizer="compact",
            d_model=64, n_layer=4, n_head=4, block_size=128, steps=600, batch_size=16, lr=1e-2, warmup=30,
            precision="fp32", eval_interval=100, seeds=5, docking_seeds=3, n_runs=1, limit=300,
            per_entity=8, maps=("pca",),
        )

    @classmethod
    def long(cls) -> "DemoSettings":
        s = cls.full()
        s.steps, s.warmup, s.eval_interval = 1200, 60, 200
        s.docking_seeds = 5  # the docking part runs DockingSettings.long (longer experts and growth)
        return s

    @classmethod
    def for_mode(cls, mode: str) -> "DemoSettings":
        if mode not in MODES:
            raise SubstrateError(f"unknown demo mode {mode!r}; choose from {', '.join(MODES)}")
        return getattr(cls, mode)()

    def apply(self, overrides: dict | list[str]) -> None:
        """Change fields in place: ``{"steps": 600, "langs": "en,ru"}`` (bare names or ``demo.``
        keys) or ``["--demo.steps", "600"]`` (the command line), typed and checked by the settings
        engine; a bad key or value raises a one-line error."""
        if isinstance(overrides, dict):
            overrides = {(k if str(k).startswith("demo.") else f"demo.{k}"): v for k, v in overrides.items()}
        ENGINE.update(self, overrides)

    def validate(self) -> None:
        positive = ("threads", "entities_per_cat", "d_model", "n_layer", "n_head", "block_size", "steps", "batch_size",
                    "eval_interval", "seeds", "docking_seeds", "n_runs", "limit", "per_entity")
        for key in positive:
            if getattr(self, key) < 1:
                raise SubstrateError(f"demo.{key} must be >= 1, got {getattr(self, key)}")
        from ..world.generator import MAX_MC_VARIANTS

        if not 1 <= self.mc_variants <= MAX_MC_VARIANTS:
            raise SubstrateError(f"demo.mc_variants must be in 1..{MAX_MC_VARIANTS}, got {self.mc_variants}")
        if not 0.0 <= self.mc_share <= 1.0:
            raise SubstrateError(f"demo.mc_share must be in [0, 1], got {self.mc_share}")
        if not 0.0 <= self.qa_fraction <= 0.5:
            raise SubstrateError(f"demo.qa_fraction must be in [0, 0.5], got {self.qa_fraction}")
        if not self.lr > 0:
            raise SubstrateError(f"demo.lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.warmup >= self.steps:
            raise SubstrateError(f"demo.warmup must be in 0..steps-1 ({self.steps - 1}), got {self.warmup}")
        if self.d_model % self.n_head:
            raise SubstrateError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.tokenizer not in TOKENIZERS:
            raise SubstrateError(f"demo.tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        self.maps = tuple(m for m in self.maps if m != "none")
        bad = [m for m in self.maps if m not in ("pca", "tsne", "umap")]
        if bad:
            raise SubstrateError(f"unknown map(s) {', '.join(bad)}; use a comma list of pca, tsne, umap (or none)")
        from ..world import parse_langs, parse_size

        parse_size(self.world_size)
        self.langs = tuple(parse_langs(self.langs))


def _check(settings: DemoSettings) -> None:
    settings.validate()


#: the settings engine of ``substrate-lm demo`` (flat: ``--demo.KEY VALUE``)
ENGINE: SettingsEngine[DemoSettings] = SettingsEngine(DemoSettings, name="demo", check=_check)


def unifont_available(font: str | None = None) -> bool:
    """Whether the glyph table can be built: :func:`substrate_lm.substrates.glyph.resolve_font` (the
    one owner of where Unifont is looked for) finds a usable file."""
    from ..substrates.glyph import resolve_font

    try:
        resolve_font(font)
    except SubstrateError:
        return False
    return True


def demo_ablation(settings: DemoSettings, out: Path, seeds: list[int]) -> AblationConfig:
    """The demo as an ablation grid: one preset, one corpus, several substrates and seeds.

    The world (``data_seed``) is the same for every seed: seeds vary the backbone init and the
    order of the training batches, so the spread over seeds is the spread of training itself.
    """
    s = settings
    return AblationConfig(
        out=str(out),
        recipe="tiny",
        substrates=list(s.substrates.values()),
        seeds=list(seeds),
        presets=["tiny"],
        corpora=[f"world:{s.world_size}"],
        benches=["world-mc", "world-short"],
        protocol="both",
        n_runs=s.n_runs,
        limit=s.limit,
        data_seed=0,
        langs=list(s.langs),
        tokenizer=s.tokenizer,
        world={"entities_per_cat": s.entities_per_cat, "qa_fraction": s.qa_fraction,
               "mc_variants": s.mc_variants, "mc_share": s.mc_share},
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


def _bench(result: dict, bench: str) -> dict:
    ev = result.get("evaluation") or {}
    for model_res in (ev.get("models") or {}).values():
        return (model_res.get("results") or {}).get(bench) or {}
    return {}


def seed_row(name: str, result: dict) -> dict:
    """The figures of one trained cell (one model, one seed), flat."""
    mc, short = _bench(result, "world-mc"), _bench(result, "world-short")
    val = result.get("val") or {}
    return dict(
        model=name,
        substrate=result["cell"]["substrate"],
        seed=result["cell"]["seed"],
        val_loss=val.get("val_loss"),
        val_bpc=val.get("val_bpc"),
        train_loss_first=result.get("train_loss_first"),
        train_loss_last=result.get("train_loss_last"),
        mc_loglik=(mc.get("loglik") or {}).get("acc"),
        mc_paper=(mc.get("paper") or {}).get("mean"),
        short_paper=(short.get("paper") or {}).get("mean"),
        short_loglik_greedy=(short.get("loglik") or {}).get("greedy_match"),
        short_bpc=(short.get("loglik") or {}).get("bpc"),
        substrate_kind=result.get("substrate_kind"),
        substrate_width=result.get("substrate_width"),
        frozen=result.get("substrate_frozen"),
        unchanged=result.get("substrate_unchanged"),
        fingerprint=result.get("substrate_fingerprint"),
        trainable_params=result["parameters"]["trainable"],
        total_params=result["parameters"]["total"],
        seconds=result.get("seconds"),
    )


ROW_METRICS = ("val_loss", "val_bpc", "train_loss_last", "mc_loglik", "mc_paper", "short_paper",
               "short_loglik_greedy", "short_bpc")


def compute_statistics(rows: list[dict], analyses: dict[str, dict[int, dict]], names: dict[str, str]) -> dict:
    """Means and CI95 over seeds of every figure, probe statistics per layer, and the findings.

    Args:
        rows: :func:`seed_row` of every cell.
        analyses: ``{model name: {seed: metrics.json of analyze}}``.
        names: ``{model name: substrate spec}``.
    """
    per_model = {}
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        per_model[name] = {m: F.ci([r[m] for r in mine if r[m] is not None]) for m in ROW_METRICS}
    frozen = [n for n, spec in names.items() if spec != BASELINE]
    baseline = next((n for n, spec in names.items() if spec == BASELINE), None)
    probes = {name: F.probe_stats(by_seed) for name, by_seed in analyses.items() if by_seed}
    val = {name: {r["seed"]: r["val_loss"] for r in rows if r["model"] == name and r["val_loss"] is not None}
           for name in names}
    found = F.question_findings(per_model, frozen)
    if baseline:
        found += F.loss_findings(val, frozen, baseline)
    found += F.probe_findings(probes, frozen)
    return {"per_model": per_model, "probes": probes, "findings": found, "summary": F.summary_line(found)}


def run_docking(out: Path, mode: str, seeds: list[int], log: Callable[[str], None], jobs: int = 1) -> dict:
    """Claim 3 (the docking port): :func:`.docking_demo.run_docking_experiment` with the settings
    of ``mode`` (:meth:`~.docking_demo.DockingSettings.quick`, ``full`` or ``long``)."""
    from .docking_demo import run_docking_experiment

    return run_docking_experiment(out / "docking", quick=mode == "quick", long=mode == "long", seeds=seeds,
                                  log=log, jobs=jobs)


def run_demo(
    out_dir: str | os.PathLike = "runs/demo",
    quick: bool = False,
    seed: int = 0,
    font: str | None = None,
    log: Callable[[str], None] = print,
    overrides: dict | list[str] | None = None,
    substrates: list[str] | None = None,
    long: bool = False,
    docking: bool = True,
    jobs: int | None = None,
) -> Path:
    """Run the demo (resuming what is done) and write ``<out_dir>/report.html``; returns its path.

    Args:
        quick: the ~2-minute smoke version (one seed: figures without confidence intervals).
        seed: first seed; the models are trained on seeds ``seed .. seed + settings.seeds - 1``.
        long: the longer schedule (see :meth:`DemoSettings.long`).
        overrides: :class:`DemoSettings` fields to change (``{"steps": 600, "seeds": 5}``, or the
            command line's ``["--demo.steps", "600"]``).
        substrates: keep only these specs (``["bits", "unfrozen"]``); the trainable baseline is
            always kept, since the loss and CKA comparisons are made against it.
        docking: also run the docking-port experiment when it is available.
        jobs: models trained side by side, one process and ``settings.threads`` threads each
            (default: :func:`~substrate_lm.experiments.parallel.default_jobs`, 2 on two or more
            cores; capped by the cores). The numbers do not depend on it.
    """
    from .parallel import check_jobs, default_jobs

    import torch

    if quick and long:
        raise SubstrateError("--quick and --long exclude each other; pick one")
    mode = "quick" if quick else "long" if long else "full"
    jobs = default_jobs() if jobs is None else check_jobs(jobs)
    t0 = time.time()
    out = Path(out_dir)
    settings = DemoSettings.for_mode(mode)
    settings.apply(overrides or {})
    if substrates:
        unknown = set(substrates) - set(FULL_SUBSTRATES.values())
        if unknown:
            raise SubstrateError(f"unknown demo substrate(s) {', '.join(sorted(unknown))}; choose from "
                                 f"{', '.join(FULL_SUBSTRATES.values())}")
        settings.substrates = {k: v for k, v in FULL_SUBSTRATES.items() if v in substrates or v == BASELINE}
    if not unifont_available(font):
        settings.substrates = {k: v for k, v in settings.substrates.items() if v != "glyph"}
        log("note: GNU Unifont not found (apt-get install unifont fonts-unifont); skipping the uni-glyph model")
    seeds = list(range(seed, seed + settings.seeds))
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run(out, settings, mode, seeds, docking, log, t0, jobs)
    finally:
        torch.set_num_threads(threads_before)


def _run(out: Path, settings: DemoSettings, mode: str, seeds: list[int], docking: bool,
         log: Callable[[str], None], t0: float, jobs: int = 1) -> Path:
    from ..analysis import analyze
    from .report import write_demo_report

    quick = mode == "quick"
    threads = settings.threads
    log(f"substrate-lm demo ({mode}): {len(settings.substrates)} models x {len(seeds)} seed(s), "
        f"{settings.steps} steps each, world {settings.world_size} ({','.join(settings.langs)}, "
        f"{settings.entities_per_cat} entities per category), {jobs} job(s) of {threads} CPU thread(s) -> {out}")
    ab = run_ablation(demo_ablation(settings, out, seeds), log=log, keep_models=True, jobs=jobs, threads=threads)
    corpus = next(iter(ab["corpora"].values()))
    spec_name = {spec: name for name, spec in settings.substrates.items()}
    cells = {(r["cell"]["substrate"], r["cell"]["seed"]): r for r in ab["results"]}

    def model_of(spec: str, s: int):
        r = cells[(spec, s)]
        if "_model" not in r:  # finished on an earlier run: reload from its export
            from ..loading import load_model_and_tokenizer

            r["_model"], r["_tokenizer"] = load_model_and_tokenizer(r["model_dir"])
        return r["_model"], r["_tokenizer"]

    analyses: dict[str, dict[int, dict]] = {name: {} for name in settings.substrates}
    for s in seeds:
        for name, spec in settings.substrates.items():
            adir = out / "analysis" / spec / f"seed{s}"
            done = adir / "metrics.json"
            if done.is_file():
                analyses[name][s] = json.loads(done.read_text(encoding="utf-8"))
                continue
            log(f"analysing {name}, seed {s}: layer-wise probes, neighbour purity, CKA")
            model, tok = model_of(spec, s)
            compare = None if spec == BASELINE else model_of(BASELINE, s)
            first = s == seeds[0]
            analyses[name][s] = analyze(
                model,
                tokenizer=tok,
                world_dir=corpus.world_dir,
                compare=compare[0] if compare else None,
                compare_tokenizer=compare[1] if compare else None,
                compare_name=spec_name[BASELINE] if compare else None,
                out_dir=adir,
                name=name,
                lang=settings.langs[0],
                per_entity=settings.per_entity,
                max_items=None,
                seed=s,
                maps=settings.maps if first else (),
                report=first,
                num_threads=1,
            )

    rows = [seed_row(spec_name[spec], r) for (spec, _), r in sorted(cells.items(), key=lambda kv: (list(spec_name).index(kv[0][0]), kv[0][1]))]
    stats = compute_statistics(rows, analyses, dict(settings.substrates))
    gens = {name: generations(*model_of(spec, seeds[0]), settings.prompts, max_new_tokens=24 if quick else 40)
            for name, spec in settings.substrates.items()}
    docking = run_docking(out, mode, list(range(seeds[0], seeds[0] + settings.docking_seeds)), log, jobs) \
        if docking else None

    report = write_demo_report(
        out,
        settings=settings,
        mode=mode,
        seeds=seeds,
        results={name: [cells[(spec, s)] for s in seeds] for name, spec in settings.substrates.items()},
        rows=rows,
        stats=stats,
        analyses=analyses,
        generations=gens,
        docking=docking,
        seconds=time.time() - t0,
    )
    log(f"findings: {stats['summary']}")
    for f in stats["findings"]:
        log(f"  [{f['verdict']}] {f['sentence']}")
    log(f"done in {time.time() - t0:.0f} s; report: {report.resolve()}")
    return report
