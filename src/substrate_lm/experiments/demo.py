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

Settings (:class:`DemoSettings`, one root of four sections, each key ``--<section>.<key> VALUE``):
``[demo]`` the demo's own (world, seeds, evaluation, analysis); ``[model]`` and ``[train]`` the
trainer's own sections with the demo's defaults, held by every cell's run config as they are
(:func:`demo_run_config`, then ``dataclasses.replace`` per cell) and by the docking experiment's
experts; ``[docking]`` the docking experiment's (:class:`~.docking.DockingSection`). ``--train.steps``
is read once, into the ``TrainSection``, and that object is what the trainer reads.

Independent trainings (the (substrate, seed) cells, the docking experiment's experts and growth runs)
run ``jobs`` at a time, one process and one thread each (:mod:`.parallel`); the numbers are the same
for any ``jobs``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..analysis import analyze
from ..errors import SubstrateError
from ..loading import load_model_and_tokenizer
from ..settings import SettingsEngine
from ..substrates.glyph import resolve_font
from ..training.config import ModelSection, RunConfig, TrainSection, load_config, validate as validate_run
from ..world import parse_langs, parse_size
from ..world.generator import MAX_MC_VARIANTS
from . import findings as F
from .ablate import TOKENIZERS, AblationConfig, run_ablation
from .docking import DockingSection, DockingSettings, GrowthBase, run_docking_experiment
from .docking.settings import check as check_docking
from .parallel import check_jobs, default_jobs
from .report import write_demo_report

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
#: the flat demo keys that became the trainer's: ``--demo.KEY`` -> the key to write now
MOVED = {
    **{k: f"model.overrides.{k}" for k in ("d_model", "n_layer", "n_head", "block_size")},
    **{k: f"train.{k}" for k in ("steps", "batch_size", "lr", "warmup", "precision")},
}


@dataclass
class DemoSection:
    """The demo's own settings: its world, seeds, evaluation and analysis. The models' shape is the
    [model] section and their schedule the [train] section (the trainer's own); the docking
    experiment's settings are the [docking] section."""

    world_size: str = "150KB"
    """Text of the demo's world (e.g. 150KB, 2MB)."""
    langs: tuple[str, ...] = ("en",)
    """Languages of the world (comma list: en,ru); the analysis uses the first."""
    entities_per_cat: int = 6
    """Entities per category of the world (few, so that every fact is seen over many epochs)."""
    qa_fraction: float = 0.3
    """Share of training documents that are question-answer documents (0 to 0.5)."""
    mc_variants: int = 8
    """Multiple-choice renderings (fresh distractors and option order) per training question."""
    mc_share: float = 0.5
    """Share of the training question-answer items in the papers' multiple-choice format."""
    tokenizer: str = "compact"
    """compact (the bvv241 construction on a compact id layout, about 1,000 ids) or bvv241 (the
    published 65,536 ids)."""
    eval_interval: int = 100
    """Validate every this many training steps (and at the end)."""
    seeds: int = 5
    """Seeds per model: the models train on seeds --seed .. --seed + seeds - 1 (figures are means
    with a CI95 over them)."""
    docking_seeds: int = 5
    """Seeds of the docking experiment (the first ones of seeds; growth is compared with the demo's
    random-bits model of each)."""
    n_runs: int = 1
    """Repetitions of the papers' (sampled) generation protocol per seed."""
    limit: int = 300
    """Questions per benchmark."""
    per_entity: int = 8
    """Carrier sentences per entity for the layer-wise probes."""
    maps: tuple[str, ...] = ("pca",)
    """Maps of the representations in the analysis reports: comma list of pca, tsne, umap (or none)."""
    # tiny models are bound by per-op overhead: one thread trains them faster than two on a 2-core
    # machine (13k vs 4k tokens/s measured with other jobs running); the cores are used by training
    # independent models side by side instead (``run_demo(jobs=...)``, ``--jobs``)
    threads: int = 1
    """Torch threads of each training process (the cores are used by --jobs instead)."""
    substrates: dict[str, str] = field(
        default_factory=lambda: {n: s for n, s in FULL_SUBSTRATES.items() if s in DEFAULT_SPECS})
    """The models: {name in the report = substrate spec} (--substrates keeps a subset)."""
    prompts: tuple[str, ...] = ("Question: Where does ", "The old story begins with ")
    """Prompts of the greedy samples in the report."""


def demo_model(n_layer: int = 4) -> ModelSection:
    """The demo's models: the tiny preset at d_model 64, 4 heads, context 128, ``n_layer`` blocks."""
    return ModelSection(preset="tiny", overrides={"d_model": 64, "n_layer": n_layer, "n_head": 4, "block_size": 128})


def demo_train(steps: int = 1200, warmup: int = 60) -> TrainSection:
    """The demo's schedule: ``steps`` of 8 x 128 tokens, lr 1e-2 to 1e-3 after ``warmup``, fp32.

    Batches of 8 sequences, not 16: the same tokens in twice the optimizer steps bring every model
    closer to the world's validation floor in the same time (the glyph table's loss ratio to the
    trainable one and the held-out accuracy before and after: benchmarks/2026-12-07-demo-schedule.md)."""
    return TrainSection(steps=steps, batch_size=8, seq_len=128, lr=1e-2, min_lr=1e-3, warmup=warmup,
                        precision="fp32")


#: validation tokens of every demo model (eval batches = this / (batch_size x seq_len))
VAL_TOKENS = 16_384


@dataclass
class DemoSettings:
    """Everything one demo run uses; :meth:`quick`, :meth:`full` and :meth:`long` are the built-in
    ones (the defaults are ``full``'s).

    Every key is changed on the command line as ``--<section>.<key> VALUE``: ``--demo.seeds 8``,
    ``--train.steps 1200``, ``--model.overrides.n_layer 2``, ``--docking.grow_steps 300``;
    ``demo --help-config`` lists them with their values. The [model] and [train] sections are the
    trainer's own (:class:`~substrate_lm.training.config.ModelSection`,
    :class:`~substrate_lm.training.config.TrainSection`): every cell's run config holds them as
    they are (:func:`demo_run_config`), and so do the docking experiment's experts.
    """

    demo: DemoSection = field(default_factory=DemoSection)
    model: ModelSection = field(default_factory=demo_model)
    train: TrainSection = field(default_factory=demo_train)
    docking: DockingSection = field(default_factory=DockingSection.full)

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(
            demo=DemoSection(eval_interval=60, seeds=1, docking_seeds=1, limit=60, per_entity=4),
            model=demo_model(n_layer=2),
            train=demo_train(steps=120, warmup=12),
            docking=DockingSection.quick(),
        )

    @classmethod
    def full(cls) -> "DemoSettings":
        # chosen by experiment: benchmarks/2026-11-30-demo-configs.md
        return cls()

    @classmethod
    def long(cls) -> "DemoSettings":
        # twice the steps on 8 seeds; the docking part runs DockingSection.long (longer experts) on 8
        return cls(demo=DemoSection(eval_interval=400, seeds=8, docking_seeds=8), train=demo_train(steps=2400, warmup=120),
                   docking=DockingSection.long())

    @classmethod
    def for_mode(cls, mode: str) -> "DemoSettings":
        if mode not in MODES:
            raise SubstrateError(f"unknown demo mode {mode!r}; choose from {', '.join(MODES)}")
        return getattr(cls, mode)()

    def apply(self, overrides: dict | list[str]) -> "DemoSettings":
        """New settings with keys changed: ``{"train.steps": 600, "demo.langs": "en,ru"}`` or
        ``["--train.steps", "600"]`` (the command line), typed and checked by the settings engine;
        a bad key or value raises a one-line error. ``self`` is not changed."""
        items = ENGINE.parse_args(list(overrides)) if isinstance(overrides, list) else dict(overrides)
        for key in items:
            sec, _, name = str(key).partition(".")
            if sec == "demo" and name in MOVED:
                extra = " (train.min_lr is its own key now)" if name == "lr" else ""
                raise SubstrateError(f"demo.{name} is the trainer's {MOVED[name]} now: write --{MOVED[name]} VALUE"
                                     f"{extra}; demo --help-config lists every key")
        return ENGINE.apply(self, items)

    def docking_settings(self) -> DockingSettings:
        """The docking experiment's settings: the [docking] section with the demo's [model] and
        [train] (the experts' depth, steps and warmup where [docking] sets them)."""
        return DockingSettings(docking=self.docking, model=self.model, train=self.train)


def check(settings: DemoSettings) -> None:
    """Cross-field checks of the demo's settings (the trainer's checks of [model] and [train], the
    docking experiment's of [docking]); normalises ``demo.maps`` and ``demo.langs``."""
    s, t = settings.demo, settings.train
    positive = ("threads", "entities_per_cat", "eval_interval", "seeds", "docking_seeds", "n_runs", "limit",
                "per_entity")
    for key in positive:
        if getattr(s, key) < 1:
            raise SubstrateError(f"demo.{key} must be >= 1, got {getattr(s, key)}")
    if not 1 <= s.mc_variants <= MAX_MC_VARIANTS:
        raise SubstrateError(f"demo.mc_variants must be in 1..{MAX_MC_VARIANTS}, got {s.mc_variants}")
    if not 0.0 <= s.mc_share <= 1.0:
        raise SubstrateError(f"demo.mc_share must be in [0, 1], got {s.mc_share}")
    if not 0.0 <= s.qa_fraction <= 0.5:
        raise SubstrateError(f"demo.qa_fraction must be in [0, 0.5], got {s.qa_fraction}")
    if s.tokenizer not in TOKENIZERS:
        raise SubstrateError(f"demo.tokenizer must be one of {', '.join(TOKENIZERS)}, got {s.tokenizer!r}")
    s.maps = tuple(m for m in s.maps if m != "none")
    bad = [m for m in s.maps if m not in ("pca", "tsne", "umap")]
    if bad:
        raise SubstrateError(f"unknown map(s) {', '.join(bad)}; use a comma list of pca, tsne, umap (or none)")
    parse_size(s.world_size)
    s.langs = tuple(parse_langs(s.langs))
    validate_run(RunConfig(model=settings.model, train=t))
    if t.warmup >= t.steps:
        raise SubstrateError(f"train.warmup must be in 0..train.steps-1 ({t.steps - 1}), got {t.warmup}")
    block = settings.model.overrides.get("block_size")
    if block is not None and t.seq_len > block:
        raise SubstrateError(f"train.seq_len {t.seq_len} exceeds model.overrides.block_size {block}")
    if settings.docking.grow_baseline == "demo" and s.docking_seeds > s.seeds:
        raise SubstrateError(f"demo.docking_seeds ({s.docking_seeds}) must be <= demo.seeds ({s.seeds}): growth is "
                             f"compared with the demo's random-bits model of each docking seed")
    check_docking(settings.docking_settings())


#: the settings engine of ``substrate-lm demo`` (sections ``demo``, ``model``, ``train``, ``docking``)
ENGINE: SettingsEngine[DemoSettings] = SettingsEngine(DemoSettings, check=check)


def unifont_available(font: str | None = None) -> bool:
    """Whether the glyph table can be built: :func:`substrate_lm.substrates.glyph.resolve_font` (the
    one owner of where Unifont is looked for) finds a usable file."""
    try:
        resolve_font(font)
    except SubstrateError:
        return False
    return True


def demo_ablation(settings: DemoSettings, out: Path, seeds: list[int]) -> AblationConfig:
    """The demo as an ablation grid: one preset, one corpus, several substrates and seeds (each
    cell's run config: :func:`demo_run_config`).

    The world (``data_seed``) is the same for every seed: seeds vary the backbone init and the
    order of the training batches, so the spread over seeds is the spread of training itself.
    """
    s = settings.demo
    return AblationConfig(
        out=str(out),
        recipe="tiny",
        substrates=list(s.substrates.values()),
        seeds=list(seeds),
        presets=[settings.model.preset],
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
    )


def demo_run_config(settings: DemoSettings) -> RunConfig:
    """The run config every cell starts from: the ``tiny`` recipe with the demo's [model] and [train]
    sections in place (the objects themselves, never rewritten as text) and the demo's evaluation,
    logging and checkpoint cadence; each cell then sets its substrate, data and seed
    (:func:`~.ablate.cell_run_config`)."""
    base = load_config("tiny")
    steps = settings.train.steps
    replace = dataclasses.replace
    run = replace(
        base,
        model=settings.model,
        train=settings.train,
        eval=replace(base.eval, interval=settings.demo.eval_interval,
                     steps=max(1, VAL_TOKENS // (settings.train.batch_size * settings.train.seq_len))),
        log=replace(base.log, interval=max(1, steps // 20), sample_interval=0, tensorboard=False),
        checkpoint=replace(base.checkpoint, interval=max(10, steps // 2), keep_last=1),
    )
    validate_run(run)
    return run


def generations(model, tokenizer, prompts, max_new_tokens: int = 32) -> list[dict]:
    """Greedy continuations of a few prompts (what the model learned to say)."""
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
        mc_paper_valid=(mc.get("paper") or {}).get("valid_share"),
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


ROW_METRICS = ("val_loss", "val_bpc", "train_loss_last", "mc_loglik", "mc_paper", "mc_paper_valid", "short_paper",
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
        per_model[name] = {m: F.ci([r.get(m) for r in mine if r.get(m) is not None]) for m in ROW_METRICS}
    frozen = [n for n, spec in names.items() if spec != BASELINE]
    baseline = next((n for n, spec in names.items() if spec == BASELINE), None)
    probes = {name: F.probe_stats(by_seed) for name, by_seed in analyses.items() if by_seed}
    val = {name: {r["seed"]: r["val_loss"] for r in rows if r["model"] == name and r["val_loss"] is not None}
           for name in names}
    found = F.question_findings(per_model, frozen)
    if baseline:
        by_seed = {m: {name: {r["seed"]: r[m] for r in rows if r["model"] == name and r.get(m) is not None}
                       for name in names} for m in ("mc_paper", "mc_paper_valid")}
        found += F.generation_findings(by_seed["mc_paper"], by_seed["mc_paper_valid"], frozen, baseline)
        found += F.loss_findings(val, frozen, baseline)
    found += F.probe_findings(probes, frozen)
    return {"per_model": per_model, "probes": probes, "findings": found, "summary": F.summary_line(found)}


def run_docking(out: Path, settings: DemoSettings, mode: str, seeds: list[int], log: Callable[[str], None],
                jobs: int = 1, growth_base: GrowthBase | None = None) -> dict:
    """Claim 3 (the docking port): :func:`.docking.run_docking_experiment` with the demo's
    [docking], [model] and [train] sections (:meth:`DemoSettings.docking_settings`); growth is
    compared with ``growth_base`` (the demo's random-bits models) when ``docking.grow_baseline`` is
    demo."""
    return run_docking_experiment(out / "docking", settings.docking_settings(), mode=mode, seeds=seeds, log=log,
                                  jobs=jobs, growth_base=growth_base)


def growth_base(corpus, cells: dict, seeds: list[int]) -> GrowthBase:
    """The demo's random-bits models of ``seeds`` (exported) with the shards and tokenizer they
    trained on: what growth is compared with (``docking.grow_baseline`` demo)."""
    return GrowthBase(data=str(corpus.data_dir), tokenizer=str(corpus.tokenizer_dir),
                      models={s: cells[("bits", s)]["model_dir"] for s in seeds},
                      steps={s: int(cells[("bits", s)]["steps"]) for s in seeds},
                      label="the demo's random-bits (1024-BIT) model")


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
        seed: first seed; the models are trained on seeds ``seed .. seed + demo.seeds - 1``.
        long: the longer schedule (see :meth:`DemoSettings.long`).
        overrides: :class:`DemoSettings` keys to change (``{"train.steps": 600, "demo.seeds": 5}``,
            or the command line's ``["--train.steps", "600"]``).
        substrates: keep only these specs (``["bits", "unfrozen"]``); the trainable baseline is
            always kept, since the loss and CKA comparisons are made against it.
        docking: also run the docking-port experiment when it is available.
        jobs: models trained side by side, one process and ``demo.threads`` threads each
            (default: :func:`~substrate_lm.experiments.parallel.default_jobs`, 2 on two or more
            cores; capped by the cores). The numbers do not depend on it.
    """
    if quick and long:
        raise SubstrateError("--quick and --long exclude each other; pick one")
    mode = "quick" if quick else "long" if long else "full"
    jobs = default_jobs() if jobs is None else check_jobs(jobs)
    t0 = time.time()
    out = Path(out_dir)
    settings = DemoSettings.for_mode(mode)
    settings = settings.apply(overrides or {})
    if substrates:
        unknown = set(substrates) - set(FULL_SUBSTRATES.values())
        if unknown:
            raise SubstrateError(f"unknown demo substrate(s) {', '.join(sorted(unknown))}; choose from "
                                 f"{', '.join(FULL_SUBSTRATES.values())}")
        settings.demo.substrates = {k: v for k, v in FULL_SUBSTRATES.items() if v in substrates or v == BASELINE}
    if not unifont_available(font):
        settings.demo.substrates = {k: v for k, v in settings.demo.substrates.items() if v != "glyph"}
        log("note: GNU Unifont not found (apt-get install unifont fonts-unifont); skipping the uni-glyph model")
    if docking and settings.docking.grow_baseline == "demo" and "bits" not in settings.demo.substrates.values():
        raise SubstrateError("the docking experiment compares growth with the demo's random-bits models: keep bits in "
                             "--substrates, or add --docking.grow_baseline own, or --no-docking")
    seeds = list(range(seed, seed + settings.demo.seeds))
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.demo.threads)
    try:
        return _run(out, settings, mode, seeds, docking, log, t0, jobs)
    finally:
        torch.set_num_threads(threads_before)


def _run(out: Path, settings: DemoSettings, mode: str, seeds: list[int], docking: bool,
         log: Callable[[str], None], t0: float, jobs: int = 1) -> Path:
    quick = mode == "quick"
    d = settings.demo
    threads = d.threads
    log(f"substrate-lm demo ({mode}): {len(d.substrates)} models x {len(seeds)} seed(s), "
        f"{settings.train.steps} steps each, world {d.world_size} ({','.join(d.langs)}, "
        f"{d.entities_per_cat} entities per category), {jobs} job(s) of {threads} CPU thread(s) -> {out}")
    ab = run_ablation(demo_ablation(settings, out, seeds), log=log, keep_models=True, jobs=jobs, threads=threads,
                      base=demo_run_config(settings))
    corpus = next(iter(ab["corpora"].values()))
    spec_name = {spec: name for name, spec in d.substrates.items()}
    cells = {(r["cell"]["substrate"], r["cell"]["seed"]): r for r in ab["results"]}

    def model_of(spec: str, s: int):
        r = cells[(spec, s)]
        if "_model" not in r:  # finished on an earlier run: reload from its export
            r["_model"], r["_tokenizer"] = load_model_and_tokenizer(r["model_dir"])
        return r["_model"], r["_tokenizer"]

    analyses: dict[str, dict[int, dict]] = {name: {} for name in d.substrates}
    for s in seeds:
        for name, spec in d.substrates.items():
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
                lang=d.langs[0],
                per_entity=d.per_entity,
                max_items=None,
                seed=s,
                maps=d.maps if first else (),
                report=first,
                num_threads=1,
            )

    rows = [seed_row(spec_name[spec], r) for (spec, _), r in sorted(cells.items(), key=lambda kv: (list(spec_name).index(kv[0][0]), kv[0][1]))]
    stats = compute_statistics(rows, analyses, dict(d.substrates))
    gens = {name: generations(*model_of(spec, seeds[0]), d.prompts, max_new_tokens=24 if quick else 40)
            for name, spec in d.substrates.items()}
    if docking:
        dock_seeds = list(range(seeds[0], seeds[0] + d.docking_seeds))
        base = growth_base(corpus, cells, dock_seeds) if settings.docking.grow_baseline == "demo" else None
        docking = run_docking(out, settings, mode, dock_seeds, log, jobs, base)
    else:
        docking = None

    report = write_demo_report(
        out,
        settings=settings,
        mode=mode,
        seeds=seeds,
        results={name: [cells[(spec, s)] for s in seeds] for name, spec in d.substrates.items()},
        rows=rows,
        stats=stats,
        analyses=analyses,
        generations=gens,
        docking=docking,
        seconds=time.time() - t0,
    )
    every = list(stats["findings"]) + F.docking_findings(docking)  # as report.html and results.json count them
    log(f"findings: {F.summary_line(every)}")
    for f in every:
        log(f"  [{f['verdict']}] {f['sentence']}")
    log(f"done in {time.time() - t0:.0f} s; report: {report.resolve()}")
    return report
