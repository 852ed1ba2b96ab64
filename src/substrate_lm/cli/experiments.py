"""``substrate-lm demo`` and ``substrate-lm ablate``."""

from __future__ import annotations

import argparse

from ..errors import SubstrateError
from .common import (add_runtime_args, add_settings_args, load_settings, positive_int, runtime_overrides,
                     settings_overrides)

ABLATE_EPILOG = """\
example (a real-text grid; every key and its meaning: --help-config and docs/ablate.md):

  substrate-lm data prepare essays/ --tokenizer tok --out data/essays --val-fraction 0.1
  cat > grid.toml <<'TOML'
  [ablation]
  out = "runs/essays-grid"
  recipe = "tiny"
  substrates = ["bits", "unfrozen"]
  seeds = [0, 1, 2]
  corpora = ["data/essays"]
  heldout = ["data/essays", "heldout-letters.txt"]   # bpc per cell, CI95 over seeds
  benches = []
  [overrides]
  "train.steps" = 300
  TOML
  substrate-lm ablate --config grid.toml --jobs 2 --threads 1

A rerun resumes: finished cells are skipped; held-out data or tasks added to the file since are
evaluated on the finished cells' models without retraining. Results: OUT/ablation.md (mean and
CI95 over seeds per preset x corpus x substrate), OUT/ablation.json, OUT/cells/<cell>/result.json.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the papers' central experiment on the built-in world: train models that differ only in "
        "the substrate, evaluate, analyse, write report.html",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (a rerun resumes and skips finished steps)")
    p.add_argument("--quick", action="store_true", help="a ~2-minute smoke version (one seed, fewer steps: no CIs)")
    p.add_argument("--long", action="store_true", help="the longer schedule (more steps per model; see the README)")
    p.add_argument("--no-docking", action="store_true", help="skip the docking-port experiment (claim 3)")
    p.add_argument(
        "--jobs", type=positive_int, default=None, metavar="N",
        help="models trained side by side, one process and thread each (default: 2 on two or more cores; capped "
        "by the cores); the numbers do not depend on it",
    )
    p.add_argument("--seed", type=int, default=0, help="first seed; the models train on seeds SEED .. SEED+seeds-1")
    p.add_argument("--font", help="Unifont file for the glyph model (default: the Debian unifont paths)")
    p.add_argument("--substrates", help="comma list of substrates to keep (bits,glyph,16-bit; unfrozen is always kept)")
    p.description = ("The papers' central experiment on the built-in world. Any setting is changed as "
                     "--SECTION.KEY VALUE: the demo's own ([demo]: --demo.seeds 8 --demo.langs en,ru), the "
                     "models' shape and schedule (the trainer's [model] and [train]: --train.steps 1200 "
                     "--model.overrides.n_layer 2) and the docking experiment's ([docking]: --docking.grow_steps "
                     "300); --help-config lists them all with the values of the chosen mode (--quick, --long).")
    add_settings_args(p, old_set="demo.")
    add_runtime_args(p, device=False, settings="demo")  # each training process's threads
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ablate", help="run an ablation grid (substrates x seeds x presets x corpora) with "
                                      "held-out bpc and eval tasks per cell, CI95 over seeds; resumable",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ABLATE_EPILOG)
    p.description = ("Train every cell of a grid (presets x corpora x substrates x seeds) from one recipe, "
                     "identically but for those four values; score each cell's model on held-out data "
                     "(bits per character, per data source) and eval tasks; tabulate every metric's mean "
                     "and Student-t CI95 over seeds. The grid is a TOML file: [ablation] keys and an "
                     "[overrides] table of run-config keys (\"train.steps\" = 300). Any [ablation] key is "
                     "changed as --ablation.KEY VALUE (--ablation.seeds 0,1,2); --help-config lists every "
                     "key with its meaning; docs/ablate.md has a worked real-text example.")
    add_settings_args(p, old_set="ablation.")
    p.add_argument("--config", help="ablation TOML file ([ablation] keys, [overrides] table)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="cells trained side by side, one process each (capped by the cores); the numbers do "
                   "not depend on it")
    add_runtime_args(p, cuda_index=False)
    p.set_defaults(func=cmd_ablate)


def cmd_demo(args) -> int:
    # imported here, not at the top: ``substrate-lm --help`` must not import torch
    from ..experiments.demo import ENGINE, DemoSettings, run_demo

    overrides = runtime_overrides(args, settings_overrides(args), {"threads": "demo.threads"})
    if args.help_config:
        settings = DemoSettings.for_mode("quick" if args.quick else "long" if args.long else "full")
        print(ENGINE.describe(settings.apply(overrides)))
        return 0
    run_demo(
        args.out, quick=args.quick, long=args.long, seed=args.seed, font=args.font, overrides=overrides,
        substrates=[s.strip() for s in args.substrates.split(",") if s.strip()] if args.substrates else None,
        docking=not args.no_docking, jobs=args.jobs,
    )
    return 0


def cmd_ablate(args) -> int:
    # imported here, not at the top: ``substrate-lm --help`` must not import torch
    from ..experiments.ablate import ENGINE, load_ablation_config, markdown_table, run_ablation

    cfg = load_settings(args, ENGINE, load_ablation_config,
                        missing="pass --config FILE: an ablation TOML file (see `substrate-lm ablate --help`)")
    if cfg is None:
        return 0
    if args.device is not None:
        if args.device not in ("auto", "cpu", "cuda"):
            raise SubstrateError(f"--device {args.device!r} is not one of auto, cpu, cuda")
        cfg.overrides["run.device"] = args.device
    if args.threads is not None:
        cfg.overrides["run.threads"] = args.threads  # each cell's trainer; a worker process too
    threads = args.threads or 1
    summary = run_ablation(cfg, jobs=args.jobs, threads=threads)
    print(markdown_table(summary["groups"]))
    print(f"results: {cfg.out}/ablation.json, {cfg.out}/ablation.md")
    return 0
