"""``substrate-lm demo`` and ``substrate-lm ablate``."""

from __future__ import annotations


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
    p.add_argument("--seed", type=int, default=0, help="first seed; the models train on seeds SEED .. SEED+seeds-1")
    p.add_argument("--font", help="Unifont file for the glyph model (default: the Debian unifont paths)")
    p.add_argument("--substrates", help="comma list of substrates to keep (bits,glyph,16-bit; unfrozen is always kept)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="change a demo setting, e.g. --set steps=600 --set seeds=5 --set langs=en,ru (see DemoSettings)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ablate", help="run an ablation grid (substrates x seeds x presets x corpora), resumable")
    p.add_argument("--config", required=True, help="ablation TOML file (see `substrate-lm ablate --help`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an [ablation] key")
    p.set_defaults(func=cmd_ablate)


def cmd_demo(args) -> int:
    from ..experiments.demo import run_demo

    from .model_cmds import parse_overrides

    run_demo(
        args.out, quick=args.quick, long=args.long, seed=args.seed, font=args.font, overrides=parse_overrides(args.set),
        substrates=[s.strip() for s in args.substrates.split(",") if s.strip()] if args.substrates else None,
        docking=not args.no_docking,
    )
    return 0


def cmd_ablate(args) -> int:
    from ..experiments.ablate import load_ablation_config, markdown_table, run_ablation

    cfg = load_ablation_config(args.config, args.set)
    summary = run_ablation(cfg)
    print(markdown_table(summary["groups"]))
    print(f"results: {cfg.out}/ablation.json, {cfg.out}/ablation.md")
    return 0
