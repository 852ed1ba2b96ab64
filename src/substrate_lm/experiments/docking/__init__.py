"""Claim 3 of the demo: the docking port works (composition by logit averaging, and growth).

After A. Bochkov, *Growing Transformers* (arXiv 2507.07129): models trained separately on one
shared *frozen* token-embedding table merge with no architectural change by averaging their
logits, and a deep model can be grown one block at a time on top of frozen lower blocks. This
package runs the three checks of issue 12's claim 3 on the built-in world, end to end, on a CPU::

    from substrate_lm.experiments.docking import run_docking_experiment
    result = run_docking_experiment("runs/demo/docking", mode="full", seeds=(0, 1, 2),
                                    overrides={"docking.steps": 400})
    print("\\n".join(result["findings"]))

Modules: :mod:`.settings` (the [docking] section; the experts' [model] and [train] are the
trainer's sections), :mod:`.halves` (world, halves, tokenizer, shards, questions),
:mod:`.composition` (experts, composition, refusal), :mod:`.growth`, :mod:`.experiment` (the run);
the aggregation, verdicts and sentences are :mod:`substrate_lm.experiments.findings`.

What it does (every step a file or folder under ``out_dir``; a rerun skips what is finished):

1. **World and halves.** A small built-in world in English and Russian (few entities, so that the
   facts are seen over many epochs) is generated once (``world/``) and halved (``halves/a``,
   ``halves/b``). The default split (``split="entity"``) gives alternate entities of each category
   to half A and half B; every sentence and question-answer item of a document goes to the half of
   the entities it names (an item naming entities of both halves, e.g. a relation across them, is
   dropped; one naming none goes to both), so both experts read both languages and differ in
   which entities they know. ``split="lang"`` halves by language instead (``halves/en``,
   ``halves/ru``): there each expert has never seen the other script, and logit averaging with it
   costs accuracy on every question (see ``benchmarks/2026-11-30-docking-demo-configs.md``).
   One tokenizer is built from the whole corpus (``tokenizer/``) and each half, and the union,
   is prepared into token shards (``data/<half>``, ``data/all``) by
   :func:`substrate_lm.data.prepare_data`.
   The default tokenizer is a *compact* bvv241-style layout (:data:`COMPACT_LAYOUT`: ``id ==
   code point`` for U+0000-U+04FF, which holds Latin and Cyrillic, the special tokens after it, and
   736 bigram/trigram ids): the world needs no more, and a 2,048-row head instead of 65,536 makes
   the run ~10x cheaper on a CPU. The em dash of the Russian templates is written as ``-`` so that
   every character has an id (``unk_share`` is reported). ``tokenizer="bvv241"`` uses the
   published 65,536-id layout instead.
2. **Composition.** Per seed, two experts (``seed<k>/expert-a``, ``seed<k>/expert-b``) with the
   same backbone shape (the [model] section, ``docking.n_layer`` blocks) are trained for
   ``docking.steps`` steps (0: ``train.steps``) by the project trainer (:class:`substrate_lm.training.Trainer`),
   one per half, on ONE frozen random-bits table (same substrate seed: the table fingerprints are
   equal). :func:`substrate_lm.docking.compose` averages their logits. The experts and the composed
   model answer the world's held-out-phrasing multiple-choice questions of both halves, in both
   languages (the union; with the entity split a question whose chain of facts crosses the halves
   is answerable by neither expert and is left out, and counted) under the log-likelihood
   protocol (:func:`substrate_lm.evaluation.loglik.run_loglik`, option texts after
   ``Question: ...\\nAnswer:``, chance 25%), and their validation loss is taken on each half's
   validation split (``seed<k>/composition.json``).
3. **Refusal.** Two experts with *trainable* tables (substrate ``unfrozen``) are trained on the two
   halves (``trainable_steps`` steps, first seed only) and handed to ``compose``; its one-line
   refusal is recorded verbatim (``refusal.json``).
4. **Growth.** Per seed, :func:`substrate_lm.docking.run_growth` grows a model block by block
   (stage 1 trains a model from scratch, every later stage one new block plus the head, the lower
   blocks frozen, optionally adapted by LoRA) and compares it with a monolithic model of the same
   depth at equal tokens, both scored on the same validation batches (``seed<k>/grow/``, summary
   ``seed<k>/growth.json``). ``docking.grow_baseline`` own (the experiment run alone): on the union
   data to ``grow_layers`` blocks, the growth run training the monolithic model itself on the same
   batches; demo (inside ``substrate-lm demo``): on the demo's world against the demo's random-bits
   model of the same seed (:class:`~.growth.GrowthBase`), see :mod:`.growth`.

Returned dict (also written to ``out_dir/docking.json``; JSON-serialisable)::

    {
      "claim": "docking",
      "quick": bool, "mode": "quick" | "full" | "long", "seeds": [int], "settings": {"docking": {...}, "model": {...}, "train": {...}},
      "world": {"entities", "split", "parts": [half, half], "entity_halves": {entity id: "a"|"b"} | None,
                "labels": {half: its name in sentences},
                "langs", "questions": {lang: n}, "tokens": {half|"all": {"train", "val"}},
                "vocab_size", "unk_share": {half|"all": share}},
      "composition": {
        "rows": [{"seed", "n_items": {<half>, <half>, "union", "cross_excluded"}, "chance": 25.0,
                  # halves: "a"/"b" (entity split) or "en"/"ru" (language split)
                  "models": {"expert-<half>" (x2) | "composed":
                               {"acc": {<half>, <half>, "union"}, "acc_norm": {...}, "val_loss": {<half>, <half>, "union"}}},
                  "best_expert", "margin_acc",         # composed - best expert, union accuracy (points)
                  "beats_both",                       # composed union acc > each expert's
                  "margin_val_loss",                  # best expert - composed, union val loss (nats)
                  "fingerprint", "same_substrate", "experts": {name: {"half", "substrate_kind", "substrate_frozen",
                  "fingerprint", "steps", "train_loss", "val_loss"}}, "timing"}],
        "aggregate": {"<model>/acc/<part>" | "<model>/val_loss/<part>" | "margin_acc" | "margin_val_loss":
                      {"mean", "sd", "ci95", "n"}},   # ci95 = t(0.975, n-1) sd / sqrt(n) over seeds
        "beats_both_seeds": int, "verdict": bool,          # on the questions (the claim's measure)
        "lower_val_loss_seeds": int, "verdict_val_loss": bool},   # the same criterion on validation loss
      "refusal": {"refused": bool, "message": str | None, "reason": "trainable" | "fingerprint" | "other" | None,
                  "experts": [{"half", "substrate_kind", "substrate_frozen", "fingerprint", ...}], "steps", "seed", "timing"},
      "growth": {
        "rows": [{"seed", "grown_val_loss", "monolithic_val_loss", "ratio", "within_10pct", "tokens_grown",
                  "tokens_monolithic", "stages": [{"depth", "val_loss", "trained", "lower_blocks_unchanged"}],
                  "lower_blocks_unchanged", "same_substrate", "timing",
                  "monolithic": {"model_dir", "label"}}],   # "monolithic" only with grow_baseline demo
        "aggregate": {"grown_val_loss" | "monolithic_val_loss" | "ratio": {"mean", "sd", "ci95", "n"}},
        "within_seeds": int, "verdict": bool},
      "verdicts": {"composition": bool, "composition_val_loss": bool, "refusal": bool, "growth": bool},
      "findings": [str],                   # each sentence computed from the numbers above
      "timing": {"this_call": {part: {"wall_s", "cpu_s"}, "total": ...},   # cpu_s = process CPU time (all threads)
                 "parts": {"composition/seed<k>" | "growth/seed<k>" | "refusal": {"wall_s", "cpu_s"}},
                 "threads": int},                # parts: measured when computed (kept on a resume)
    }

Verdicts (computed, never assumed): *composition* holds when the composed model beats both
experts on the union of the questions in every seed and the lower end of the CI95 of its margin
over the better expert is above 0 (*composition_val_loss*: the same on the validation loss of
both halves); *refusal* when ``compose`` raised for the trainable-table experts; *growth*
when the grown model's validation loss is at most 1.10 x the monolithic one in every seed and the
upper end of the CI95 of the ratio is at most 1.10.

Every part runs in its own process when ``jobs`` > 1 (:mod:`substrate_lm.experiments.parallel`),
with the same numbers. Settings (:class:`~.settings.DockingSettings`: sections ``docking``,
``model``, ``train``): ``mode="full"`` (five seeds of 4-block experts on 1,200 steps of 8 x 128
tokens, about 15 CPU-minutes with its own growth baseline; half of that in wall time with ``jobs=2``; see
``benchmarks/2026-12-07-demo-schedule.md``), ``"quick"`` (a smoke run; too short for the effects) and
``"long"`` (longer training; for ``demo --long``); ``overrides`` change any key
(``{"docking.grow_steps": 400}``), and a bad key or value is a one-line :class:`SubstrateError`.
Inside the demo every key is ``--docking.KEY VALUE`` (``demo --help-config`` lists them). A rerun in
the same ``out_dir`` with other settings is refused.
"""


from .composition import composition_row, expert_run_config, refusal_reason, run_composition, run_refusal, train_expert
from .experiment import run_docking_experiment
from .growth import GrowthBase, growth_config, growth_plan, growth_row, run_growth_seed
from .halves import (COMPACT_LAYOUT, LANGS, SPLITS, entity_halves, load_union_questions, prepare_docking_data,
                     question_half)
from .settings import ENGINE, DockingSection, DockingSettings, expert_sections

__all__ = [
    "COMPACT_LAYOUT", "ENGINE", "LANGS", "SPLITS", "DockingSection", "DockingSettings", "GrowthBase",
    "composition_row", "entity_halves", "expert_run_config", "expert_sections", "growth_config", "growth_plan",
    "growth_row", "load_union_questions",
    "prepare_docking_data", "question_half", "refusal_reason", "run_composition", "run_docking_experiment",
    "run_growth_seed", "run_refusal", "train_expert",
]
